//! The write path: a file written sequentially from offset 0 becomes one object. Its bytes are cut
//! into parts that go up in parallel while the writer goes on (a streaming multipart upload), in
//! memory taken from the mount's budget: a writer waits for room, never fails for it. `finish`
//! completes the upload and reports how it went; a failure aborts it, so no partial object ever
//! appears. A file smaller than one part goes up in one PUT. Knows nothing of FUSE, and nothing of
//! the read path or its caches.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::metrics::{Metrics, UploadLabels};
use crate::object_id::ETag;
use crate::store::{ObjectStore, Replace, StoreError, UploadId, UploadedPart};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// S3's limit on the parts of one upload.
pub const MAX_PARTS: u32 = 10_000;
/// Parts double in size every this many, so that large objects fit in MAX_PARTS.
const PARTS_PER_SIZE: u32 = 1000;

#[derive(Clone, Copy, Debug)]
pub struct UploadConfig {
    /// Size of the first parts; files up to it go up in one PUT.
    pub first_part_size: u64,
    /// Most parts of one file in flight at once.
    pub concurrency: usize,
    /// Memory for parts being filled or sent, for the whole mount.
    pub budget: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self { first_part_size: 8 * MIB, concurrency: 8, budget: 128 * MIB }
    }
}

impl UploadConfig {
    /// The largest part: two must fit in the budget, one being filled and one being sent.
    fn largest_part(&self) -> u64 {
        (self.budget / 2).max(self.first_part_size)
    }

    /// Size of part `number` (from 1): the first size, doubled every PARTS_PER_SIZE parts, up to
    /// the largest part.
    pub fn part_size(&self, number: u32) -> u64 {
        let doublings = (number.saturating_sub(1) / PARTS_PER_SIZE).min(32);
        self.first_part_size.saturating_mul(1 << doublings).min(self.largest_part())
    }

    /// The largest object a file may become: MAX_PARTS parts of the sizes above.
    pub fn largest_object(&self) -> u64 {
        (1..=MAX_PARTS / PARTS_PER_SIZE)
            .map(|step| self.part_size((step - 1) * PARTS_PER_SIZE + 1) * u64::from(PARTS_PER_SIZE))
            .sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("a write at {offset} is not at the end of what was written ({end}): files are written once, front to back")]
    NotAtEnd { offset: u64, end: u64 },
    #[error("the file would pass {limit} bytes, the largest object this mount can write (see --upload-part-size)")]
    TooLarge { limit: u64 },
    #[error("the upload is finished: nothing more can be written to this file")]
    Finished,
    #[error("the upload failed: {0}")]
    Failed(StoreError),
}

