//! The write path: a file written sequentially from offset 0 becomes one object. Its bytes are cut
//! into parts that go up in parallel while the writer goes on (a streaming multipart upload), in
//! memory taken from the mount's budget: a writer waits for room, never fails for it. `finish`
//! completes the upload and reports how it went; a failure aborts it, so no partial object ever
//! appears. A file smaller than one part goes up in one PUT. Knows nothing of FUSE, and nothing of
//! the read path or its caches.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::in_flight::InFlight;
use crate::metrics::{Metrics, UploadLabels};
use crate::object_id::ETag;
use crate::store::{ObjectStore, Replace, StoreError, UploadId, UploadedPart};

mod copy;
pub mod dangling;
pub mod lifecycle;
mod part;

pub use copy::Source;
use copy::{SMALLEST_PART, part_ranges};
use dangling::Journal;
use lifecycle::{Lifecycle, Stage};
use part::Part;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// S3's limit on the parts of one upload.
pub const MAX_PARTS: u32 = 10_000;
/// Parts double in size every this many, so that large objects fit in MAX_PARTS.
const PARTS_PER_SIZE: u32 = 1000;
/// A part in memory reserves the budget in steps of this many KiB as its bytes arrive.
const RESERVE_STEP_KIB: u32 = 1024;
/// How long a writer waits for parts on their way up to give memory back before it spills its
/// part to disk instead.
const SPILL_AFTER: Duration = Duration::from_secs(1);
/// Spilled parts read back into memory beyond the budget, at most this many at once mount-wide
/// (they go there only when the budget is taken by parts being filled).
const SPILLED_SENDS_OVER_BUDGET: usize = 2;

#[derive(Clone, Debug)]
pub struct UploadConfig {
    /// Size of the first parts; files up to it go up in one PUT.
    pub first_part_size: u64,
    /// Most parts of one file in flight at once.
    pub concurrency: usize,
    /// Memory for parts being filled or sent, for the whole mount.
    pub budget: u64,
    /// Where parts go when the budget is taken.
    pub spill_dir: PathBuf,
    /// Longest one request of an upload may take (a part, a small file's PUT, the completion).
    pub deadline: Duration,
    /// Objects up to this size are copied in one request; larger ones in parts (S3 copies at
    /// most 5 GiB at once).
    pub largest_single_copy: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            first_part_size: 8 * MIB,
            concurrency: 8,
            budget: 128 * MIB,
            spill_dir: std::env::temp_dir(),
            deadline: Duration::from_secs(30),
            largest_single_copy: 5 * 1024 * MIB,
        }
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
    /// The object appended to was changed by another client after it was opened.
    #[error("the object changed in S3 since it was opened for appending; it was left as the other client wrote it")]
    Changed,
    #[error("{what} took longer than {secs} s (--write-timeout)")]
    TimedOut { what: &'static str, secs: u64 },
    /// The budget was taken and the part could not go to disk either.
    #[error("keeping a part on disk failed: {0}")]
    Spill(String),
}

/// What every upload of a mount shares: the store, the settings, and the memory for parts.
pub struct Uploader<S> {
    store: Arc<S>,
    config: UploadConfig,
    /// The budget in KiB permits (a permit count is a u32; parts may pass 4 GiB).
    memory: Arc<Semaphore>,
    /// Parts on their way up, mount-wide: what gives memory back.
    sending: InFlight,
    /// Room for spilled parts read back when the budget is taken.
    over_budget: Arc<Semaphore>,
    /// Where the multipart uploads started here are noted until they end.
    journal: Option<Arc<Journal>>,
    metrics: Arc<Metrics>,
}

impl<S: ObjectStore> Uploader<S> {
    pub fn new(store: Arc<S>, config: UploadConfig, metrics: Arc<Metrics>, journal: Option<Arc<Journal>>) -> Arc<Self> {
        let memory = Arc::new(Semaphore::new((config.budget / KIB).min(Semaphore::MAX_PERMITS as u64) as usize));
        Arc::new(Self {
            store,
            config,
            memory,
            sending: InFlight::default(),
            over_budget: Arc::new(Semaphore::new(SPILLED_SENDS_OVER_BUDGET)),
            journal,
            metrics,
        })
    }

    /// Starts writing the object at `key`.
    pub fn start(self: &Arc<Self>, key: String, replace: Replace) -> Upload<S> {
        self.upload(key, replace, None)
    }

