//! The S3 operations of the test server, on top of `Storage`, with S3's documented semantics for
//! ranges, conditional requests, listings and multipart uploads. s3s does the HTTP, XML and SigV4.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::{Stream, TryStreamExt};
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::stream::{ByteStream, RemainingLength};
use s3s::{S3, S3Error, S3Request, S3Response, S3Result, s3_error};

use super::knobs::{BodyFault, Knobs};
use super::storage::{Storage, StorageError, StoredObject, multipart_etag};

/// Largest body chunk handed to hyper at once; small enough for the bandwidth cap and the
/// reset-after-N fault to act at a fine grain, large enough to keep copies cheap.
const BODY_CHUNK: usize = 256 * 1024;
const DEFAULT_MAX_KEYS: usize = 1000;
/// How long a body stays open after its last byte before an injected reset.
const RESET_FLUSH_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

pub struct TestS3 {
    storage: Arc<Storage>,
    knobs: Arc<Knobs>,
    uploads: Mutex<HashMap<String, Upload>>,
    /// Uploads completed, by id, and the ETag they made: a complete sent again (a client retrying
    /// after its answer was lost) gets the same answer, as from S3.
    completed: Mutex<HashMap<String, (String, String, ETag)>>,
}

struct Upload {
    bucket: String,
    key: String,
    content_type: Option<String>,
    /// Each part's bytes and MD5 (computed as it arrives, so completing is quick).
    parts: HashMap<i32, (Bytes, [u8; 16])>,
}

impl TestS3 {
    pub fn new(storage: Arc<Storage>, knobs: Arc<Knobs>) -> Self {
        Self { storage, knobs, uploads: Mutex::new(HashMap::new()), completed: Mutex::new(HashMap::new()) }
    }

    fn count(&self, operation: &'static str) {
        self.knobs.counters().count_request(operation);
    }

    fn uploads(&self) -> MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The object a copy reads, if it still has the ETag `x-amz-copy-source-if-match` names.
    fn copy_source(&self, source: &CopySource, if_match: Option<&ETagCondition>) -> S3Result<StoredObject> {
        let CopySource::Bucket { bucket, key, .. } = source else {
            return Err(s3_error!(NotImplemented, "access point copy sources are not supported"));
        };
        let object = self.object(bucket, key)?;
        if let Some(expected) = if_match
            && !matches!(expected, ETagCondition::Any)
            && expected.as_etag().map(ETag::value) != Some(object.etag.as_str())
        {
            return Err(s3_error!(PreconditionFailed));
        }
        Ok(object)
    }

    fn object(&self, bucket: &str, key: &str) -> S3Result<StoredObject> {
        self.storage.get(bucket, key).map_err(storage_error)?.ok_or_else(|| s3_error!(NoSuchKey))
    }

