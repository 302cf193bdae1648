//! The `ObjectStore` seam: the few S3 operations fetchfs needs, in plain types. The store knows
//! nothing of caching or FUSE; `s3` implements it with aws-sdk-s3.

pub mod counted;
pub mod memory;
pub mod s3;

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;

use crate::object_id::ETag;

/// What a listing or a HEAD says about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub etag: ETag,
    pub last_modified: SystemTime,
}

/// One page of a delimited listing.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    /// Common prefixes, each ending with the delimiter.
    pub prefixes: Vec<String>,
    /// Token for the next page; `None` on the last one.
    pub next: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("no such key")]
    NotFound,
    #[error("no such bucket")]
    NoSuchBucket,
    /// The object no longer has the ETag the request was pinned to.
    #[error("the object changed (If-Match failed)")]
    PreconditionFailed,
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The bucket lives in another region than the one the client uses.
    #[error("the bucket is in region {0}")]
    WrongRegion(String),
    #[error("cannot reach the endpoint: {0}")]
    Unreachable(String),
    /// An object longer than the caller takes; its body was not read.
    #[error("the object is {0} bytes, longer than expected")]
    TooLong(u64),
    #[error("{0}")]
    Other(String),
}

/// Whether a write may replace an object already at its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replace {
    /// Only if the key is free (`If-None-Match: *`): an object another client created meanwhile
    /// makes the write fail with `PreconditionFailed`, never lost silently.
    Never,
    /// Only the object with this ETag (`If-Match`), the one this mount wrote there.
    IfMatch(ETag),
    Allowed,
}

/// A multipart upload in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadId(pub String);

/// A part uploaded: its number (from 1) and the ETag the server gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedPart {
    pub number: u32,
    pub etag: String,
}

pub trait ObjectStore: Send + Sync + 'static {
    /// One page of keys under `prefix`, grouped at `/`.
    fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
        max_keys: Option<i32>,
    ) -> impl Future<Output = Result<ListPage, StoreError>> + Send;

    fn head(&self, key: &str) -> impl Future<Output = Result<ObjectMeta, StoreError>> + Send;

    /// The bytes of `range` (clamped to the object's end by the server), only if the object
    /// still has `etag`, as a stream of chunks in the order they arrive from the network.
    fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        etag: &ETag,
    ) -> impl Future<Output = Result<BodyStream, StoreError>> + Send;

    /// The whole object at `key`, whatever its version (for objects fetchfs itself keeps, such as
    /// the shared cache's, whose contents are checked on their own). An object longer than
    /// `longest` bytes is `TooLong`, refused by the length its response announces, before its
    /// body is read: whoever may write those objects must not be able to fill the node's memory.
    fn get_whole(&self, key: &str, longest: u64) -> impl Future<Output = Result<Bytes, StoreError>> + Send;

    // Writes: new objects in one PUT or as a multipart upload, and deletes.

    fn put_object(
        &self,
        key: &str,
        body: Bytes,
        replace: Replace,
    ) -> impl Future<Output = Result<ETag, StoreError>> + Send;

    fn create_upload(&self, key: &str) -> impl Future<Output = Result<UploadId, StoreError>> + Send;

    /// Uploads part `number` (1 to 10,000); uploading a number again replaces the part.
    fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        body: Bytes,
    ) -> impl Future<Output = Result<UploadedPart, StoreError>> + Send;

    /// Uploads part `number` as a server-side copy of `range` of the object at `from`, only if
    /// it still has `etag` (UploadPartCopy; a part copies at most 5 GiB).
    fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        from: &str,
        etag: &ETag,
        range: Range<u64>,
    ) -> impl Future<Output = Result<UploadedPart, StoreError>> + Send;

    /// Makes the object of the parts, in number order.
    fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: Vec<UploadedPart>,
        replace: Replace,
    ) -> impl Future<Output = Result<ETag, StoreError>> + Send;

    fn abort_upload(&self, key: &str, upload: &UploadId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes the object at `key`; with `only`, only if it still has that ETag (`If-Match`).
    fn delete_object(&self, key: &str, only: Option<&ETag>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Copies the object at `from`, only if it still has `etag`, to `to` on the server (objects
    /// up to 5 GiB); returns the copy's ETag.
    fn copy_object(&self, from: &str, etag: &ETag, to: &str) -> impl Future<Output = Result<ETag, StoreError>> + Send;
}

/// A response body: chunks as they arrive. After an `Err`, the stream has nothing more to give.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;
