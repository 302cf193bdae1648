//! Fetching ahead: what a read's plan asks for beyond its own bytes (a stream's window, spans
//! and leads, a reader going backwards), the start of the next files, and the files a job said it
//! will read. Every fetch ahead takes a connection permit first and claims its blocks only then,
//! so a reader that needs them meanwhile fetches them itself instead of waiting behind readahead.

use std::ops::{Range, RangeInclusive};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use super::readahead::ReadPlan;
use super::{Fetcher, OverBudget, PARALLEL_SPLIT, PassedBlocks, SharedStream};
use crate::cache::BlockSlot;
use crate::object_id::ObjectId;
use crate::store::{ObjectStore, StoreError};

impl<S: ObjectStore> Fetcher<S> {
    /// Starts fetching what `plan` asks for ahead of the reader: its spans, then its blocks.
    pub(super) fn fetch_ahead(
        self: &Arc<Self>,
        object: &Arc<ObjectId>,
        size: u64,
        stream: &SharedStream,
        plan: ReadPlan,
    ) {
        for span in plan.spans {
            self.fetch_span(object, size, stream, span, OverBudget::WholeBlocks);
        }
        if let Some(lead) = plan.lead {
            self.fetch_span(object, size, stream, lead, OverBudget::Nothing);
        }
        if let Some(ahead) = plan.prefetch {
            self.prefetch(Arc::clone(object), size, Arc::clone(stream), ahead, PassedBlocks::Skipped);
        }
        if let Some(behind) = plan.prefetch_behind {
            self.prefetch_behind(Arc::clone(object), size, behind);
        }
    }

