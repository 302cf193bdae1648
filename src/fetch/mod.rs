//! The fetch layer: which blocks a read needs now, which it will need next (readahead), and the
//! ranged GETs that bring them, streamed into the block cache as bytes arrive so a reader can use
//! a part's first block before the part is complete. Knows nothing of FUSE.

pub mod active_streams;
pub mod body;
pub mod readahead;
mod spans;
pub mod stream;
pub mod streams;

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::buffers::BufferPool;
use crate::cache::disk::{DiskCache, VersionFile};
use crate::cache::{BlockCache, BlockKey, BlockSlot, Lookup};
use crate::in_flight::InFlight;
use crate::metrics::Metrics;
use crate::object_id::ObjectId;
use crate::store::{ObjectStore, StoreError};
use active_streams::ActiveStreams;
pub use body::BodyPolicy;
use body::ResumingBody;
pub use readahead::{ReadPlan, ReadaheadWindow, WindowLimits};
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
        self.cache_bytes / DISK_FILL_SHARE
    }
}

/// One eighth of the memory budget holds blocks on their way to the disk cache: a 1 GiB read at
/// loopback speed outruns the disk's writer only briefly, and a full queue drops fills, never
/// slows a reader.
const DISK_FILL_SHARE: u64 = 8;

/// One sixty-fourth of the memory budget holds spans, parts of blocks fetched ahead for one
/// stream (two per column chunk a reader is in, each under a block; 8 MiB by default, for four
/// such readers at once); beyond it, readahead fetches whole blocks into the cache. A sixteenth
/// taken from the cache slowed eight sequential readers of their own files (s3-like, 857-989
/// MB/s in nine runs, against 1019-1110 in four runs that left the cache its whole share).
const SPAN_SHARE: u64 = 64;

/// Versions opened on disk at once for prefetches (a burst of next files, the prefetch queue):
/// not through the disk's deadline, since a long queue of them is not a stalled disk.
const BACKGROUND_OPENS: usize = 4;

/// GETs at once for one file filled on disk: several files go at once, each a few parts at a time.
const RUNS_PER_FILE: usize = 4;

/// Fewest GETs a readahead range is split into, while parts are smaller than the part size.
const PARALLEL_SPLIT: u64 = 4;

