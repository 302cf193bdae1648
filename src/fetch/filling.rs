//! Filling: claiming missing blocks (one fetch per block, later readers wait on it) and filling
//! them from one ranged GET per run of consecutive blocks (when no tier holds them: `below`),
//! streamed into block buffers as the body arrives and offered to the tiers behind the reader.

use std::ops::Range;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::Fetcher;
use crate::cache::{BlockKey, BlockSlot, Lookup};
use crate::object_id::ObjectId;
use crate::store::{ObjectStore, StoreError};

impl<S: ObjectStore> Fetcher<S> {
    /// Makes sure every block overlapping `range` is cached or being fetched, for a reader that is
    /// waiting: GETs for the missing blocks start at once (one per part-sized run), never queued
    /// behind readahead. Returns every block's slot.
    pub(super) fn ensure(
        self: &Arc<Self>,
        object: &Arc<ObjectId>,
        size: u64,
        range: Range<u64>,
    ) -> Vec<(u64, Arc<BlockSlot>)> {
        let mut missing = 0;
        let slots = self.claim(object, self.blocks_of(&range), self.part_blocks() as usize, |run| {
            missing += run.len() as u64;
            self.start_fetch(run, size, None)
        });
        self.metrics.cache_misses.inc_by(missing);
        self.metrics.cache_hits.inc_by(slots.len() as u64 - missing);
        slots
    }

    /// Claims the missing blocks among `blocks` and hands them to `fetch` in runs of consecutive
    /// blocks, at most `max_run` long; returns the slots of all the blocks.
    pub(super) fn claim(
        &self,
        object: &Arc<ObjectId>,
        blocks: std::ops::RangeInclusive<u64>,
        max_run: usize,
        mut fetch: impl FnMut(Vec<(BlockKey, Arc<BlockSlot>)>),
    ) -> Vec<(u64, Arc<BlockSlot>)> {
        let mut slots = Vec::new();
        let mut run = Vec::new();
        for index in blocks {
            let key = BlockKey { object: Arc::clone(object), index };
            match self.cache.get_or_claim(key.clone()) {
                Lookup::Present(slot) => {
                    if !run.is_empty() {
                        fetch(std::mem::take(&mut run));
                    }
                    slots.push((index, slot));
                }
                Lookup::Claimed(slot) => {
                    run.push((key, Arc::clone(&slot)));
                    slots.push((index, slot));
                    if run.len() == max_run {
                        fetch(std::mem::take(&mut run));
                    }
                }
            }
        }
        if !run.is_empty() {
            fetch(run);
        }
        slots
    }

    /// One ranged GET for a run of consecutive claimed blocks, filled block by block as the body
    /// arrives; readahead holds its connection `permit` until the GET ends. Every block of the
    /// run is filled, with data or with the error.
    pub(super) fn start_network_fetch(
        self: &Arc<Self>,
        run: Vec<(BlockKey, Arc<BlockSlot>)>,
        size: u64,
        permit: Option<Arc<OwnedSemaphorePermit>>,
    ) {
        let Some((first_key, _)) = run.first() else { return };
        let bs = self.config.block_size;
        let start = first_key.index * bs;
        let end = ((first_key.index + run.len() as u64) * bs).min(size);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = permit;
            let object = Arc::clone(&run[0].0.object);
            let mut pending = run.into_iter();
            let result = this.stream_into_blocks(&object, size, start..end, &mut pending).await;
            let error = match result {
                Ok(()) => StoreError::Other("the response ended before the range did".into()),
                Err(e) => e,
            };
            for (key, slot) in pending {
                this.cache.fill(&key, &slot, Err(error.clone()));
            }
        });
    }

    pub(super) async fn stream_into_blocks(
        &self,
        object: &Arc<ObjectId>,
        size: u64,
        range: Range<u64>,
        pending: &mut std::vec::IntoIter<(BlockKey, Arc<BlockSlot>)>,
    ) -> Result<(), StoreError> {
        let mut body = self.open_body(object, range.clone()).await?;
        let mut remaining = (range.end - range.start) as usize;
        let mut block = self.block_buffer(remaining);
        while let Some(mut chunk) = body.next_chunk().await? {
            while !chunk.is_empty() {
                let block_len = self.buffers.buffer_size().min(remaining);
                let take = (block_len - block.len()).min(chunk.len());
                block.extend_from_slice(&chunk.split_to(take));
                if block.len() == block_len {
                    remaining -= block_len;
                    let Some((key, slot)) = pending.next() else { return Ok(()) };
                    let filled = std::mem::replace(&mut block, self.block_buffer(remaining));
                    let filled = self.buffers.freeze(filled);
                    self.offer_below(&self.block_of(object, size, key.index), &filled);
                    self.cache.fill(&key, &slot, Ok(filled));
                    if remaining == 0 {
                        return Ok(());
                    }
                }
            }
        }
        Err(StoreError::Other("the response ended before the range did".into()))
    }

    /// A buffer for the next block of a body with `remaining` bytes to come: a recycled one for a
    /// whole block, an exact one for an object's short last block (so small files cached by the
    /// thousand hold only their own size).
    pub(super) fn block_buffer(&self, remaining: usize) -> Vec<u8> {
        self.buffers.take_for(remaining)
    }
}