    /// Fetches `range`, below a reader going backwards, in the background: its parts nearest the
    /// reader first, each claimed once a connection permit is free.
    pub(super) fn prefetch_behind(self: &Arc<Self>, object: Arc<ObjectId>, size: u64, range: Range<u64>) {
        let (first, last) = self.blocks_of(&range).into_inner();
        let blocks_per_part = ((last - first + 1) / PARALLEL_SPLIT).clamp(1, self.part_blocks());
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut top = last + 1;
            while top > first {
                let Some(permit) = this.ahead_permit().await else { return };
                let bottom = top.saturating_sub(blocks_per_part).max(first);
                this.claim_ahead(&object, bottom..=top - 1, blocks_per_part, size, &permit);
                top = bottom;
            }
        });
    }

    /// Fetches `range`, part of a block, ahead for `stream` alone, once a connection permit is
    /// free, in one GET. With a disk cache (whose budget for spans is 0) its blocks are fetched
    /// whole into the cache instead: every block a reader goes through is to reach the disk whole,
    /// so that the next open is served from there. When spans hold their share of the memory
    /// budget already, `over_budget` says what happens.
    pub(super) fn fetch_span(
        self: &Arc<Self>,
        object: &Arc<ObjectId>,
        size: u64,
        stream: &SharedStream,
        range: Range<u64>,
        over_budget: OverBudget,
    ) {
        let Some(charge) = self.span_budget.charge(range.end - range.start) else {
            let passed = if self.tiers.disk().is_some() { PassedBlocks::Fetched } else { PassedBlocks::Skipped };
            if passed == PassedBlocks::Fetched || over_budget == OverBudget::WholeBlocks {
                let block_start = range.start / self.config.block_size * self.config.block_size;
                self.prefetch(Arc::clone(object), size, Arc::clone(stream), block_start..range.end, passed);
            }
            return;
        };
        let fill = stream.start_span(range.clone(), charge);
        let (this, object) = (Arc::clone(self), Arc::clone(object));
        tokio::spawn(async move {
            let Ok(_permit) = this.prefetch_permits.acquire().await else { return };
            fill.fetched(this.read_direct(&object, size, range).await);
        });
    }

    /// Fetches `range` ahead of the reader, in the background. Each part waits for a connection
    /// permit before its blocks are claimed, so until then a reader that needs them claims and
    /// fetches them itself instead of waiting behind readahead. `passed` says what becomes of
    /// blocks the reader has gone past meanwhile.
    pub(super) fn prefetch(
        self: &Arc<Self>,
        object: Arc<ObjectId>,
        size: u64,
        stream: SharedStream,
        range: Range<u64>,
        passed: PassedBlocks,
    ) {
        let bs = self.config.block_size;
        let (first, last) = self.blocks_of(&range).into_inner();
        // A window still growing is split into PARALLEL_SPLIT GETs (of whole blocks), so that
        // even the first, small windows are fetched over several connections; streams reading at
        // once each have their own, and split theirs less.
        let split = (PARALLEL_SPLIT / self.streams.reading(Instant::now()).max(1) as u64).max(1);
        let blocks_per_part = ((last - first + 1) / split).clamp(1, self.part_blocks());
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut index = first;
            while index <= last {
                let Some(permit) = this.ahead_permit().await else { return };
                let part_end = (index + blocks_per_part - 1).min(last);
                // The stream's lock is held while claiming, so the reader cannot pass these blocks
                // between the check and the claim.
                let window = stream.window();
                let unread = match passed {
                    PassedBlocks::Skipped => index.max(window.position() / bs),
                    PassedBlocks::Fetched => index,
                };
                if unread <= part_end {
                    this.claim_ahead(&object, unread..=part_end, blocks_per_part, size, &permit);
                }
                drop(window);
                index = part_end + 1;
            }
        });
    }

    /// Fetches the start of an object before it is read (all of it when it is no larger than a
    /// part) in one background GET, once a connection permit is free.
    pub fn prefetch_start(self: &Arc<Self>, object: Arc<ObjectId>, size: u64) {
        let end = size.min(self.config.part_size);
        if end == 0 {
            return;
        }
        let blocks = self.blocks_of(&(0..end));
        let run = blocks.end() + 1;
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Some(disk) = this.tiers.disk() {
                // Opened now so that its blocks on disk are read from there, and what comes from
                // the network is written there. A version whole on disk needs nothing fetched.
                let version = this.open_in_background(disk, &object, size).await;
                if version.is_some_and(|v| v.is_complete()) {
                    return;
                }
            }
            let Some(permit) = this.ahead_permit().await else { return };
            this.claim_ahead(&object, blocks, run, size, &permit);
        });
    }

    /// Fetches the first `limit` bytes of a version into the block cache, a part per GET, each
    /// with a readahead connection permit, and waits for them.
    pub(super) async fn fetch_into_memory(
        self: &Arc<Self>,
        object: &Arc<ObjectId>,
        size: u64,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let end = size.min(limit.max(1));
        if end == 0 {
            return Ok(0);
        }
        let part_blocks = self.part_blocks();
        let last = *self.blocks_of(&(0..end)).end();
        let mut slots = Vec::new();
        let mut fetched = 0;
        let mut first = 0;
        while first <= last {
            let run_end = (first + part_blocks - 1).min(last);
            let permit = self.ahead_permit().await.ok_or_else(|| StoreError::Other("shutting down".into()))?;
            let (claimed, bytes) = self.claim_ahead(object, first..=run_end, part_blocks, size, &permit);
            slots.extend(claimed);
            fetched += bytes;
            first = run_end + 1;
        }
        for (_, slot) in slots {
            slot.wait().await?;
        }
        Ok(fetched)
    }

    /// Fetches a file a job said it will read (see `fs::prefetch_queue`), before it is opened:
    /// with a disk cache, all of it to disk (then an open hands it to the kernel whole); without,
    /// its first `limit` bytes into memory, as blocks fetched ahead. Returns the bytes fetched
    /// from the network.
    pub async fn fetch_queued(
        self: &Arc<Self>,
        object: Arc<ObjectId>,
        size: u64,
        limit: u64,
    ) -> Result<u64, StoreError> {
        if let Some(fetched) = self.fetch_to_disk(&object, size).await? {
            return Ok(fetched);
        }
        self.fetch_into_memory(&object, size, limit).await
    }

    /// Fetches what the disk cache lacks of a version, and waits (a while) until it is whole there;
    /// returns the bytes fetched, or `None` when there is no disk cache or it cannot take the
    /// version now.
    pub async fn fetch_to_disk(&self, object: &Arc<ObjectId>, size: u64) -> Result<Option<u64>, StoreError> {
        let Some(disk) = self.tiers.disk() else { return Ok(None) };
        let Some(version) = self.open_in_background(disk, object, size).await else { return Ok(None) };
        let fetched = self.fill_missing_on_disk(disk, &version, object, size).await?;
        // Whole once the writer has taken what was queued: an open after the fetch is then passed
        // through, with no GET.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while !version.is_complete() && Instant::now() < deadline && !version.is_gone() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(Some(fetched))
    }

    /// A readahead connection permit, shared by the GETs of one part; `None` once the runtime
    /// is shutting down.
    async fn ahead_permit(&self) -> Option<Arc<OwnedSemaphorePermit>> {
        Arc::clone(&self.prefetch_permits).acquire_owned().await.ok().map(Arc::new)
    }

    /// The claim of every fetch ahead: the missing blocks among `blocks` are claimed as fetched
    /// ahead (a read that finds them unread evicts nothing it needs) and their GETs start, in runs
    /// of at most `max_run` blocks, under `permit`. Returns every block's slot and the bytes
    /// claimed.
    fn claim_ahead(
        self: &Arc<Self>,
        object: &Arc<ObjectId>,
        blocks: RangeInclusive<u64>,
        max_run: u64,
        size: u64,
        permit: &Arc<OwnedSemaphorePermit>,
    ) -> (Vec<(u64, Arc<BlockSlot>)>, u64) {
        let mut claimed = 0;
        let slots = self.claim(object, blocks, max_run as usize, |run| {
            run.iter().for_each(|(_, slot)| slot.mark_ahead());
            for (key, _) in &run {
                let bytes = self.block_range(key.index, size);
                claimed += bytes.end - bytes.start;
            }
            self.start_fetch(run, size, Some(Arc::clone(permit)));
        });
        (slots, claimed)
    }
}
