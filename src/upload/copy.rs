//! Server-side copies: a whole object in one CopyObject up to S3's 5 GiB limit, larger ones as a
//! multipart upload of UploadPartCopy parts sent in parallel. Every copy is pinned to the source's
//! ETag, so a source replaced meanwhile fails the copy instead of copying the new bytes.

use std::ops::Range;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::{MIB, Uploader, WriteError, completion_deadline, within};
use crate::object_id::ETag;
use crate::store::{ObjectStore, Replace, UploadId, UploadedPart};

/// S3's smallest part (but the last).
pub const SMALLEST_PART: u64 = 5 * MIB;
/// Parts of a copy are at most this large, so that several go at once.
const LARGEST_COPY_PART: u64 = 512 * MIB;

/// What a copy reads: `size` bytes of the object at `key`, while it has `etag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub key: String,
    pub etag: ETag,
    pub size: u64,
}

/// The ranges `size` bytes are copied in: as many as parts of `part_size` need, of equal length,
/// so that none but a lone one is under S3's smallest part when `part_size` is at least twice it.
pub fn part_ranges(size: u64, part_size: u64) -> Vec<Range<u64>> {
    let count = size.div_ceil(part_size.max(1)).max(1);
    let each = size.div_ceil(count);
    (0..count).map(|i| (i * each).min(size)..((i + 1) * each).min(size)).filter(|r| !r.is_empty()).collect()
}

impl<S: ObjectStore> Uploader<S> {
    /// The size of the parts a copy of `size` bytes is made of: large, to be few, and enough of
    /// them to fit in S3's 10,000.
    pub(super) fn copy_part_size(&self, size: u64) -> u64 {
        let part = self.config.largest_single_copy.clamp(2 * SMALLEST_PART, LARGEST_COPY_PART);
        part.max(size.div_ceil(u64::from(super::MAX_PARTS)))
    }

    /// Copies `source` whole to `to`, replacing what is there; returns the copy's ETag.
    pub async fn copy_whole(&self, source: &Source, to: &str) -> Result<ETag, WriteError> {
        let deadline = completion_deadline(self.config.deadline, source.size);
        if source.size <= self.config.largest_single_copy {
            return within(deadline, "copying the object", self.store.copy_object(&source.key, &source.etag, to)).await;
        }
        let created = within(self.config.deadline, "starting the copy", self.store.create_upload(to)).await?;
        if let Some(journal) = &self.journal {
            journal.started(to, &created);
        }
        let copied = self.copy_in_parts(source, to, &created).await;
        let outcome = match copied {
            Ok(parts) => {
                let completing = self.store.complete_upload(to, &created, parts, Replace::Allowed);
                within(deadline, "completing the copy", completing).await
            }
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            let aborting = self.store.abort_upload(to, &created);
            if let Err(e) = within(self.config.deadline, "aborting the copy", aborting).await {
                tracing::warn!(key = to, "aborting a copy failed (the next mount aborts it): {e}");
                return outcome;
            }
        }
        if let Some(journal) = &self.journal {
            journal.ended(&created);
        }
        outcome
    }

    /// Sends the copy's parts, at most the upload concurrency at once; the parts in number order.
    async fn copy_in_parts(
        &self,
        source: &Source,
        to: &str,
        upload: &UploadId,
    ) -> Result<Vec<UploadedPart>, WriteError> {
        let mut sending = JoinSet::new();
        let mut parts = Vec::new();
        for (number, range) in (1..).zip(part_ranges(source.size, self.copy_part_size(source.size))) {
            while sending.len() >= self.config.concurrency.max(1) {
                parts.push(joined(sending.join_next().await)?);
            }
            sending.spawn(self.copy_part(to, upload, number, source, range));
        }
        while let Some(part) = sending.join_next().await {
            parts.push(joined(Some(part))?);
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    /// A task copying `range` of `source` as part `number` of `upload` of `key`.
    pub(super) fn copy_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        source: &Source,
        range: Range<u64>,
    ) -> impl Future<Output = Result<UploadedPart, WriteError>> + Send + 'static {
        let store = Arc::clone(&self.store);
        let deadline = completion_deadline(self.config.deadline, range.end - range.start);
        let (key, upload, source) = (key.to_owned(), upload.clone(), source.clone());
        async move {
            let copying = store.upload_part_copy(&key, &upload, number, &source.key, &source.etag, range);
            within(deadline, "copying a part", copying).await
        }
    }
}

fn joined(
    part: Option<Result<Result<UploadedPart, WriteError>, tokio::task::JoinError>>,
) -> Result<UploadedPart, WriteError> {
    match part {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(WriteError::Failed(crate::store::StoreError::Other(format!("a part copy stopped: {e}")))),
        None => Err(WriteError::Finished),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_object_once_in_parts_of_equal_length() {
        for (size, part) in [(1, 10), (10, 10), (11, 10), (25 * MIB, 10 * MIB), (6 * 1024 * MIB, 512 * MIB)] {
            let ranges = part_ranges(size, part);
            assert_eq!(ranges.first().map(|r| r.start), Some(0));
            assert_eq!(ranges.last().map(|r| r.end), Some(size));
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start), "{ranges:?}");
            assert_eq!(ranges.len() as u64, size.div_ceil(part));
            let longest = ranges.iter().map(|r| r.end - r.start).max().unwrap_or(0);
            assert!(longest <= part, "{size} in parts of {part}: {ranges:?}");
        }
    }

    #[test]
    fn no_part_but_a_lone_one_is_under_the_smallest_when_parts_are_twice_it() {
        for size in [10 * MIB + 1, 21 * MIB, 100 * MIB + 7, 5 * 1024 * MIB + 1] {
            let ranges = part_ranges(size, 2 * SMALLEST_PART);
            assert!(ranges.iter().all(|r| r.end - r.start >= SMALLEST_PART), "{size}: {ranges:?}");
        }
    }
}