    /// Starts appending to the object `base`: its bytes come first, then what is written, and the
    /// object is replaced only if it is still `base` at the end. Nothing is sent until the
    /// first write.
    pub fn start_appending(self: &Arc<Self>, base: Source) -> Upload<S> {
        self.upload(base.key.clone(), Replace::IfMatch(base.etag.clone()), Some(base))
    }

    fn upload(self: &Arc<Self>, key: String, replace: Replace, base: Option<Source>) -> Upload<S> {
        let written = base.as_ref().map_or(0, |b| b.size);
        Upload {
            uploader: Arc::clone(self),
            key,
            replace,
            written,
            appends_to: base.clone(),
            base,
            moved_to: None,
            part: None,
            next_number: 1,
            multipart: None,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            failed: None,
            lifecycle: Arc::new(Lifecycle::new(written)),
            replacing_empty: None,
        }
    }

    /// `kib` of the budget: at once if free; else if parts are on their way up (they give memory
    /// back), within SPILL_AFTER; else `None`, and the caller spills.
    async fn reserve(&self, kib: u32) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.memory).try_acquire_many_owned(kib) {
            return Some(permit);
        }
        if self.sending.count() == 0 {
            return None;
        }
        tokio::time::timeout(SPILL_AFTER, Arc::clone(&self.memory).acquire_many_owned(kib)).await.ok()?.ok()
    }

    /// Memory for a spilled part of `len` bytes about to be sent: from the budget if it is free,
    /// else one of the few places beyond it (freed as those parts go up).
    async fn memory_for_spilled(&self, len: u64) -> Option<OwnedSemaphorePermit> {
        let kib = len.div_ceil(KIB).min(u64::from(u32::MAX)) as u32;
        if let Ok(permit) = Arc::clone(&self.memory).try_acquire_many_owned(kib) {
            return Some(permit);
        }
        Arc::clone(&self.over_budget).acquire_owned().await.ok()
    }
}

