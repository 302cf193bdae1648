//! The fetch layer: which blocks a read needs now, which it will need next (readahead), and the
//! ranged GETs that bring them, streamed into the block cache as bytes arrive so a reader can use
//! a part's first block before the part is complete. Knows nothing of FUSE.

pub mod active_streams;
mod ahead;
mod below;
pub mod body;
mod filling;
mod on_disk;
pub mod readahead;
mod reading;
mod refill;
mod spans;
pub mod stream;
pub mod streams;

use std::ops::{Range, RangeInclusive};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::cache::BlockCache;
use crate::cache::buffers::BufferPool;
use crate::in_flight::InFlight;
use crate::memory_budget;
use crate::metrics::Metrics;
use crate::store::ObjectStore;
use active_streams::ActiveStreams;
pub use below::Tiers;
pub use body::BodyPolicy;
pub use readahead::WindowLimits;
use spans::SpanBudget;
use stream::ReadStream;
pub use streams::VersionStreams;

/// A stream's state, shared by its reads and by the readahead they start.
type SharedStream = Arc<ReadStream>;

/// The streams of one object version, shared by its open handles.
pub type SharedStreams = Arc<VersionStreams>;

#[derive(Clone, Copy, Debug)]
pub struct FetchConfig {
    /// Unit of caching (default 1 MiB).
    pub block_size: u64,
    /// Bytes per ranged GET of readahead; objects up to this size are fetched whole.
    pub part_size: u64,
    /// Largest readahead window of one stream.
    pub max_readahead: u64,
    /// Memory budget of the block cache, for the whole mount.
    pub cache_bytes: u64,
    /// Most readahead GETs in flight at once; reads a process waits on are never queued behind them.
    pub max_connections: usize,
    /// When a body that stopped is resumed.
    pub body: BodyPolicy,
    /// Bytes of blocks on their way up to the shared cache (0 without one): taken from the
    /// budget like the disk's.
    pub shared_fill_bytes: u64,
}

impl Default for FetchConfig {
    fn default() -> Self {
        const MIB: u64 = 1024 * 1024;
        // Measured with the benchmark (mount-tests/src/bin/bench.rs) on the s3-like profile: 4 MiB
        // parts over 32 connections reach the raw ceiling where 8 MiB parts over 16 reach 0.8 of it.
        Self {
            block_size: MIB,
            part_size: 4 * MIB,
            max_readahead: 128 * MIB,
            cache_bytes: 512 * MIB,
            max_connections: 32,
            body: BodyPolicy::default(),
            shared_fill_bytes: 0,
        }
    }
}

impl FetchConfig {
    /// The share of the memory budget for blocks waiting to be written to the disk cache.
    pub fn disk_fill_bytes(&self) -> u64 {
        memory_budget::disk_fills(self.cache_bytes)
    }
}

/// Versions opened on disk at once for prefetches (a burst of next files, the prefetch queue):
/// not through the disk's deadline, since a long queue of them is not a stalled disk.
const BACKGROUND_OPENS: usize = 4;

/// GETs at once for one file filled on disk: several files go at once, each a few parts at a time.
const RUNS_PER_FILE: usize = 4;

/// Fewest GETs a readahead range is split into, while parts are smaller than the part size.
const PARALLEL_SPLIT: u64 = 4;

/// What a part of a block fetched ahead for one stream becomes when spans hold their share of the
/// memory budget.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OverBudget {
    /// Its whole blocks, into the cache (a window's first block, a predicted run's last).
    WholeBlocks,
    /// Nothing: the reads fetch their own bytes. A young run's lead: its blocks whole would fetch
    /// again what its earlier leads did (pyarrow's column went from 1.27 to 1.45 bytes per byte).
    Nothing,
}

/// What readahead does with blocks of its range that the reader went past before a connection
/// permit came for them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PassedBlocks {
    /// Left out: the reader read them and let them go, and would not read them again.
    Skipped,
    /// Fetched whole all the same, for the disk cache: the reader took only its own bytes of
    /// them (a young run's reads do), and the next open is to find every block it went through.
    Fetched,
}