/// What every upload of a mount shares: the store, the settings, and the memory for parts.
pub struct Uploader<S> {
    store: Arc<S>,
    config: UploadConfig,
    /// The budget in KiB permits (a permit count is a u32; parts may pass 4 GiB).
    memory: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl<S: ObjectStore> Uploader<S> {
    pub fn new(store: Arc<S>, config: UploadConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let memory = Arc::new(Semaphore::new((config.budget / KIB).min(Semaphore::MAX_PERMITS as u64) as usize));
        Arc::new(Self { store, config, memory, metrics })
    }

    pub fn config(&self) -> &UploadConfig {
        &self.config
    }

    /// Starts writing the object at `key`.
    pub fn start(self: &Arc<Self>, key: String, replace: Replace) -> Upload<S> {
        Upload {
            uploader: Arc::clone(self),
            key,
            replace,
            written: 0,
            part: None,
            next_number: 1,
            multipart: None,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            failed: None,
            finished: false,
            committed_empty: false,
        }
    }
}

/// A part being filled, and the memory it holds.
struct Part {
    bytes: BytesMut,
    limit: u64,
    permit: OwnedSemaphorePermit,
}

/// One file being written.
pub struct Upload<S> {
    uploader: Arc<Uploader<S>>,
    key: String,
    replace: Replace,
    written: u64,
    part: Option<Part>,
    next_number: u32,
    multipart: Option<UploadId>,
    in_flight: JoinSet<Result<UploadedPart, StoreError>>,
    done: Vec<UploadedPart>,
    failed: Option<StoreError>,
    finished: bool,
    /// Finished with nothing written: the empty object is in S3, and a write at offset 0 starts
    /// the file again (the `close` of a descriptor before anything was written, as `touch` and a
    /// shell's redirection do, makes the empty file visible at once).
    committed_empty: bool,
}

impl<S: ObjectStore> Upload<S> {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `data`, which must start where the file ends. Waits while the mount's memory for
    /// parts is full or this file has its most parts in flight.
    pub async fn write(&mut self, offset: u64, mut data: &[u8]) -> Result<(), WriteError> {
        if self.committed_empty && offset == 0 && !data.is_empty() {
            // The empty object this upload made is replaced by the file's bytes.
            self.committed_empty = false;
            self.finished = false;
            self.replace = Replace::Allowed;
        }
        if self.finished {
            return Err(WriteError::Finished);
        }
        if offset != self.written {
            return Err(WriteError::NotAtEnd { offset, end: self.written });
        }
        let limit = self.uploader.config.largest_object();
        if self.written + data.len() as u64 > limit {
            return Err(WriteError::TooLarge { limit });
        }
        self.collect_finished_parts();
        if let Some(e) = &self.failed {
            return Err(WriteError::Failed(e.clone()));
        }
        while !data.is_empty() {
            let part = match &mut self.part {
                Some(part) => part,
                None => {
                    let limit = self.uploader.config.part_size(self.next_number);
                    let memory = Arc::clone(&self.uploader.memory);
                    let kib = limit.div_ceil(KIB).min(u64::from(u32::MAX)) as u32;
                    let permit = memory.acquire_many_owned(kib).await.map_err(|_| WriteError::Finished)?;
                    self.part.insert(Part { bytes: BytesMut::with_capacity(limit as usize), limit, permit })
                }
            };
            let take = data.len().min((part.limit - part.bytes.len() as u64) as usize);
            part.bytes.extend_from_slice(&data[..take]);
            data = &data[take..];
            self.written += take as u64;
            if part.bytes.len() as u64 == part.limit {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    /// Notes the parts that have gone up, and the first failure.
    fn collect_finished_parts(&mut self) {
        while let Some(joined) = self.in_flight.try_join_next() {
            self.note(joined);
        }
    }

    fn note(&mut self, joined: Result<Result<UploadedPart, StoreError>, tokio::task::JoinError>) {
        match joined {
            Ok(Ok(part)) => self.done.push(part),
            Ok(Err(e)) => {
                self.failed.get_or_insert(e);
            }
            Err(e) => {
                self.failed.get_or_insert(StoreError::Other(format!("a part upload stopped: {e}")));
            }
        }
    }

    /// Sends the part being filled, starting the multipart upload first if needed.
    async fn send_part(&mut self) -> Result<(), WriteError> {
        let Some(part) = self.part.take() else { return Ok(()) };
        let store = Arc::clone(&self.uploader.store);
        let upload = match &self.multipart {
            Some(upload) => upload.clone(),
            None => {
                let upload = store.create_upload(&self.key).await.map_err(|e| self.fail(e))?;
                self.multipart.insert(upload).clone()
            }
        };
        while self.in_flight.len() >= self.uploader.config.concurrency.max(1) {
            if let Some(joined) = self.in_flight.join_next().await {
                self.note(joined);
            }
        }
        if let Some(e) = &self.failed {
            return Err(WriteError::Failed(e.clone()));
        }
        let (key, number) = (self.key.clone(), self.next_number);
        self.next_number += 1;
        let Part { bytes, permit, .. } = part;
        self.in_flight.spawn(async move {
            let _memory = permit;
            store.upload_part(&key, &upload, number, bytes.freeze()).await
        });
        Ok(())
    }

    fn fail(&mut self, e: StoreError) -> WriteError {
        self.failed.get_or_insert(e.clone());
        WriteError::Failed(e)
    }

    /// Completes the object: the last part and the parts in flight go up, then the upload is
    /// completed (or the whole file is PUT, if it never reached a part's size). On any failure the
    /// upload is aborted and the error returned. Nothing can be written afterwards, except into a
    /// file finished empty, which starts again at offset 0.
    pub async fn finish(&mut self) -> Result<ETag, WriteError> {
        if self.finished {
            return Err(WriteError::Finished);
        }
        self.finished = true;
        let outcome = self.complete().await;
        self.committed_empty = outcome.is_ok() && self.written == 0;
        let label = if outcome.is_ok() { "completed" } else { "aborted" };
        self.uploader.metrics.uploads.get_or_create(&UploadLabels { outcome: label }).inc();
        outcome
    }

    async fn complete(&mut self) -> Result<ETag, WriteError> {
        let store = Arc::clone(&self.uploader.store);
        if self.multipart.is_none() && self.failed.is_none() {
            let body = self.part.take().map_or_else(Bytes::new, |p| p.bytes.freeze());
            return store.put_object(&self.key, body, self.replace).await.map_err(WriteError::Failed);
        }
        if self.part.as_ref().is_some_and(|p| !p.bytes.is_empty())
            && let Err(e) = self.send_part().await
        {
            return Err(self.abort(e).await);
        }
        while let Some(joined) = self.in_flight.join_next().await {
            self.note(joined);
        }
        if let Some(e) = self.failed.clone() {
            return Err(self.abort(WriteError::Failed(e)).await);
        }
        let Some(upload) = self.multipart.clone() else { return Err(WriteError::Finished) };
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.number);
        match store.complete_upload(&self.key, &upload, parts, self.replace).await {
            Ok(etag) => Ok(etag),
            Err(e) => Err(self.abort(WriteError::Failed(e)).await),
        }
    }

    /// Aborts the multipart upload (if one was started), so its parts do not linger and no object
    /// appears; returns `error`.
    async fn abort(&mut self, error: WriteError) -> WriteError {
        self.in_flight.abort_all();
        if let Some(upload) = self.multipart.take()
            && let Err(e) = self.uploader.store.abort_upload(&self.key, &upload).await
        {
            tracing::warn!(key = %self.key, "aborting the upload failed (the bucket's lifecycle rules must clean it up): {e}");
        }
        error
    }

    /// Gives up on the file without completing it.
    pub async fn cancel(&mut self) {
        if !self.finished {
            self.finished = true;
            self.uploader.metrics.uploads.get_or_create(&UploadLabels { outcome: "aborted" }).inc();
            self.abort(WriteError::Finished).await;
        }
    }
}

#[cfg(test)]
mod tests;