/// Share of the memory budget kept as free block buffers, for reuse once their blocks leave the
/// cache. A sequential reader gives back blocks in bursts (readahead tops its window up a quarter
/// at a time), and buffers beyond the free list go back to the allocator only for the next ones
/// to be faulted in fresh: a 1 GiB `dd` on loopback faulted in ~62,000 pages with 16 free buffers
/// and ~18,000 with 64 (an eighth of the default budget), and ran 5-9 % faster.
const FREE_BUFFER_SHARE: u64 = 8;

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
    disk: Option<Arc<DiskCache>>,
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
    /// A fetcher whose reads go to `disk` before the network, when there is a disk cache.
    pub fn new(store: Arc<S>, config: FetchConfig, disk: Option<Arc<DiskCache>>, metrics: Arc<Metrics>) -> Self {
        let in_flight = config.max_connections as u64 * config.block_size;
        let free_buffers = config.cache_bytes / FREE_BUFFER_SHARE / config.block_size;
        let disk_fills = if disk.is_some() { config.disk_fill_bytes() } else { 0 };
        let spans = if disk.is_some() { 0 } else { config.cache_bytes / SPAN_SHARE };
        // Blocks being received (one per GET in flight), free buffers, blocks waiting for the disk
        // or the shared cache, and spans live outside the cache; the one budget covers them all.
        let outside = in_flight + free_buffers * config.block_size + disk_fills + config.shared_fill_bytes + spans;
        let budget = config.cache_bytes.saturating_sub(outside).max(config.block_size);
        Self {
            store,
            cache: Arc::new(BlockCache::new(budget, metrics.prefetched_unread_bytes.clone())),
            buffers: BufferPool::new(config.block_size as usize, free_buffers as usize),
            prefetch_permits: Arc::new(Semaphore::new(config.max_connections.max(1))),
            span_budget: SpanBudget::new(spans),
            streams: ActiveStreams::default(),
            disk,
            completing: tokio::sync::Mutex::new(()),
            completions: InFlight::default(),
            background_opens: Arc::new(Semaphore::new(BACKGROUND_OPENS)),
            config,
            metrics,
        }
    }

    pub fn has_disk_cache(&self) -> bool {
        self.disk.is_some()
    }

    /// The disk cache's cap, when there is one.
    pub fn disk_cap(&self) -> Option<u64> {
        self.disk.as_ref().map(|d| d.cap())
    }

    pub fn cache(&self) -> &BlockCache {
        &self.cache
    }

    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// The windows of all the streams reading at once share three quarters of the cache, so blocks
    /// fetched ahead are not evicted before they are read: eight readers, each with a window of a
    /// quarter of the cache, fetched 1.27 bytes per byte they read.
    fn window_limits(&self, now: Instant) -> WindowLimits {
        let streams = self.streams.reading(now).max(1) as u64;
        let share = self.cache.budget() / 4 * 3 / streams;
        let max = self.config.max_readahead.min(share).max(self.config.block_size);
        WindowLimits { initial: self.config.block_size, max, stop_at: None }
    }

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
    fn let_go_of_consumed(&self, object: &Arc<ObjectId>, read_all: &[u64]) {
        for &index in read_all {
            self.cache.release(&BlockKey { object: Arc::clone(object), index });
        }
    }

    /// The version's copy on disk, opened and checked against its record (blocking file I/O), and
    /// when it is whole, a read-only descriptor of it for the kernel to read from itself.
    pub fn open_on_disk(&self, object: &ObjectId, size: u64) -> Option<std::fs::File> {
        let version = self.disk.as_ref()?.open_version_in_time(object, size)?;
        if !version.is_complete() {
            return None;
        }
        version.reader().ok()
    }

    /// A newer version of the object is known and nothing reads this one: its disk copy goes.
    pub fn forget_version(&self, object: &ObjectId, size: u64) {
        if let Some(disk) = &self.disk {
            disk.forget_version(object, size);
        }
    }

    /// Fetches, in the background, the blocks of a version that a reader went through to its end
    /// but that did not reach the disk (its writer is slower than the network, so fills were
    /// dropped): the next open of it is then served whole from disk, by the kernel. One version at
    /// a time, with readahead's connection permits, so readers waiting go first.
    pub fn complete_on_disk(self: &Arc<Self>, object: Arc<ObjectId>, size: u64) {
        let Some(disk) = self.disk.clone() else { return };
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
    async fn fill_missing_on_disk(
        &self,
        disk: &DiskCache,
        version: &Arc<VersionFile>,
        object: &Arc<ObjectId>,
        size: u64,
    ) -> Result<u64, StoreError> {
        let bs = self.config.block_size;
        let part_blocks = (self.config.part_size / bs).max(1) as usize;
        let mut runs: Vec<Vec<u64>> = Vec::new();
        for index in version.missing() {
            match runs.last_mut() {
                Some(run) if run.len() < part_blocks && run.last() == Some(&(index - 1)) => run.push(index),
                _ => runs.push(vec![index]),
            }
        }
        let fetch_run = |run: Vec<u64>| async move {
            let (first, last) = (run[0], run[run.len() - 1]);
            let range = first * bs..((last + 1) * bs).min(size);
            let permit =
                self.prefetch_permits.acquire().await.map_err(|_| StoreError::Other("shutting down".into()))?;
            let bytes = self.read_direct(object, range.clone()).await?;
            for index in run {
                let start = (index * bs - range.start) as usize;
                let end = (((index + 1) * bs).min(size) - range.start) as usize;
                disk.fill_in_background(version, index, bytes.slice(start..end)).await;
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
        if let Some(disk) = &self.disk {
            if let Some(version) = self.open_in_background(disk, &object, size).await {
                let fetched = self.fill_missing_on_disk(disk, &version, &object, size).await?;
                // Whole once the writer has taken what was queued: an open after the fetch is
                // then passed through, with no GET.
                let deadline = Instant::now() + std::time::Duration::from_secs(10);
                while !version.is_complete() && Instant::now() < deadline && !version.is_gone() {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                return Ok(fetched);
            }
        }
        self.fetch_into_memory(&object, size, limit).await
    }

    /// The version on disk, opened for work in the background (see `BACKGROUND_OPENS`); when it is
    /// whole there, its first part is read into the page cache ahead of its reader.
    async fn open_in_background(
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

    /// Fetches the first `limit` bytes of a version into the block cache, a part per GET, each
    /// with a readahead connection permit, and waits for them.
    async fn fetch_into_memory(
        self: &Arc<Self>,
        object: &Arc<ObjectId>,
        size: u64,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let end = size.min(limit.max(1));
        if end == 0 {
            return Ok(0);
        }
        let bs = self.config.block_size;
        let part_blocks = (self.config.part_size / bs).max(1);
        let last = (end - 1) / bs;
        let mut slots = Vec::new();
        let mut fetched = 0;
        let mut first = 0;
        while first <= last {
            let run_end = (first + part_blocks - 1).min(last);
            let permit = Arc::clone(&self.prefetch_permits)
                .acquire_owned()
                .await
                .map_err(|_| StoreError::Other("shutting down".into()))?;
            let permit = Arc::new(permit);
            slots.extend(self.claim(object, first..=run_end, part_blocks as usize, |run| {
                run.iter().for_each(|(_, slot)| slot.mark_ahead());
                fetched += run.iter().map(|(key, _)| ((key.index + 1) * bs).min(size) - key.index * bs).sum::<u64>();
                self.start_fetch(run, size, Some(Arc::clone(&permit)));
            }));
            first = run_end + 1;
        }
        for (_, slot) in slots {
            slot.wait().await?;
        }
        Ok(fetched)
    }

    /// Waits until what was read is on disk (versions being completed, blocks queued for the
    /// disk), at most `deadline`: a clean unmount keeps what this mount fetched. Says whether all
    /// of it got there.
    pub async fn settle_on_disk(&self, deadline: std::time::Duration) -> bool {
        let Some(disk) = &self.disk else { return true };
        let settled = async {
            while self.completions.count() > 0 || disk.fills_pending() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(deadline, settled).await.is_ok()
    }

    /// The version on disk, if it has block `index`.
    fn on_disk(&self, object: &ObjectId, size: u64, index: u64) -> Option<Arc<VersionFile>> {
        let version = self.disk.as_ref()?.opened(object, size)?;
        version.has(index).then_some(version)
    }

    /// `wanted` from the disk cache, if every block it touches is there and the disk answers in
    /// time.
    async fn read_from_disk(&self, object: &ObjectId, size: u64, wanted: &Range<u64>) -> Option<Bytes> {
        let disk = self.disk.as_ref()?;
        let bs = self.config.block_size;
        let version = self.on_disk(object, size, wanted.start / bs)?;
        if !(wanted.start / bs..=(wanted.end - 1) / bs).all(|index| version.has(index)) {
            return None;
        }
        disk.read(&version, wanted.clone(), Vec::new()).await.map(Bytes::from)
    }

    /// The slot of each block overlapping `wanted`, if it is cached or being fetched.
    fn cached_blocks(&self, object: &Arc<ObjectId>, wanted: &Range<u64>) -> Vec<Option<Arc<BlockSlot>>> {
        let bs = self.config.block_size;
        (wanted.start / bs..=(wanted.end - 1) / bs)
            .map(|index| self.cache.peek(&BlockKey { object: Arc::clone(object), index }))
            .collect()
    }

    /// Starts fetching what `plan` asks for ahead of the reader: its spans, then its blocks.
    fn fetch_ahead(self: &Arc<Self>, object: &Arc<ObjectId>, size: u64, stream: &SharedStream, plan: ReadPlan) {
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
    fn prefetch_behind(self: &Arc<Self>, object: Arc<ObjectId>, size: u64, range: Range<u64>) {
        let bs = self.config.block_size;
        let (first, last) = (range.start / bs, (range.end.max(range.start + 1) - 1) / bs);
        let part_blocks = (self.config.part_size / bs).max(1);
        let blocks_per_part = ((last - first + 1) / PARALLEL_SPLIT).clamp(1, part_blocks);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut top = last + 1;
            while top > first {
                let Ok(permit) = Arc::clone(&this.prefetch_permits).acquire_owned().await else { return };
                let permit = Arc::new(permit);
                let bottom = top.saturating_sub(blocks_per_part).max(first);
                this.claim(&object, bottom..=top - 1, blocks_per_part as usize, |run| {
                    run.iter().for_each(|(_, slot)| slot.mark_ahead());
                    this.start_fetch(run, size, Some(Arc::clone(&permit)))
                });
                top = bottom;
            }
        });
    }

    /// Fetches `range`, part of a block, ahead for `stream` alone, once a connection permit is
    /// free, in one GET. With a disk cache (whose budget for spans is 0) its blocks are fetched
    /// whole into the cache instead: every block a reader goes through is to reach the disk whole,
    /// so that the next open is served from there. When spans hold their share of the memory
    /// budget already, `over_budget` says what happens.
    fn fetch_span(
        self: &Arc<Self>,
        object: &Arc<ObjectId>,
        size: u64,
        stream: &SharedStream,
        range: Range<u64>,
        over_budget: OverBudget,
    ) {
        let Some(charge) = self.span_budget.charge(range.end - range.start) else {
            let passed = if self.disk.is_some() { PassedBlocks::Fetched } else { PassedBlocks::Skipped };
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
            fill.fetched(this.read_direct(&object, range).await);
        });
    }

    /// `wanted` without claiming blocks for it: what the cache held (`slots`) of its first and last
    /// blocks, and the rest from the stream's spans, the disk cache or in one GET of just those
    /// bytes. (Reads straddle blocks: the half of one before or after a block boundary may have
    /// come with readahead.)
    async fn read_own_bytes(
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
            pieces.push(match self.read_from_disk(object, size, &missing).await {
                Some(bytes) => bytes,
                None => {
                    self.metrics.cache_misses.inc();
                    self.read_direct(object, missing).await?
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

    async fn open_body(&self, object: &Arc<ObjectId>, range: Range<u64>) -> Result<ResumingBody<S>, StoreError> {
        let resumes = self.metrics.body_resumes.clone();
        ResumingBody::open(Arc::clone(&self.store), Arc::clone(object), range, self.config.body, resumes).await
    }

    /// One GET of exactly `wanted`, bypassing the block cache.
    async fn read_direct(&self, object: &Arc<ObjectId>, wanted: Range<u64>) -> Result<Bytes, StoreError> {
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

    /// Copies `wanted` out of the blocks, which start at the block containing the first byte asked
    /// for in `ensure`. A read within one block is a zero-copy slice. Also returns the blocks whose
    /// every byte has now been read.
    async fn assemble(
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

    /// Makes sure every block overlapping `range` is cached or being fetched, for a reader that is
    /// waiting: GETs for the missing blocks start at once (one per part-sized run), never queued
    /// behind readahead. Returns every block's slot.
    fn ensure(self: &Arc<Self>, object: &Arc<ObjectId>, size: u64, range: Range<u64>) -> Vec<(u64, Arc<BlockSlot>)> {
        let bs = self.config.block_size;
        let blocks = range.start / bs..=(range.end.max(range.start + 1) - 1) / bs;
        let part_blocks = (self.config.part_size / bs).max(1) as usize;
        let mut missing = 0;
        let slots = self.claim(object, blocks, part_blocks, |run| {
            missing += run.len() as u64;
            self.start_fetch(run, size, None)
        });
        self.metrics.cache_misses.inc_by(missing);
        self.metrics.cache_hits.inc_by(slots.len() as u64 - missing);
        slots
    }

    /// Fetches `range` ahead of the reader, in the background. Each part waits for a connection
    /// permit before its blocks are claimed, so until then a reader that needs them claims and
    /// fetches them itself instead of waiting behind readahead. `passed` says what becomes of
    /// blocks the reader has gone past meanwhile.
    fn prefetch(
        self: &Arc<Self>,
        object: Arc<ObjectId>,
        size: u64,
        stream: SharedStream,
        range: Range<u64>,
        passed: PassedBlocks,
    ) {
        let bs = self.config.block_size;
        let (first, last) = (range.start / bs, (range.end.max(range.start + 1) - 1) / bs);
        // A window still growing is split into PARALLEL_SPLIT GETs (of whole blocks), so that
        // even the first, small windows are fetched over several connections; streams reading at
        // once each have their own, and split theirs less.
        let part_blocks = (self.config.part_size / bs).max(1);
        let split = (PARALLEL_SPLIT / self.streams.reading(Instant::now()).max(1) as u64).max(1);
        let blocks_per_part = ((last - first + 1) / split).clamp(1, part_blocks);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut index = first;
            while index <= last {
                let Ok(permit) = Arc::clone(&this.prefetch_permits).acquire_owned().await else { return };
                let permit = Arc::new(permit);
                let part_end = (index + blocks_per_part - 1).min(last);
                // The stream's lock is held while claiming, so the reader cannot pass these blocks
                // between the check and the claim.
                let window = stream.window();
                let unread = match passed {
                    PassedBlocks::Skipped => index.max(window.position() / bs),
                    PassedBlocks::Fetched => index,
                };
                if unread <= part_end {
                    this.claim(&object, unread..=part_end, blocks_per_part as usize, |run| {
                        run.iter().for_each(|(_, slot)| slot.mark_ahead());
                        this.start_fetch(run, size, Some(Arc::clone(&permit)))
                    });
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
        let blocks = 0..=(end - 1) / self.config.block_size;
        let run = blocks.clone().count();
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Some(disk) = &this.disk {
                // Opened now so that its blocks on disk are read from there, and what comes from
                // the network is written there. A version whole on disk needs nothing fetched.
                let version = this.open_in_background(disk, &object, size).await;
                if version.is_some_and(|v| v.is_complete()) {
                    return;
                }
            }
            let Ok(permit) = Arc::clone(&this.prefetch_permits).acquire_owned().await else { return };
            let permit = Arc::new(permit);
            this.claim(&object, blocks, run, |run| {
                run.iter().for_each(|(_, slot)| slot.mark_ahead());
                this.start_fetch(run, size, Some(Arc::clone(&permit)))
            });
        });
    }

    /// Claims the missing blocks among `blocks` and hands them to `fetch` in runs of consecutive
    /// blocks, at most `max_run` long; returns the slots of all the blocks.
    fn claim(
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

    /// Fetches a run of claimed blocks: those on disk from there, one at a time, the others from
    /// the network in runs of consecutive blocks.
    fn start_fetch(
        self: &Arc<Self>,
        run: Vec<(BlockKey, Arc<BlockSlot>)>,
        size: u64,
        permit: Option<Arc<OwnedSemaphorePermit>>,
    ) {
        if self.disk.is_none() {
            return self.start_network_fetch(run, size, permit);
        }
        let mut network = Vec::new();
        for (key, slot) in run {
            match self.on_disk(&key.object, size, key.index) {
                Some(version) => {
                    if !network.is_empty() {
                        self.start_network_fetch(std::mem::take(&mut network), size, permit.clone());
                    }
                    self.start_disk_read(key, slot, version, size);
                }
                None => network.push((key, slot)),
            }
        }
        if !network.is_empty() {
            self.start_network_fetch(network, size, permit);
        }
    }

    /// Fills a block from the disk cache; if the disk fails or is slow, from the network.
    fn start_disk_read(self: &Arc<Self>, key: BlockKey, slot: Arc<BlockSlot>, version: Arc<VersionFile>, size: u64) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let bs = this.config.block_size;
            let range = key.index * bs..((key.index + 1) * bs).min(size);
            let buffer = this.block_buffer((range.end - range.start) as usize);
            let read = match &this.disk {
                Some(disk) => disk.read(&version, range, buffer).await,
                None => None,
            };
            match read {
                Some(bytes) => {
                    let block = this.buffers.freeze(bytes);
                    this.cache.fill(&key, &slot, Ok(block));
                }
                None => this.start_network_fetch(vec![(key, slot)], size, None),
            }
        });
    }

    /// One ranged GET for a run of consecutive claimed blocks, filled block by block as the body
    /// arrives; readahead holds its connection `permit` until the GET ends. Every block of the
    /// run is filled, with data or with the error.
    fn start_network_fetch(
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

    async fn stream_into_blocks(
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
                    if let Some(disk) = &self.disk {
                        disk.offer(object, size, key.index, &filled);
                    }
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
    fn block_buffer(&self, remaining: usize) -> Vec<u8> {
        if remaining >= self.buffers.buffer_size() { self.buffers.take() } else { Vec::with_capacity(remaining) }
    }
}

#[cfg(test)]
mod kernel_patterns;
#[cfg(test)]
mod tests;