    /// `If-None-Match: *` on a write: 412 when the key holds an object.
    /// A conditional write (`If-None-Match: *`, `If-Match: <etag>`) refused as S3 refuses it.
    fn check_write_conditions(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> S3Result<()> {
        if if_match.is_none() && if_none_match.is_none() {
            return Ok(());
        }
        let current = self.storage.get(bucket, key).map_err(storage_error)?;
        if matches!(if_none_match, Some(ETagCondition::Any)) && current.is_some() {
            return Err(s3_error!(PreconditionFailed, "an object exists at this key (If-None-Match: *)"));
        }
        if let Some(condition) = if_match {
            let Some(object) = current else { return Err(s3_error!(NoSuchKey)) };
            if !matches!(condition, ETagCondition::Any)
                && condition.as_etag().map(ETag::value) != Some(object.etag.as_str())
            {
                return Err(s3_error!(PreconditionFailed, "the object has another ETag (If-Match)"));
            }
        }
        Ok(())
    }
}

fn storage_error(e: StorageError) -> S3Error {
    match e {
        StorageError::NoSuchBucket => s3_error!(NoSuchBucket),
        StorageError::BucketAlreadyExists => s3_error!(BucketAlreadyOwnedByYou),
        StorageError::BucketNotEmpty => s3_error!(BucketNotEmpty),
        StorageError::Io(e) => S3Error::internal_error(e),
    }
}

/// The whole body, copied chunk by chunk into one buffer of its announced length as it arrives:
/// each chunk is let go before the next is read, so the connection's read buffer is used again
/// instead of a fresh one mapped (and faulted in page by page) for every chunk held.
async fn collect_body(body: Option<StreamingBlob>) -> S3Result<Bytes> {
    let Some(body) = body else { return Ok(Bytes::new()) };
    // S3's largest single PUT: a claim above it is not taken at its word.
    let announced = body.remaining_length().exact().unwrap_or(0).min(5 << 30);
    let buf = body
        .try_fold(BytesMut::with_capacity(announced), |mut buf, chunk| async move {
            buf.extend_from_slice(&chunk);
            Ok(buf)
        })
        .await
        .map_err(|e| s3_error!(IncompleteBody, "request body: {e}"))?;
    Ok(buf.freeze())
}

fn etag_of(object: &StoredObject) -> ETag {
    ETag::Strong(object.etag.clone())
}

/// If-Match and If-None-Match as S3 evaluates them on GET and HEAD: a failed If-Match is 412, a
/// matching If-None-Match is 304; If-Match is checked first.
fn check_conditions(
    object: &StoredObject,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<()> {
    let matches = |c: &ETagCondition| match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(etag) => etag.value() == object.etag,
    };
    if if_match.is_some_and(|c| !matches(c)) {
        return Err(s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold"));
    }
    if if_none_match.is_some_and(matches) {
        return Err(s3_error!(NotModified));
    }
    Ok(())
}

/// The bytes a Range header selects, S3-style: `a-b` clamped to the end, `a-`, `-n`; 416 when
/// unsatisfiable.
fn resolve_range(range: Option<&s3s::dto::Range>, len: u64) -> S3Result<Option<Range<u64>>> {
    match range {
        None => Ok(None),
        Some(r) => {
            r.check(len).map(Some).map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))
        }
    }
}

fn content_range(range: &Range<u64>, len: u64) -> String {
    format!("bytes {}-{}/{}", range.start, range.end - 1, len)
}

/// A GET body that reports its exact length, counts the bytes it sends, and carries out the
/// body faults that were set when the request arrived.
struct ObjectBody {
    data: Bytes,
    sent: u64,
    reset_after: Option<u64>,
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    reset_pause: Option<Pin<Box<tokio::time::Sleep>>>,
    knobs: Arc<Knobs>,
}

#[derive(Debug, thiserror::Error)]
#[error("connection reset by fault injection after {0} body bytes")]
struct InjectedReset(u64);

impl Stream for ObjectBody {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(stall) = self.stall.as_mut() {
            if stall.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.stall = None;
        }
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let mut take = self.data.len().min(BODY_CHUNK);
        if let Some(limit) = self.reset_after {
            let allowed = limit.saturating_sub(self.sent);
            if allowed == 0 {
                // Give hyper a moment to flush the bytes already handed over, then fail the body:
                // an error from the body makes hyper drop the connection mid-response.
                let pause = self.reset_pause.get_or_insert_with(|| Box::pin(tokio::time::sleep(RESET_FLUSH_PAUSE)));
                if pause.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                return Poll::Ready(Some(Err(Box::new(InjectedReset(self.sent)))));
            }
            take = take.min(usize::try_from(allowed).unwrap_or(usize::MAX));
        }
        let chunk = self.data.split_to(take);
        self.sent += take as u64;
        self.knobs.counters().count_body_bytes(take as u64);
        Poll::Ready(Some(Ok(chunk)))
    }
}

impl ByteStream for ObjectBody {
    fn remaining_length(&self) -> RemainingLength {
        RemainingLength::new_exact(self.data.len())
    }
}

