//! An in-memory `ObjectStore` with S3's semantics (ETags, If-Match, clamped ranges, delimited and
//! paged listings), counters of the calls made and injectable faults and delays, so the layers
//! above are tested in milliseconds. Tests only; never mounted.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{BodyStream, ListPage, ObjectMeta, ObjectStore, Replace, StoreError, UploadId, UploadedPart};
use crate::object_id::ETag;

/// Size of the chunks a GET body arrives in, like a socket's reads.
const CHUNK: usize = 64 * 1024;
const PAGE: usize = 1000;

struct Object {
    data: Bytes,
    etag: ETag,
    modified: SystemTime,
}

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Object>>,
    versions: AtomicU64,
    gets: AtomicU64,
    heads: AtomicU64,
    lists: AtomicU64,
    bytes_sent: AtomicU64,
    get_delay_us: AtomicU64,
    metadata_delay_us: AtomicU64,
    failing_gets: AtomicU64,
    /// GET bodies still to be cut off, and after how many bytes.
    cut_bodies: AtomicU64,
    cut_after: AtomicU64,
    /// Multipart uploads in progress, by id.
    uploads: Mutex<HashMap<String, PendingUpload>>,
    next_upload: AtomicU64,
    puts: AtomicU64,
    parts: AtomicU64,
    completes: AtomicU64,
    aborts: AtomicU64,
    copies: AtomicU64,
    part_copies: AtomicU64,
    failing_parts: AtomicU64,
    failing_deletes: AtomicU64,
    part_delay_us: AtomicU64,
    put_delay_us: AtomicU64,
}

/// A multipart upload in progress: its key and its parts by number.
type PendingUpload = (String, BTreeMap<u32, Bytes>);