/// Runs one request of an upload within the deadline.
async fn within<T>(
    deadline: Duration,
    what: &'static str,
    request: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, WriteError> {
    match tokio::time::timeout(deadline, request).await {
        Ok(result) => result.map_err(WriteError::Failed),
        Err(_) => Err(WriteError::TimedOut { what, secs: deadline.as_secs() }),
    }
}

/// How long completing an upload of `size` bytes may take: servers assemble the parts then, and
/// S3 documents that this can take minutes for large objects, so a second more per 32 MiB.
fn completion_deadline(deadline: Duration, size: u64) -> Duration {
    deadline + Duration::from_secs(size / (32 * MIB))
}

/// One file being written.
pub struct Upload<S> {
    uploader: Arc<Uploader<S>>,
    key: String,
    replace: Replace,
    written: u64,
    /// The object appended to, if this upload appends.
    appends_to: Option<Source>,
    /// Its bytes, until the first write puts them first in the upload.
    base: Option<Source>,
    /// Where the file was renamed to after its upload was bound to `key`: it is completed there,
    /// then copied on the server.
    moved_to: Option<(String, Replace)>,
    part: Option<Part>,
    next_number: u32,
    multipart: Option<UploadId>,
    in_flight: JoinSet<Result<UploadedPart, WriteError>>,
    done: Vec<UploadedPart>,
    /// The first part that failed to go up: the file fails with it.
    failed: Option<WriteError>,
    /// Where the file is in its life, shared with the mount.
    lifecycle: Arc<Lifecycle>,
    /// Written again after it was finished empty: the empty object (this ETag) it replaces.
    replacing_empty: Option<ETag>,
}

impl<S: ObjectStore> Upload<S> {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Where the file is in its life: the mount reads it without this upload's lock.
    pub fn lifecycle(&self) -> Arc<Lifecycle> {
        Arc::clone(&self.lifecycle)
    }

    /// The file is to become the object at `key` instead (renamed while written). Until parts
    /// are sent nothing is bound to the old key, and the upload simply goes to the new one; after
    /// that it is completed at the old key and copied on the server at the end.
    pub fn rename(&mut self, key: String, replace: Replace) {
        if self.multipart.is_none() && self.base.is_none() && self.appends_to.is_none() {
            self.key = key;
            self.replace = replace;
        } else {
            self.moved_to = Some((key, replace));
        }
    }

    /// Opened to append, and nothing appended yet.
    pub fn untouched(&self) -> bool {
        self.base.is_some()
    }

    /// The empty object this file made at an early close and now replaces, if it does.
    pub fn replacing_empty(&self) -> Option<&ETag> {
        self.replacing_empty.as_ref()
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `data`, which must start where the file ends. Memory for the bytes comes from the
    /// mount's budget as they arrive; when other files hold it all, the part goes to disk.
    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), WriteError> {
        match self.lifecycle.stage() {
            Stage::Writing => {}
            // Closed by its opener before anything was appended, written through a descriptor
            // still open: it appends after all.
            Stage::LeftAsItWas => self.lifecycle.set(Stage::Writing),
            Stage::CompleteEmpty(empty) if offset == 0 && !data.is_empty() => {
                self.replace = Replace::IfMatch(empty.clone());
                self.replacing_empty = Some(empty);
                self.lifecycle.set(Stage::Writing);
            }
            Stage::CompleteEmpty(_) if offset != 0 => return Err(WriteError::NotAtEnd { offset, end: 0 }),
            _ => return Err(WriteError::Finished),
        }
        self.collect_finished_parts();
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if offset != self.written {
            return Err(WriteError::NotAtEnd { offset, end: self.written });
        }
        let limit = self.uploader.config.largest_object();
        if self.written + data.len() as u64 > limit {
            return Err(WriteError::TooLarge { limit });
        }
        if !data.is_empty()
            && let Some(base) = self.base.take()
        {
            let laid = self.lay_base(base).await.map_err(|e| self.explained(e));
            laid.map_err(|e| self.fail(e))?;
        }
        let appended = self.append(data).await;
        self.lifecycle.set_written(self.written);
        appended
    }

    /// Puts the bytes of the object appended to first: by a server-side copy when it is large
    /// enough to be a part of its own, else fetched and sent again with the new bytes.
    async fn lay_base(&mut self, base: Source) -> Result<(), WriteError> {
        if base.size >= SMALLEST_PART {
            let upload = self.multipart().await?;
            let ranges = part_ranges(base.size, self.uploader.copy_part_size(base.size));
            for range in ranges {
                let number = self.next_number;
                self.next_number += 1;
                self.in_flight.spawn(self.uploader.copy_part(&self.key, &upload, number, &base, range));
            }
            return Ok(());
        }
        self.written = 0;
        if base.size == 0 {
            return Ok(());
        }
        let deadline = completion_deadline(self.uploader.config.deadline, base.size);
        let fetching = async {
            let mut body = self.uploader.store.get_range(&base.key, 0..base.size, &base.etag).await?;
            let mut bytes = Vec::with_capacity(base.size as usize);
            while let Some(chunk) = futures::StreamExt::next(&mut body).await {
                bytes.extend_from_slice(&chunk?);
            }
            Ok(bytes)
        };
        let bytes = within(deadline, "fetching the object appended to", fetching).await?;
        if bytes.len() as u64 != base.size {
            return Err(WriteError::Changed);
        }
        self.append(&bytes).await
    }

    /// Adds `data` at the end of the file.
    async fn append(&mut self, mut data: &[u8]) -> Result<(), WriteError> {
        let uploader = Arc::clone(&self.uploader);
        while !data.is_empty() {
            let part = match &mut self.part {
                Some(part) => part,
                None => {
                    let nothing =
                        Arc::clone(&uploader.memory).try_acquire_many_owned(0).map_err(|_| WriteError::Finished)?;
                    self.part.insert(Part::new(uploader.config.part_size(self.next_number), nothing))
                }
            };
            let take = data.len().min(part.room() as usize);
            let missing = part.missing_kib(take as u64);
            if missing > 0 {
                match uploader.reserve(missing.max(RESERVE_STEP_KIB).min(part.unreserved_kib())).await {
                    Some(more) => part.reserve(more),
                    None => {
                        part.spill(&uploader.config.spill_dir).await.map_err(|e| WriteError::Spill(e.to_string()))?;
                        uploader.metrics.upload_parts_spilled.inc();
                    }
                }
            }
            part.append(&data[..take]).await.map_err(|e| WriteError::Spill(e.to_string()))?;
            data = &data[take..];
            self.written += take as u64;
            if part.room() == 0 {
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

    fn note(&mut self, joined: Result<Result<UploadedPart, WriteError>, tokio::task::JoinError>) {
        match joined {
            Ok(Ok(part)) => self.done.push(part),
            Ok(Err(e)) => {
                self.failed.get_or_insert(e);
            }
            Err(e) => {
                self.failed.get_or_insert(WriteError::Failed(StoreError::Other(format!("a part upload stopped: {e}"))));
            }
        }
    }

    /// Sends the part being filled, starting the multipart upload first if needed.
    async fn send_part(&mut self) -> Result<(), WriteError> {
        let Some(part) = self.part.take() else { return Ok(()) };
        let store = Arc::clone(&self.uploader.store);
        let deadline = self.uploader.config.deadline;
        let upload = self.multipart().await.map_err(|e| self.fail(e))?;
        while self.in_flight.len() >= self.uploader.config.concurrency.max(1) {
            if let Some(joined) = self.in_flight.join_next().await {
                self.note(joined);
            }
        }
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let over_budget = match part.is_spilled() {
            true => self.uploader.memory_for_spilled(part.len).await,
            false => None,
        };
        let (bytes, reserved) = part.into_bytes().await.map_err(|e| self.fail(WriteError::Spill(e.to_string())))?;
        let memory = reserved.or(over_budget);
        let (key, number) = (self.key.clone(), self.next_number);
        self.next_number += 1;
        let sending = self.uploader.sending.start();
        self.in_flight.spawn(async move {
            let (_memory, _sending) = (memory, sending);
            within(deadline, "sending a part", store.upload_part(&key, &upload, number, bytes)).await
        });
        Ok(())
    }

    /// The multipart upload, started if it was not.
    async fn multipart(&mut self) -> Result<UploadId, WriteError> {
        if let Some(upload) = &self.multipart {
            return Ok(upload.clone());
        }
        let created = self.uploader.store.create_upload(&self.key);
        let upload = within(self.uploader.config.deadline, "starting the upload", created).await?;
        if let Some(journal) = &self.uploader.journal {
            journal.started(&self.key, &upload);
        }
        Ok(self.multipart.insert(upload).clone())
    }

    /// `e`, said plainly when the object appended to is gone or changed.
    fn explained(&self, e: WriteError) -> WriteError {
        match e {
            WriteError::Failed(StoreError::PreconditionFailed | StoreError::NotFound) if self.appends_to.is_some() => {
                WriteError::Changed
            }
            e => e,
        }
    }

    fn fail(&mut self, e: WriteError) -> WriteError {
        self.failed.get_or_insert(e.clone());
        e
    }

    /// Completes the object: the last part and the parts in flight go up, then the upload is
    /// completed (or the whole file is PUT, if it never reached a part's size). On any failure the
    /// upload is aborted and the error returned. Nothing can be written afterwards, except into a
    /// file finished empty, which starts again at offset 0.
    pub async fn finish(&mut self) -> Result<ETag, WriteError> {
        if self.lifecycle.stage() != Stage::Writing {
            return Err(WriteError::Finished);
        }
        if let Some(base) = &self.base {
            // Opened to append, and nothing was yet: the object stays as it is, and a write
            // through a descriptor still open (a shell's `>>` closes the one it opened) appends.
            self.lifecycle.set(Stage::LeftAsItWas);
            return Ok(base.etag.clone());
        }
        let mut outcome = self.complete().await.map_err(|e| self.explained(e));
        if let (Ok(etag), Some((key, replace))) = (&outcome, self.moved_to.take()) {
            outcome = self.move_completed(etag.clone(), key, replace).await;
        }
        self.lifecycle.set(match &outcome {
            Ok(etag) if self.written == 0 => Stage::CompleteEmpty(etag.clone()),
            Ok(_) => Stage::Complete,
            Err(e) => Stage::Failed(crate::errno::FsError::from(e.clone())),
        });
        let label = if outcome.is_ok() { "completed" } else { "aborted" };
        self.uploader.metrics.uploads.get_or_create(&UploadLabels { outcome: label }).inc();
        outcome
    }

    async fn complete(&mut self) -> Result<ETag, WriteError> {
        let store = Arc::clone(&self.uploader.store);
        let deadline = self.uploader.config.deadline;
        if self.multipart.is_none() && self.failed.is_none() {
            let body = match self.part.take() {
                Some(part) => part.into_bytes().await.map_err(|e| WriteError::Spill(e.to_string()))?.0,
                None => Bytes::new(),
            };
            return within(deadline, "writing the file", store.put_object(&self.key, body, self.replace.clone())).await;
        }
        if self.part.as_ref().is_some_and(|p| p.len > 0)
            && let Err(e) = self.send_part().await
        {
            return Err(self.abort(e).await);
        }
        while let Some(joined) = self.in_flight.join_next().await {
            self.note(joined);
        }
        if let Some(e) = self.failed.clone() {
            return Err(self.abort(e).await);
        }
        let Some(upload) = self.multipart.clone() else { return Err(WriteError::Finished) };
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.number);
        let completing = store.complete_upload(&self.key, &upload, parts, self.replace.clone());
        // A server that answers late may still complete it after this gives up and aborts: then
        // the object appears whole (S3 never shows a part of one), and the caller was told EIO.
        let what = "completing the upload (a server still at work may yet store the object, whole)";
        match within(completion_deadline(deadline, self.written), what, completing).await {
            Ok(etag) => {
                self.ended(&upload);
                Ok(etag)
            }
            Err(e) => Err(self.abort(e).await),
        }
    }

    /// Moves the object just completed at `self.key` to `key`: a server-side copy pinned to it,
    /// then a delete pinned to it. A failure leaves it at the old key, and says so.
    async fn move_completed(&mut self, etag: ETag, key: String, replace: Replace) -> Result<ETag, WriteError> {
        let source = Source { key: self.key.clone(), etag, size: self.written };
        if let Replace::Never = replace
            && let Ok(_) = self.uploader.store.head(&key).await
        {
            tracing::warn!(from = %self.key, to = %key, "the file renamed while written is complete at its old name: another client made the new one meanwhile");
            return Err(WriteError::Failed(StoreError::PreconditionFailed));
        }
        let copied = match self.uploader.copy_whole(&source, &key).await {
            Ok(copied) => copied,
            Err(e) => {
                tracing::warn!(from = %self.key, to = %key, "the file renamed while written is complete at its old name; moving it failed: {e}");
                return Err(e);
            }
        };
        let deleting = self.uploader.store.delete_object(&source.key, Some(&source.etag));
        if let Err(e) = within(self.uploader.config.deadline, "deleting the old name", deleting).await {
            tracing::warn!(from = %self.key, to = %key, "the file renamed while written is at both names: deleting the old one failed: {e}");
        }
        self.key = key;
        Ok(copied)
    }

    fn ended(&self, upload: &UploadId) {
        if let Some(journal) = &self.uploader.journal {
            journal.ended(upload);
        }
    }

    /// Aborts the multipart upload (if one was started), so its parts do not linger and no object
    /// appears; returns `error`.
    async fn abort(&mut self, error: WriteError) -> WriteError {
        self.in_flight.abort_all();
        if let Some(upload) = self.multipart.take() {
            let aborting = self.uploader.store.abort_upload(&self.key, &upload);
            match within(self.uploader.config.deadline, "aborting the upload", aborting).await {
                Ok(()) => self.ended(&upload),
                Err(e) => tracing::warn!(
                    key = %self.key,
                    "aborting the upload failed (the next mount, or the bucket's lifecycle rule, aborts it): {e}"
                ),
            }
        }
        error
    }

    /// Gives up on the file, which was at `before` when it was refused: nothing of it stays in
    /// S3. An empty object it completed is deleted too, if it is still the one there.
    pub async fn cancel(&mut self, before: Stage) {
        match before {
            Stage::Writing | Stage::LeftAsItWas => {
                self.uploader.metrics.uploads.get_or_create(&UploadLabels { outcome: "aborted" }).inc();
                self.abort(WriteError::Finished).await;
            }
            Stage::CompleteEmpty(empty) => {
                let deleting = self.uploader.store.delete_object(&self.key, Some(&empty));
                if let Err(e) = within(self.uploader.config.deadline, "deleting the empty object", deleting).await {
                    tracing::warn!(key = %self.key, "deleting the empty object this file made: {e}");
                }
            }
            Stage::Complete | Stage::Failed(_) | Stage::Refused { .. } | Stage::Discarded { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests;