#[async_trait::async_trait]
impl S3 for TestS3 {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        self.count("CreateBucket");
        self.storage.create_bucket(&req.input.bucket).map_err(storage_error)?;
        let output = CreateBucketOutput { location: Some(format!("/{}", req.input.bucket)) };
        Ok(S3Response::new(output))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.count("DeleteBucket");
        self.storage.delete_bucket(&req.input.bucket).map_err(storage_error)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.count("HeadBucket");
        if !self.storage.bucket_exists(&req.input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        self.count("ListBuckets");
        let buckets = self
            .storage
            .buckets()
            .into_iter()
            .map(|(name, created)| Bucket {
                name: Some(name),
                creation_date: Some(created.into()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        self.count("PutObject");
        let input = req.input;
        let data = collect_body(input.body).await?;
        self.check_write_conditions(&input.bucket, &input.key, input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let content_type = input.content_type.map(|t| t.to_string());
        let object = if self.knobs.express_etags() {
            StoredObject::with_etag(data, format!("{:032x}", fastrand::u128(..)), content_type)
        } else {
            StoredObject::new(data, content_type)
        };
        let etag = etag_of(&object);
        self.storage.put(&input.bucket, &input.key, object).map_err(storage_error)?;
        Ok(S3Response::new(PutObjectOutput { e_tag: Some(etag), ..Default::default() }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        self.count("CopyObject");
        let input = req.input;
        let source = self.copy_source(&input.copy_source, input.copy_source_if_match.as_ref())?;
        let copy = StoredObject::with_etag(source.data, source.etag, source.content_type);
        let result = CopyObjectResult {
            e_tag: Some(etag_of(&copy)),
            last_modified: Some(copy.last_modified.into()),
            ..Default::default()
        };
        self.storage.put(&input.bucket, &input.key, copy).map_err(storage_error)?;
        Ok(S3Response::new(CopyObjectOutput { copy_object_result: Some(result), ..Default::default() }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.count("CreateMultipartUpload");
        let input = req.input;
        if !self.storage.bucket_exists(&input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        let id = format!("{:032x}", fastrand::u128(..));
        let upload = Upload {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            content_type: input.content_type.map(|t| t.to_string()),
            parts: HashMap::new(),
        };
        self.uploads().insert(id.clone(), upload);
        let output = CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.count("UploadPart");
        let input = req.input;
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "Part number must be an integer between 1 and 10000"));
        }
        let data = collect_body(input.body).await?;
        let md5: [u8; 16] = Md5::digest(&data).into();
        let etag = hex::encode(md5);
        let mut uploads = self.uploads();
        let upload = uploads.get_mut(&input.upload_id).ok_or_else(|| s3_error!(NoSuchUpload))?;
        upload.parts.insert(input.part_number, (data, md5));
        Ok(S3Response::new(UploadPartOutput { e_tag: Some(ETag::Strong(etag)), ..Default::default() }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.count("UploadPartCopy");
        let input = req.input;
        let source = self.copy_source(&input.copy_source, input.copy_source_if_match.as_ref())?;
        let len = source.data.len() as u64;
        let range = match &input.copy_source_range {
            None => 0..len,
            Some(header) => s3s::dto::Range::parse(header).ok().and_then(|r| r.check(len).ok()).ok_or_else(|| {
                s3_error!(InvalidArgument, "The x-amz-copy-source-range value must be within the source")
            })?,
        };
        let data = source.data.slice(range.start as usize..range.end as usize);
        let md5: [u8; 16] = Md5::digest(&data).into();
        let etag = hex::encode(md5);
        let mut uploads = self.uploads();
        let upload = uploads.get_mut(&input.upload_id).ok_or_else(|| s3_error!(NoSuchUpload))?;
        upload.parts.insert(input.part_number, (data, md5));
        let result = CopyPartResult { e_tag: Some(ETag::Strong(etag)), ..Default::default() };
        Ok(S3Response::new(UploadPartCopyOutput { copy_part_result: Some(result), ..Default::default() }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.count("CompleteMultipartUpload");
        let input = req.input;
        let requested = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if requested.is_empty() {
            return Err(s3_error!(MalformedXML, "You must specify at least one part"));
        }
        if let Some((bucket, key, etag)) =
            self.completed.lock().unwrap_or_else(|p| p.into_inner()).get(&input.upload_id)
        {
            let output = CompleteMultipartUploadOutput {
                bucket: Some(bucket.clone()),
                key: Some(key.clone()),
                e_tag: Some(etag.clone()),
                ..Default::default()
            };
            return Ok(S3Response::new(output));
        }
        self.check_write_conditions(&input.bucket, &input.key, input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let upload = self.uploads().remove(&input.upload_id).ok_or_else(|| s3_error!(NoSuchUpload))?;
        let mut body = BytesMut::with_capacity(upload.parts.values().map(|(data, _)| data.len()).sum());
        let mut md5s = Vec::with_capacity(requested.len());
        let mut previous = 0;
        for part in &requested {
            let number = part.part_number.unwrap_or(0);
            if number <= previous {
                return Err(s3_error!(InvalidPartOrder));
            }
            previous = number;
            let (data, md5) = upload.parts.get(&number).ok_or_else(|| s3_error!(InvalidPart))?;
            let md5 = *md5;
            if part.e_tag.as_ref().is_some_and(|e| e.value() != hex::encode(md5)) {
                return Err(s3_error!(InvalidPart, "part {number} has another ETag"));
            }
            md5s.push(md5);
            body.extend_from_slice(data);
        }
        let object = StoredObject::with_etag(body.freeze(), multipart_etag(&md5s), upload.content_type);
        let etag = etag_of(&object);
        self.storage.put(&upload.bucket, &upload.key, object).map_err(storage_error)?;
        self.completed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(input.upload_id.clone(), (upload.bucket.clone(), upload.key.clone(), etag.clone()));
        let output = CompleteMultipartUploadOutput {
            bucket: Some(upload.bucket),
            key: Some(upload.key),
            e_tag: Some(etag),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.count("AbortMultipartUpload");
        self.uploads().remove(&req.input.upload_id).ok_or_else(|| s3_error!(NoSuchUpload))?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.count("HeadObject");
        let input = req.input;
        let object = self.object(&input.bucket, &input.key)?;
        check_conditions(&object, input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let len = object.data.len() as u64;
        let range = resolve_range(input.range.as_ref(), len)?;
        let output = HeadObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: Some(range.as_ref().map_or(len, |r| r.end - r.start) as i64),
            content_range: range.as_ref().map(|r| content_range(r, len)),
            content_type: object.content_type.as_deref().and_then(|t| t.parse().ok()),
            e_tag: Some(etag_of(&object)),
            last_modified: Some(object.last_modified.into()),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        self.count("GetObject");
        let input = req.input;
        let object = self.object(&input.bucket, &input.key)?;
        let if_match = input.if_match.as_ref().filter(|_| !self.knobs.ignores_if_match());
        check_conditions(&object, if_match, input.if_none_match.as_ref())?;
        let len = object.data.len() as u64;
        let range = if self.knobs.ignores_range() { None } else { resolve_range(input.range.as_ref(), len)? };
        let data = match &range {
            Some(r) => object.data.slice(r.start as usize..r.end as usize),
            None => object.data.clone(),
        };
        let fault = self.knobs.body_fault();
        let body = ObjectBody {
            data,
            sent: 0,
            reset_after: match fault {
                Some(BodyFault::ResetAfter(n)) => Some(n),
                _ => None,
            },
            stall: match fault {
                Some(BodyFault::Stall(d)) => Some(Box::pin(tokio::time::sleep(d))),
                _ => None,
            },
            reset_pause: None,
            knobs: Arc::clone(&self.knobs),
        };
        let output = GetObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: Some(range.as_ref().map_or(len, |r| r.end - r.start) as i64),
            content_range: range.as_ref().map(|r| content_range(r, len)),
            content_type: object.content_type.as_deref().and_then(|t| t.parse().ok()),
            e_tag: Some(etag_of(&object)),
            last_modified: Some(object.last_modified.into()),
            body: Some(StreamingBlob::new(body)),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.count("DeleteObject");
        let input = req.input;
        self.check_write_conditions(&input.bucket, &input.key, input.if_match.as_ref(), None)?;
        self.storage.delete(&input.bucket, &input.key).map_err(storage_error)?;
        Ok(S3Response::with_status(DeleteObjectOutput::default(), http::StatusCode::NO_CONTENT))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.count("DeleteObjects");
        let input = req.input;
        let mut deleted = Vec::new();
        for id in input.delete.objects {
            self.storage.delete(&input.bucket, &id.key).map_err(storage_error)?;
            deleted.push(DeletedObject { key: Some(id.key), ..Default::default() });
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let output = DeleteObjectsOutput { deleted: (!quiet).then_some(deleted), ..Default::default() };
        Ok(S3Response::new(output))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.count("ListObjectsV2");
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let max_keys = match input.max_keys {
            Some(n) if n < 0 => return Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
            Some(n) => (n as usize).min(DEFAULT_MAX_KEYS),
            None => DEFAULT_MAX_KEYS,
        };
        // The continuation token is the last key (or common prefix) of the previous page, in hex
        // so that it is opaque and safe in a query string.
        let after = match &input.continuation_token {
            Some(token) => Some(
                hex::decode(token)
                    .ok()
                    .and_then(|k| String::from_utf8(k).ok())
                    .ok_or_else(|| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))?,
            ),
            None => input.start_after.clone().filter(|s| !s.is_empty()),
        };

        let mut contents = Vec::new();
        let mut common_prefixes: Vec<String> = Vec::new();
        let mut last_returned: Option<String> = None;
        let mut truncated = false;
        self.storage
            .scan(&input.bucket, &prefix, after.as_deref(), |key, object| {
                let rest = &key[prefix.len()..];
                let common =
                    delimiter.as_deref().and_then(|d| rest.find(d).map(|i| &key[..prefix.len() + i + d.len()]));
                if let Some(common) = common {
                    if common_prefixes.last().map(String::as_str) == Some(common) {
                        return true;
                    }
                    // A continuation after a common prefix must skip every key under it.
                    if after.as_deref().is_some_and(|a| a.starts_with(common)) {
                        return true;
                    }
                }
                if contents.len() + common_prefixes.len() == max_keys {
                    truncated = true;
                    return false;
                }
                match common {
                    Some(common) => {
                        common_prefixes.push(common.to_owned());
                        last_returned = Some(common.to_owned());
                    }
                    None => {
                        contents.push(Object {
                            key: Some(key.to_owned()),
                            size: Some(object.data.len() as i64),
                            e_tag: Some(etag_of(object)),
                            last_modified: Some(object.last_modified.into()),
                            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                            ..Default::default()
                        });
                        last_returned = Some(key.to_owned());
                    }
                }
                true
            })
            .map_err(storage_error)?;

        let key_count = (contents.len() + common_prefixes.len()) as i32;
        let next_token = if truncated { last_returned.map(|k| hex::encode(k.as_bytes())) } else { None };
        // With `encoding-type=url`, as S3 does, names go out percent-encoded: keys may hold
        // characters XML cannot carry (NUL and other control characters).
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let encode = |name: String| if url { url_encode(&name) } else { name };
        for object in &mut contents {
            object.key = object.key.take().map(encode);
        }
        let common_prefixes: Vec<String> = common_prefixes.into_iter().map(encode).collect();
        let output = ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encode(prefix)),
            delimiter: delimiter.map(encode),
            encoding_type: input.encoding_type,
            max_keys: Some(max_keys as i32),
            key_count: Some(key_count),
            is_truncated: Some(truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: next_token,
            start_after: input.start_after,
            contents: Some(contents),
            common_prefixes: Some(common_prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect()),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}

/// S3's `encoding-type=url` form of a name: every byte but unreserved characters and `/`
/// percent-encoded (a space as `%20`, so a decoder reading `+` as space still gets it right).
fn url_encode(name: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');
    percent_encoding::utf8_percent_encode(name, KEEP).to_string()
}
