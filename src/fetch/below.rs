//! Below the memory cache: the tiers, asked in order (disk, then the shared cache), then the
//! source. Whatever one level serves is offered to the tiers above it, whatever the source sends
//! to every tier, each keeping it behind the reader through its fill queue. Runs of claimed blocks
//! are served from the tiers until the first block none of them holds, then from the source in
//! one GET for the rest of the run.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use super::Fetcher;
use crate::cache::disk::DiskCache;
use crate::cache::tier::{BlockOf, BlockTier};
use crate::cache::{BlockKey, BlockSlot};
use crate::object_id::ObjectId;
use crate::store::{ObjectStore, StoreError};

/// Blocks of one run asked of the tiers at once.
const LOOK_AHEAD: usize = 4;

/// The tiers below memory, in the order they are asked. The disk is also known by its own type,
/// for what only it does (handing whole files to the kernel, completing files).
#[derive(Clone, Default)]
pub struct Tiers {
    disk: Option<Arc<DiskCache>>,
    order: Vec<Arc<dyn BlockTier>>,
}

impl Tiers {
    /// The disk first, when there is one, then `others` in order.
    pub fn new(disk: Option<Arc<DiskCache>>, others: Vec<Arc<dyn BlockTier>>) -> Self {
        let mut order: Vec<Arc<dyn BlockTier>> = disk.iter().map(|d| Arc::clone(d) as Arc<dyn BlockTier>).collect();
        order.extend(others);
        Self { disk, order }
    }

    pub fn disk(&self) -> Option<&Arc<DiskCache>> {
        self.disk.as_ref()
    }

