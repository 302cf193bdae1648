//! What only the disk tier does, as the fetch layer uses it: whole versions handed to the kernel,
//! versions read to their end completed there in the background; and settling every tier's fills
//! at unmount.

use std::sync::Arc;

use super::{Fetcher, RUNS_PER_FILE};
use crate::cache::disk::{DiskCache, VersionFile};
use crate::object_id::ObjectId;
use crate::store::{ObjectStore, StoreError};

impl<S: ObjectStore> Fetcher<S> {
    /// The version's copy on disk, opened and checked against its record (blocking file I/O), and
    /// when it is whole, a read-only descriptor of it for the kernel to read from itself.
    pub fn open_on_disk(&self, object: &ObjectId, size: u64) -> Option<std::fs::File> {
        let version = self.tiers.disk()?.open_version_in_time(object, size)?;
        if !version.is_complete() {
            return None;
        }
        version.reader().ok()
    }

    /// A newer version of the object is known and nothing reads this one: its disk copy goes.
    pub fn forget_version(&self, object: &ObjectId, size: u64) {
        if let Some(disk) = self.tiers.disk() {
            disk.forget_version(object, size);
        }
    }

    /// Fetches, in the background, the blocks of a version that a reader went through to its end
    /// but that did not reach the disk (its writer is slower than the network, so fills were
    /// dropped): the next open of it is then served whole from disk, by the kernel. One version at
    /// a time, with readahead's connection permits, so readers waiting go first.
    pub fn complete_on_disk(self: &Arc<Self>, object: Arc<ObjectId>, size: u64) {
        let Some(disk) = self.tiers.disk().cloned() else { return };
        let Some(version) = disk.opened(&object, size) else { return };
        if version.is_complete() {
            return;
        }
        let this = Arc::clone(self);
        let counted = self.completions.start();
        tokio::spawn(async move {
            let _counted = counted;
            let _one_at_a_time = this.completing.lock().await;
            let _ = this.fill_missing_on_disk(&disk, &version, &object, size).await;
        });
    }

    /// Fetches the blocks of `version` it lacks, in runs of up to a part, each with a readahead
    /// connection permit, and queues them for the disk, waiting for room; returns the bytes
    /// fetched.
    pub(super) async fn fill_missing_on_disk(
        &self,
        disk: &DiskCache,
        version: &Arc<VersionFile>,
        object: &Arc<ObjectId>,
        size: u64,
    ) -> Result<u64, StoreError> {
        let bs = self.config.block_size;
        let part_blocks = self.part_blocks() as usize;
        let mut runs: Vec<Vec<u64>> = Vec::new();
        for index in version.missing() {
            match runs.last_mut() {
                Some(run) if run.len() < part_blocks && run.last() == Some(&(index - 1)) => run.push(index),
                _ => runs.push(vec![index]),
            }
        }
        let fetch_run = |run: Vec<u64>| async move {
            let (first, last) = (run[0], run[run.len() - 1]);
            let range = first * bs..self.block_range(last, size).end;
            let permit =
                self.prefetch_permits.acquire().await.map_err(|_| StoreError::Other("shutting down".into()))?;
            let bytes = self.fetch_range(object, range.clone()).await?;
            for index in run {
                let block = self.block_range(index, size);
                let within = (block.start - range.start) as usize..(block.end - range.start) as usize;
                disk.fill_in_background(version, index, bytes.slice(within)).await;
            }
            // Held until the bytes are queued: a disk slower than the network holds back GETs
            // rather than parts piling up in memory.
            drop(permit);
            Ok::<u64, StoreError>(range.end - range.start)
        };
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(runs)
            .map(fetch_run)
            .buffer_unordered(RUNS_PER_FILE)
            .try_fold(0, |sum, n| async move { Ok(sum + n) })
            .await
    }

    /// The version on disk, opened for work in the background (see `BACKGROUND_OPENS`); when it is
    /// whole there, its first part is read into the page cache ahead of its reader.
    pub(super) async fn open_in_background(
        &self,
        disk: &Arc<DiskCache>,
        object: &Arc<ObjectId>,
        size: u64,
    ) -> Option<Arc<VersionFile>> {
        let _permit = Arc::clone(&self.background_opens).acquire_owned().await.ok()?;
        let (disk, object) = (Arc::clone(disk), Arc::clone(object));
        let start = self.config.part_size;
        tokio::task::spawn_blocking(move || {
            let version = disk.open_version_unhurried(&object, size)?;
            // Whole on disk: its reader is coming, and its start can be in memory by then.
            if version.is_complete() {
                version.read_ahead(start);
            }
            Some(version)
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits until what was read is in the tiers (versions being completed on disk, blocks queued
    /// for any tier), at most `deadline`: a clean unmount keeps what this mount fetched. Says
    /// whether all of it got there.
    pub async fn settle(&self, deadline: std::time::Duration) -> bool {
        let settled = async {
            while self.completions.count() > 0 || self.tiers.in_order().iter().any(|tier| tier.fills_pending() > 0) {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(deadline, settled).await.is_ok()
    }
}