pub struct Fetcher<S> {
    store: Arc<S>,
    cache: Arc<BlockCache>,
    buffers: Arc<BufferPool>,
    config: FetchConfig,
    prefetch_permits: Arc<Semaphore>,
    span_budget: SpanBudget,
    streams: ActiveStreams,
    tiers: Tiers,
    /// Started with the first fetch: the task that fetches again what the tiers dropped.
    refilling: std::sync::Once,
    /// Held by the one version being completed on disk at a time.
    completing: tokio::sync::Mutex<()>,
    /// Versions queued or being completed on disk: what a clean unmount waits for.
    completions: InFlight,
    /// Opens of versions on disk for work in the background, at once: a stalled disk holds
    /// these threads of the blocking pool, no more.
    background_opens: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}
impl<S: ObjectStore> Fetcher<S> {
    /// A fetcher whose reads go to the `tiers` in order before the source, `store`.
    pub fn new(store: Arc<S>, config: FetchConfig, tiers: Tiers, metrics: Arc<Metrics>) -> Self {
        let shares = memory_budget::read_shares(
            config.cache_bytes,
            config.block_size,
            config.max_connections,
            tiers.disk().is_some(),
            config.shared_fill_bytes,
        );
        Self {
            store,
            cache: Arc::new(BlockCache::new(shares.blocks, metrics.prefetched_unread_bytes.clone())),
            buffers: BufferPool::new(config.block_size as usize, shares.free_buffers as usize),
            prefetch_permits: Arc::new(Semaphore::new(config.max_connections.max(1))),
            span_budget: SpanBudget::new(shares.spans),
            streams: ActiveStreams::default(),
            tiers,
            refilling: std::sync::Once::new(),
            completing: tokio::sync::Mutex::new(()),
            completions: InFlight::default(),
            background_opens: Arc::new(Semaphore::new(BACKGROUND_OPENS)),
            config,
            metrics,
        }
    }

    pub fn has_disk_cache(&self) -> bool {
        self.tiers.disk().is_some()
    }

    /// The disk cache's cap, when there is one.
    pub fn disk_cap(&self) -> Option<u64> {
        self.tiers.disk().map(|d| d.cap())
    }

    /// What more fits in the disk cache without evicting, when there is one.
    pub fn disk_room(&self) -> Option<u64> {
        self.tiers.disk().map(|d| d.room())
    }

    pub fn cache(&self) -> &BlockCache {
        &self.cache
    }

    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Blocks in a part: the most one GET of readahead brings.
    fn part_blocks(&self) -> u64 {
        (self.config.part_size / self.config.block_size).max(1)
    }

    /// The blocks `range` touches (the one holding its start, when it is empty).
    fn blocks_of(&self, range: &Range<u64>) -> RangeInclusive<u64> {
        let bs = self.config.block_size;
        range.start / bs..=(range.end.max(range.start + 1) - 1) / bs
    }

    /// The bytes of block `index` of an object of `size` bytes.
    fn block_range(&self, index: u64, size: u64) -> Range<u64> {
        let bs = self.config.block_size;
        index * bs..((index + 1) * bs).min(size)
    }

    /// The windows of all the streams reading at once share three quarters of the cache, so blocks
    /// fetched ahead are not evicted before they are read: eight readers, each with a window of a
    /// quarter of the cache, fetched 1.27 bytes per byte they read.
    fn window_limits(&self, now: Instant) -> WindowLimits {
        let streams = self.streams.reading(now).max(1) as u64;
        let share = memory_budget::readahead_windows(self.cache.budget()) / streams;
        let max = self.config.max_readahead.min(share).max(self.config.block_size);
        WindowLimits { initial: self.config.block_size, max, stop_at: None }
    }
}

#[cfg(test)]
mod kernel_patterns;
#[cfg(test)]
mod tests;