    pub fn in_order(&self) -> &[Arc<dyn BlockTier>] {
        &self.order
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl<S: ObjectStore> Fetcher<S> {
    pub(super) fn block_of(&self, object: &Arc<ObjectId>, size: u64, index: u64) -> BlockOf {
        BlockOf { object: Arc::clone(object), size, index }
    }

    /// Bytes `within` a block from the first tier that holds it; a whole block is offered to the
    /// tiers above the one that served it.
    pub(super) async fn block_from_tiers(&self, block: &BlockOf, within: Range<u64>) -> Option<Bytes> {
        let whole = within == self.block_range(block.index, block.size);
        for (at, tier) in self.tiers.in_order().iter().enumerate() {
            if let Some(bytes) = tier.read(block, within.clone(), &self.buffers).await {
                if whole {
                    self.tiers.in_order()[..at].iter().for_each(|above| above.offer(block, &bytes));
                }
                return Some(bytes);
            }
        }
        None
    }

    /// A whole block from the source, to every tier.
    pub(super) fn offer_below(&self, block: &BlockOf, bytes: &Bytes) {
        self.tiers.in_order().iter().for_each(|tier| tier.offer(block, bytes));
    }

    /// Bytes from the source at `offset`: the whole blocks among them to every tier, the parts of
    /// blocks at either end as pieces.
    fn offer_range_below(&self, object: &Arc<ObjectId>, size: u64, offset: u64, bytes: &Bytes) {
        if self.tiers.is_empty() || bytes.is_empty() {
            return;
        }
        let range = offset..offset + bytes.len() as u64;
        for index in self.blocks_of(&range) {
            let block_range = self.block_range(index, size);
            let (from, to) = (block_range.start.max(range.start), block_range.end.min(range.end));
            let piece = bytes.slice((from - offset) as usize..(to - offset) as usize);
            let block = self.block_of(object, size, index);
            if from == block_range.start && to == block_range.end {
                self.offer_below(&block, &piece);
            } else {
                let at = from - block_range.start;
                self.tiers.in_order().iter().for_each(|tier| tier.offer_piece(&block, at, piece.clone()));
            }
        }
    }

    /// `wanted` from the tiers, if they hold every block it touches.
    pub(super) async fn read_from_tiers(
        &self,
        object: &Arc<ObjectId>,
        size: u64,
        wanted: &Range<u64>,
    ) -> Option<Bytes> {
        if self.tiers.is_empty() {
            return None;
        }
        let parts = self.blocks_of(wanted).map(|index| {
            let block = self.block_range(index, size);
            (self.block_of(object, size, index), block.start.max(wanted.start)..block.end.min(wanted.end))
        });
        let mut found = futures::stream::iter(parts)
            .map(|(block, within)| async move { self.block_from_tiers(&block, within).await })
            .buffered(LOOK_AHEAD);
        let mut out: Option<BytesMut> = None;
        let mut single = None;
        while let Some(part) = found.next().await {
            let part = part?;
            match (&mut out, single.take()) {
                (None, None) => single = Some(part),
                (None, Some(first)) => {
                    let mut joined = BytesMut::with_capacity((wanted.end - wanted.start) as usize);
                    joined.extend_from_slice(&first);
                    joined.extend_from_slice(&part);
                    out = Some(joined);
                }
                (Some(joined), _) => joined.extend_from_slice(&part),
            }
        }
        single.or_else(|| out.map(BytesMut::freeze))
    }

    /// `wanted`, from the tiers if they hold it, else in one GET of just those bytes, which the
    /// tiers are then offered.
    pub(super) async fn read_direct(
        &self,
        object: &Arc<ObjectId>,
        size: u64,
        wanted: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        if let Some(bytes) = self.read_from_tiers(object, size, &wanted).await {
            return Ok(bytes);
        }
        self.read_from_source(object, size, wanted).await
    }

    /// One GET of exactly `wanted`, whose bytes the tiers are offered.
    pub(super) async fn read_from_source(
        &self,
        object: &Arc<ObjectId>,
        size: u64,
        wanted: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let bytes = self.fetch_range(object, wanted.clone()).await?;
        self.offer_range_below(object, size, wanted.start, &bytes);
        Ok(bytes)
    }

    /// One GET of exactly `wanted`, for the caller alone.
    pub(super) async fn fetch_range(&self, object: &Arc<ObjectId>, wanted: Range<u64>) -> Result<Bytes, StoreError> {
        let mut body = self.open_body(object, wanted.clone()).await?;
        let mut out = BytesMut::with_capacity((wanted.end - wanted.start) as usize);
        while let Some(chunk) = body.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        if out.len() as u64 != wanted.end - wanted.start {
            return Err(StoreError::Other("the response ended before the range did".into()));
        }
        Ok(out.freeze())
    }

    /// Fetches a run of claimed blocks: from the tiers while they hold them, then the rest of the
    /// run from the source in one GET. Readahead's connection `permit` is held until it ends.
    pub(super) fn start_fetch(
        self: &Arc<Self>,
        run: Vec<(BlockKey, Arc<BlockSlot>)>,
        size: u64,
        permit: Option<Arc<OwnedSemaphorePermit>>,
    ) {
        if self.tiers.is_empty() {
            return self.start_network_fetch(run, size, permit);
        }
        self.start_refilling();
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // Each lookup a task of its own: checking and copying a block out of a tier is CPU
            // work, spread over the runtime's threads.
            let lookup = |at: usize| {
                let (this, key) = (Arc::clone(&this), &run[at].0);
                let block = this.block_of(&key.object, size, key.index);
                tokio::spawn(async move {
                    let within = this.block_range(block.index, size);
                    this.block_from_tiers(&block, within).await
                })
            };
            // The first block alone: tiers that lack it most likely lack the rest of the run (a
            // node reading what no node read yet), and are asked nothing more of it.
            let mut found = std::collections::VecDeque::from([lookup(0)]);
            let mut served = 0;
            while let Some(next) = found.pop_front() {
                let Ok(Some(bytes)) = next.await else { break };
                let (key, slot) = &run[served];
                this.cache.fill(key, slot, Ok(bytes));
                served += 1;
                while found.len() < LOOK_AHEAD && served + found.len() < run.len() {
                    found.push_back(lookup(served + found.len()));
                }
            }
            found.iter().for_each(|lookup| lookup.abort());
            let rest: Vec<_> = run.into_iter().skip(served).collect();
            this.start_network_fetch(rest, size, permit);
        });
    }
}
