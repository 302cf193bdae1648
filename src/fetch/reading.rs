//! Reading: a READ assembled from blocks (the memory cache's, claimed and filled when missing),
//! or, for a reader's own bytes (a random read, a stream's first read), from the stream's spans,
//! the tiers or one GET of just those bytes.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::body::ResumingBody;
use super::stream::ReadStream;
use super::{Fetcher, SharedStreams};
use crate::cache::{BlockKey, BlockSlot};
use crate::object_id::ObjectId;
use crate::store::{ObjectStore, StoreError};

impl<S: ObjectStore> Fetcher<S> {
    /// Reads `len` bytes at `offset` of `object` (of `size` bytes), for the stream of `streams`
    /// the read goes on from.
    pub async fn read(
        self: &Arc<Self>,
        object: &Arc<ObjectId>,
        size: u64,
        streams: &SharedStreams,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, StoreError> {
        let end = offset.saturating_add(u64::from(len)).min(size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let wanted = offset..end;
        let small_object = size <= self.config.part_size;
        let (plan, sequential, stream) = {
            let now = Instant::now();
            let routed = streams.route(wanted.clone(), size, self.window_limits(now));
            for gone in &routed.dropped {
                gone.forget_spans();
                self.streams.forget(Arc::as_ptr(gone) as usize);
            }
            let w = routed.stream.window();
            if w.is_streaming() && !small_object {
                self.streams.note(Arc::as_ptr(&routed.stream) as usize, now);
            }
            if routed.plan.prefetch.is_some() {
                self.metrics.readahead_window_bytes.observe(w.window() as f64);
            }
            let sequential = w.is_streaming();
            drop(w);
            (routed.plan, sequential, routed.stream)
        };
        let stream = &stream;
        let own_bytes = plan.own_bytes;
        // A random read of less than a block costs only its own bytes (Parquet footers, archive
        // indexes), unless the blocks are in the cache already; the kernel's page cache keeps it.
        // So does the first read of a stream, which would otherwise wait for a whole block to
        // arrive before its first byte (the window fetched ahead brings the rest of the block),
        // and the reads around the end of a run (see `ReadPlan::own_bytes`).
        if !small_object && own_bytes && end - offset < self.config.block_size {
            // What the cache holds before this read's own readahead claims the rest of its
            // block: the read must not wait for that whole block to arrive.
            let cached = self.cached_blocks(object, &wanted);
            self.fetch_ahead(object, size, stream, plan);
            return self.read_own_bytes(object, size, stream, wanted, cached).await;
        }
        // Small objects are fetched whole at their first read, in one GET.
        let demand = if small_object { 0..size } else { wanted.clone() };
        let slots = self.ensure(object, size, demand);
        if !small_object {
            self.fetch_ahead(object, size, stream, plan);
        }
        let (data, read_all) = self.assemble(&slots, wanted, size).await?;
        if sequential && !small_object {
            self.let_go_of_consumed(object, &read_all);
        }
        Ok(data)
    }

    /// A sequential reader of a large object does not come back for what it has read (the
    /// kernel's page cache has it): a block it has read all of leaves the cache now, so its buffer
    /// carries the next blocks and readahead keeps the budget. The kernel's reads start anywhere
    /// in a block (its readahead windows are not aligned to ours), so a block read in part stays
    /// for the read that takes the rest. Small objects stay whole, for the next epoch and for the
    /// next-file prefetch that may have brought them.
    pub(super) fn let_go_of_consumed(&self, object: &Arc<ObjectId>, read_all: &[u64]) {
        for &index in read_all {
            self.cache.release(&BlockKey { object: Arc::clone(object), index });
        }
    }

    /// `wanted` without claiming blocks for it: what the cache held (`slots`) of its first and last
    /// blocks, and the rest from the stream's spans, the disk cache or in one GET of just those
    /// bytes. (Reads straddle blocks: the half of one before or after a block boundary may have
    /// come with readahead.)
    pub(super) async fn read_own_bytes(
        &self,
        object: &Arc<ObjectId>,
        size: u64,
        stream: &ReadStream,
        wanted: Range<u64>,
        slots: Vec<Option<Arc<BlockSlot>>>,
    ) -> Result<Bytes, StoreError> {
        let bs = self.config.block_size;
        let (first, last) = (wanted.start / bs, (wanted.end - 1) / bs);
        let leading = slots.iter().take_while(|slot| slot.is_some()).count();
        let trailing = slots[leading..].iter().rev().take_while(|slot| slot.is_some()).count();
        self.metrics.cache_hits.inc_by((leading + trailing) as u64);
        let cached = |from: usize, to: usize| -> Vec<(u64, Arc<BlockSlot>)> {
            (from..to).filter_map(|i| slots[i].clone().map(|slot| (first + i as u64, slot))).collect()
        };
        let missing_from = ((first + leading as u64) * bs).clamp(wanted.start, wanted.end);
        let missing_to = ((last + 1 - trailing as u64) * bs).clamp(missing_from, wanted.end);
        let mut pieces = Vec::with_capacity(3);
        if missing_from > wanted.start {
            pieces.push(self.assemble(&cached(0, leading), wanted.start..missing_from, size).await?.0);
        }
        let mut missing = missing_from..missing_to;
        // A young run's leads are not aligned to the kernel's READs: one READ may take the end of
        // one and the start of the next.
        while !missing.is_empty()
            && let Some(span) = stream.take_span(&missing)
        {
            let part = span.range();
            let Some(bytes) = span.bytes().await else { break };
            self.metrics.cache_hits.inc();
            pieces.push(bytes);
            missing.start = part.end;
        }
        if !missing.is_empty() {
            pieces.push(match self.read_from_tiers(object, size, &missing).await {
                Some(bytes) => bytes,
                None => {
                    self.metrics.cache_misses.inc();
                    self.read_from_source(object, size, missing).await?
                }
            });
        }
        if wanted.end > missing_to {
            pieces.push(
                self.assemble(&cached(slots.len() - trailing, slots.len()), missing_to..wanted.end, size).await?.0,
            );
        }
        if pieces.len() == 1 {
            return Ok(pieces.remove(0));
        }
        let mut out = BytesMut::with_capacity((wanted.end - wanted.start) as usize);
        for piece in pieces {
            out.extend_from_slice(&piece);
        }
        Ok(out.freeze())
    }

    pub(super) async fn open_body(
        &self,
        object: &Arc<ObjectId>,
        range: Range<u64>,
    ) -> Result<ResumingBody<S>, StoreError> {
        let resumes = self.metrics.body_resumes.clone();
        ResumingBody::open(Arc::clone(&self.store), Arc::clone(object), range, self.config.body, resumes).await
    }

    /// Copies `wanted` out of the blocks, which start at the block containing the first byte asked
    /// for in `ensure`. A read within one block is a zero-copy slice. Also returns the blocks whose
    /// every byte has now been read.
    pub(super) async fn assemble(
        &self,
        slots: &[(u64, Arc<BlockSlot>)],
        wanted: Range<u64>,
        size: u64,
    ) -> Result<(Bytes, Vec<u64>), StoreError> {
        let bs = self.config.block_size;
        let first = wanted.start / bs;
        let last = (wanted.end - 1) / bs;
        let mut out: Option<BytesMut> = None;
        let mut single = None;
        let mut read_all = Vec::new();
        for (index, slot) in slots.iter().filter(|(i, _)| (first..=last).contains(i)) {
            let block_start = index * bs;
            let block_end = (block_start + bs).min(size);
            let overlap = wanted.end.min(block_end).saturating_sub(wanted.start.max(block_start));
            if slot.note_read(overlap) >= block_end - block_start {
                read_all.push(*index);
            }
            let block = slot.wait().await?;
            let from = wanted.start.max(block_start) - block_start;
            let to = (wanted.end.min(block_start + block.len() as u64)).saturating_sub(block_start);
            if from >= to {
                continue;
            }
            let piece = block.slice(from as usize..to as usize);
            if first == last {
                single = Some(piece);
            } else {
                out.get_or_insert_with(|| BytesMut::with_capacity((wanted.end - wanted.start) as usize))
                    .extend_from_slice(&piece);
            }
        }
        Ok((single.or_else(|| out.map(BytesMut::freeze)).unwrap_or_default(), read_all))
    }

    /// The slot of each block overlapping `wanted`, if it is cached or being fetched.
    pub(super) fn cached_blocks(&self, object: &Arc<ObjectId>, wanted: &Range<u64>) -> Vec<Option<Arc<BlockSlot>>> {
        let bs = self.config.block_size;
        (wanted.start / bs..=(wanted.end - 1) / bs)
            .map(|index| self.cache.peek(&BlockKey { object: Arc::clone(object), index }))
            .collect()
    }
}
