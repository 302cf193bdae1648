//! Any `ObjectStore`, with its requests (by operation and outcome) and body bytes counted.

use std::ops::Range;
use std::sync::Arc;

use futures::StreamExt;

use bytes::Bytes;

use super::{BodyStream, ListPage, ObjectMeta, ObjectStore, Replace, StoreError, UploadId, UploadedPart};
use crate::metrics::Metrics;
use crate::object_id::ETag;

pub struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

fn status<T>(result: &Result<T, StoreError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(StoreError::NotFound) => "not_found",
        Err(StoreError::NoSuchBucket) => "no_such_bucket",
        Err(StoreError::PreconditionFailed) => "precondition_failed",
        Err(StoreError::AccessDenied(_)) => "access_denied",
        Err(StoreError::WrongRegion(_)) => "wrong_region",
        Err(StoreError::Unreachable(_)) => "unreachable",
        Err(StoreError::TooLong(_)) => "too_long",
        Err(StoreError::Other(_)) => "error",
    }
}

impl<S: ObjectStore> ObjectStore for Counted<S> {
    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
        max_keys: Option<i32>,
    ) -> Result<ListPage, StoreError> {
        let result = self.inner.list_page(prefix, token, max_keys).await;
        self.metrics.request("list", status(&result));
        result
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let result = self.inner.head(key).await;
        self.metrics.request("head", status(&result));
        result
    }

    async fn get_range(&self, key: &str, range: Range<u64>, etag: &ETag) -> Result<BodyStream, StoreError> {
        tracing::trace!(key, ?range, "GET");
        let result = self.inner.get_range(key, range, etag).await;
        self.metrics.request("get", status(&result));
        let metrics = Arc::clone(&self.metrics);
        let body = result?.inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                metrics.bytes_fetched.inc_by(bytes.len() as u64);
            }
        });
        Ok(Box::pin(body))
    }

    async fn put_object(&self, key: &str, body: Bytes, replace: Replace) -> Result<ETag, StoreError> {
        let len = body.len() as u64;
        let result = self.inner.put_object(key, body, replace).await;
        self.metrics.request("put", status(&result));
        if result.is_ok() {
            self.metrics.uploaded_bytes.inc_by(len);
        }
        result
    }

    async fn create_upload(&self, key: &str) -> Result<UploadId, StoreError> {
        let result = self.inner.create_upload(key).await;
        self.metrics.request("create_upload", status(&result));
        result
    }

    async fn get_whole(&self, key: &str, longest: u64) -> Result<Bytes, StoreError> {
        let result = self.inner.get_whole(key, longest).await;
        self.metrics.request("get", status(&result));
        result
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        body: Bytes,
    ) -> Result<UploadedPart, StoreError> {
        let len = body.len() as u64;
        let result = self.inner.upload_part(key, upload, number, body).await;
        self.metrics.request("upload_part", status(&result));
        if result.is_ok() {
            self.metrics.uploaded_bytes.inc_by(len);
        }
        result
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: Vec<UploadedPart>,
        replace: Replace,
    ) -> Result<ETag, StoreError> {
        let result = self.inner.complete_upload(key, upload, parts, replace).await;
        self.metrics.request("complete_upload", status(&result));
        result
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<(), StoreError> {
        let result = self.inner.abort_upload(key, upload).await;
        self.metrics.request("abort_upload", status(&result));
        result
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        from: &str,
        etag: &ETag,
        range: Range<u64>,
    ) -> Result<UploadedPart, StoreError> {
        let result = self.inner.upload_part_copy(key, upload, number, from, etag, range).await;
        self.metrics.request("upload_part_copy", status(&result));
        result
    }

    async fn copy_object(&self, from: &str, etag: &ETag, to: &str) -> Result<ETag, StoreError> {
        let result = self.inner.copy_object(from, etag, to).await;
        self.metrics.request("copy", status(&result));
        result
    }

    async fn delete_object(&self, key: &str, only: Option<&ETag>) -> Result<(), StoreError> {
        let result = self.inner.delete_object(key, only).await;
        self.metrics.request("delete", status(&result));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn requests_and_body_bytes_are_counted() {
        let memory = MemoryStore::new();
        let etag = memory.put("k", Bytes::from_static(b"0123456789"));
        let metrics = Arc::new(Metrics::default());
        let store = Counted::new(memory, Arc::clone(&metrics));
        let mut body = store.get_range("k", 2..6, &etag).await.unwrap();
        while body.next().await.is_some() {}
        assert_eq!(store.head("absent").await, Err(StoreError::NotFound));
        store.list_page("", None, None).await.unwrap();
        let text = metrics.render();
        for line in [
            "fetchfs_fetched_bytes_total 4",
            "fetchfs_requests_total{op=\"get\",status=\"ok\"} 1",
            "fetchfs_requests_total{op=\"head\",status=\"not_found\"} 1",
            "fetchfs_requests_total{op=\"list\",status=\"ok\"} 1",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