/// Calls made so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub gets: u64,
    pub heads: u64,
    pub lists: u64,
    pub bytes_sent: u64,
    pub puts: u64,
    pub parts: u64,
    pub completes: u64,
    pub aborts: u64,
    pub copies: u64,
    pub part_copies: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Object>> {
        crate::sync::lock(&self.objects)
    }

    /// Stores a new version of `key`; every version gets a distinct ETag.
    pub fn put(&self, key: &str, data: Bytes) -> ETag {
        let version = self.versions.fetch_add(1, Ordering::Relaxed);
        let etag = ETag::new(format!("\"v{version}-{}\"", data.len()));
        let object = Object { data, etag: etag.clone(), modified: SystemTime::now() };
        self.lock().insert(key.to_owned(), object);
        etag
    }

    /// Every object's key and bytes, in key order.
    pub fn objects(&self) -> Vec<(String, Bytes)> {
        self.lock().iter().map(|(key, object)| (key.clone(), object.data.clone())).collect()
    }

    pub fn object_count(&self) -> usize {
        self.lock().len()
    }

    pub fn delete(&self, key: &str) {
        self.lock().remove(key);
    }

    pub fn counts(&self) -> CallCounts {
        CallCounts {
            gets: self.gets.load(Ordering::Relaxed),
            heads: self.heads.load(Ordering::Relaxed),
            lists: self.lists.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            puts: self.puts.load(Ordering::Relaxed),
            parts: self.parts.load(Ordering::Relaxed),
            completes: self.completes.load(Ordering::Relaxed),
            aborts: self.aborts.load(Ordering::Relaxed),
            copies: self.copies.load(Ordering::Relaxed),
            part_copies: self.part_copies.load(Ordering::Relaxed),
        }
    }

    /// Keeps `body` as part `number` of `upload`.
    fn store_part(&self, key: &str, upload: &UploadId, number: u32, body: Bytes) -> Result<UploadedPart, StoreError> {
        if !(1..=10_000).contains(&number) {
            return Err(StoreError::Other(format!("part number {number} out of range")));
        }
        let mut uploads = self.lock_uploads();
        let (upload_key, parts) = uploads.get_mut(&upload.0).ok_or(StoreError::Other("no such upload".into()))?;
        if upload_key != key {
            return Err(StoreError::Other("the upload is of another key".into()));
        }
        let etag = format!("\"part-{number}-{}\"", body.len());
        parts.insert(number, body);
        Ok(UploadedPart { number, etag })
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn uploads_in_progress(&self) -> usize {
        self.lock_uploads().len()
    }

    /// Each part upload waits this long before answering.
    pub fn set_part_delay(&self, delay: Duration) {
        self.part_delay_us.store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Each PUT waits this long before answering.
    pub fn set_put_delay(&self, delay: Duration) {
        self.put_delay_us.store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// The next `n` part uploads fail with a server error.
    pub fn fail_next_parts(&self, n: u64) {
        self.failing_parts.store(n, Ordering::Relaxed);
    }

    fn lock_uploads(&self) -> MutexGuard<'_, HashMap<String, PendingUpload>> {
        crate::sync::lock(&self.uploads)
    }

    /// Stores `data` at `key` unless `replace` forbids replacing what is there.
    fn store(&self, key: &str, data: Bytes, replace: Replace) -> Result<ETag, StoreError> {
        let version = self.versions.fetch_add(1, Ordering::Relaxed);
        let etag = ETag::new(format!("\"v{version}-{}\"", data.len()));
        let mut objects = self.lock();
        let allowed = match &replace {
            Replace::Never => !objects.contains_key(key),
            Replace::IfMatch(expected) => objects.get(key).is_some_and(|o| o.etag == *expected),
            Replace::Allowed => true,
        };
        if !allowed {
            return Err(StoreError::PreconditionFailed);
        }
        objects.insert(key.to_owned(), Object { data, etag: etag.clone(), modified: SystemTime::now() });
        Ok(etag)
    }

    /// Each GET waits this long before answering.
    pub fn set_get_delay(&self, delay: Duration) {
        self.get_delay_us.store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Each HEAD and LIST waits this long before answering.
    pub fn set_metadata_delay(&self, delay: Duration) {
        self.metadata_delay_us.store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    async fn metadata_delay(&self) {
        let delay = self.metadata_delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
    }

    /// The next `n` deletes fail with a server error.
    pub fn fail_next_deletes(&self, n: u64) {
        self.failing_deletes.store(n, Ordering::Relaxed);
    }

    /// The next `n` GETs fail with a server error.
    pub fn fail_next_gets(&self, n: u64) {
        self.failing_gets.store(n, Ordering::Relaxed);
    }

    /// The next `n` GET bodies end with an error after `after` bytes, as a reset connection does.
    pub fn cut_next_bodies(&self, n: u64, after: u64) {
        self.cut_after.store(after, Ordering::Relaxed);
        self.cut_bodies.store(n, Ordering::Relaxed);
    }

    fn meta(key: &str, o: &Object) -> ObjectMeta {
        ObjectMeta { key: key.to_owned(), size: o.data.len() as u64, etag: o.etag.clone(), last_modified: o.modified }
    }
}

impl ObjectStore for MemoryStore {
    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
        max_keys: Option<i32>,
    ) -> Result<ListPage, StoreError> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.metadata_delay().await;
        let limit = max_keys.map_or(PAGE, |m| (m.max(0) as usize).min(PAGE));
        let objects = self.lock();
        let mut page = ListPage::default();
        let mut last = None;
        for (key, object) in objects.range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            let rest = &key[prefix.len()..];
            let common = rest.find('/').map(|i| key[..prefix.len() + i + 1].to_owned());
            let entry = common.clone().unwrap_or_else(|| key.clone());
            if token.as_deref().is_some_and(|t| entry.as_str() <= t) || last.as_deref() == Some(entry.as_str()) {
                continue;
            }
            if page.objects.len() + page.prefixes.len() == limit {
                page.next = last.clone();
                break;
            }
            match common {
                Some(common) => page.prefixes.push(common),
                None => page.objects.push(Self::meta(key, object)),
            }
            last = Some(entry);
        }
        Ok(page)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.heads.fetch_add(1, Ordering::Relaxed);
        self.metadata_delay().await;
        self.lock().get(key).map(|o| Self::meta(key, o)).ok_or(StoreError::NotFound)
    }

    async fn get_range(&self, key: &str, range: Range<u64>, etag: &ETag) -> Result<BodyStream, StoreError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        let delay = self.get_delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        let failing = self.failing_gets.load(Ordering::Relaxed);
        if failing > 0 {
            self.failing_gets.store(failing - 1, Ordering::Relaxed);
            return Err(StoreError::Other("injected server error".into()));
        }
        let data = {
            let objects = self.lock();
            let object = objects.get(key).ok_or(StoreError::NotFound)?;
            if object.etag != *etag {
                return Err(StoreError::PreconditionFailed);
            }
            let len = object.data.len() as u64;
            if range.start >= len && !range.is_empty() {
                return Err(StoreError::Other("416 range not satisfiable".into()));
            }
            object.data.slice(range.start.min(len) as usize..range.end.min(len) as usize)
        };
        let cut = self.cut_bodies.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
        let data =
            if cut { data.slice(..(self.cut_after.load(Ordering::Relaxed) as usize).min(data.len())) } else { data };
        self.bytes_sent.fetch_add(data.len() as u64, Ordering::Relaxed);
        let mut chunks: Vec<Result<Bytes, StoreError>> =
            (0..data.len()).step_by(CHUNK).map(|i| Ok(data.slice(i..(i + CHUNK).min(data.len())))).collect();
        if cut {
            chunks.push(Err(StoreError::Other("injected connection reset".into())));
        }
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn put_object(&self, key: &str, body: Bytes, replace: Replace) -> Result<ETag, StoreError> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        let delay = self.put_delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        self.store(key, body, replace)
    }

    async fn create_upload(&self, key: &str) -> Result<UploadId, StoreError> {
        let id = format!("upload-{}", self.next_upload.fetch_add(1, Ordering::Relaxed));
        self.lock_uploads().insert(id.clone(), (key.to_owned(), BTreeMap::new()));
        Ok(UploadId(id))
    }

    async fn get_whole(&self, key: &str, longest: u64) -> Result<Bytes, StoreError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        let data = self.lock().get(key).map(|o| o.data.clone()).ok_or(StoreError::NotFound)?;
        if data.len() as u64 > longest {
            return Err(StoreError::TooLong(data.len() as u64));
        }
        Ok(data)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        body: Bytes,
    ) -> Result<UploadedPart, StoreError> {
        self.parts.fetch_add(1, Ordering::Relaxed);
        let delay = self.part_delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        if self.failing_parts.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
            return Err(StoreError::Other("injected server error".into()));
        }
        self.store_part(key, upload, number, body)
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
        let body = match self.lock().get(from) {
            Some(object) if object.etag == *etag => {
                let len = object.data.len() as u64;
                if range.start >= range.end || range.end > len {
                    return Err(StoreError::Other(format!("range {range:?} is not within the {len} bytes of {from}")));
                }
                object.data.slice(range.start as usize..range.end as usize)
            }
            Some(_) => return Err(StoreError::PreconditionFailed),
            None => return Err(StoreError::NotFound),
        };
        self.part_copies.fetch_add(1, Ordering::Relaxed);
        self.store_part(key, upload, number, body)
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: Vec<UploadedPart>,
        replace: Replace,
    ) -> Result<ETag, StoreError> {
        self.completes.fetch_add(1, Ordering::Relaxed);
        let (_, stored) = self.lock_uploads().remove(&upload.0).ok_or(StoreError::Other("no such upload".into()))?;
        let mut data = bytes::BytesMut::new();
        let mut previous = 0;
        for part in &parts {
            let body = stored.get(&part.number).ok_or(StoreError::Other(format!("part {} missing", part.number)))?;
            if part.number <= previous || part.etag != format!("\"part-{}-{}\"", part.number, body.len()) {
                return Err(StoreError::Other(format!("part {} is out of order or not the one uploaded", part.number)));
            }
            previous = part.number;
            data.extend_from_slice(body);
        }
        self.store(key, data.freeze(), replace)
    }

    async fn abort_upload(&self, _key: &str, upload: &UploadId) -> Result<(), StoreError> {
        self.aborts.fetch_add(1, Ordering::Relaxed);
        self.lock_uploads().remove(&upload.0);
        Ok(())
    }

    async fn copy_object(&self, from: &str, etag: &ETag, to: &str) -> Result<ETag, StoreError> {
        let data = match self.lock().get(from) {
            Some(object) if object.etag == *etag => object.data.clone(),
            Some(_) => return Err(StoreError::PreconditionFailed),
            None => return Err(StoreError::NotFound),
        };
        self.copies.fetch_add(1, Ordering::Relaxed);
        self.store(to, data, Replace::Allowed)
    }

    async fn delete_object(&self, key: &str, only: Option<&ETag>) -> Result<(), StoreError> {
        if self.failing_deletes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
            return Err(StoreError::Other("injected delete failure".into()));
        }
        let mut objects = self.lock();
        if let Some(expected) = only
            && objects.get(key).is_none_or(|o| o.etag != *expected)
        {
            return Err(StoreError::PreconditionFailed);
        }
        objects.remove(key);
        Ok(())
    }
}
