//! The shared cache: a bucket near the cluster (S3 Express One Zone, MinIO, Ceph) that holds the
//! blocks of object versions one node fetched, for every node. A tier below the disk cache and
//! above the source: the fetch layer's GETs reach it through `Tiered`, which stands in for the
//! source store. A hit serves the block; a miss goes to the source, and the block goes up to the
//! cache behind the reader, dropped rather than slowing it. Keys name a digest of the version
//! (endpoint, bucket, key, ETag, size), so a new version is a new key and stale bytes are never
//! served; fetchfs never deletes from the bucket (a lifecycle rule expires it).

mod completing;
mod connect;
mod filling;
mod pieces;
mod pressure;
pub mod sealed;
mod tier;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use completing::complete_dropped;
pub use connect::connect;
use futures::StreamExt;
use pieces::{Covered, Pieces};
pub use pressure::CpuPressure;
use sealed::{Check, Identity, Unsealed};
pub use tier::Tiered;

use crate::cache::buffers::BufferPool;
use crate::metrics::SharedCacheMetrics;
use crate::store::{ObjectStore, Replace, StoreError};

/// Fills sent up at once.
const FILLS_AT_ONCE: usize = 16;
/// After two blocks of a version in a row were not in the cache, the next this many blocks of it
/// go straight to the source (a node reading what no node read yet pays one cache round trip per
/// this many, not one per GET), then the cache is asked again.
const SKIP_AHEAD: u64 = 16;
/// After this many lookups in a row found nothing (a node reading what no node read yet), only
/// one version in `COLD_SAMPLE` is looked up, until one is found: a node ahead of the others
/// pays a cache round trip per `COLD_SAMPLE` small files, not one per file.
const COLD_AFTER: u32 = 32;
const COLD_SAMPLE: u8 = 8;
/// Blocks dropped from a full queue that are remembered, to be sent up later (see `completing`).
const DROPPED_KEPT: usize = 16_384;
/// Versions whose misses are remembered.
const MISSES_KEPT: usize = 4096;
/// Longest a read waits for the cache before going to the source: it is meant to be near.
const GET_DEADLINE: Duration = Duration::from_secs(2);
/// Longest one fill may take.
const FILL_DEADLINE: Duration = Duration::from_secs(30);
/// After the cache failed to answer, reads go straight to the source this long.
const BACK_OFF: Duration = Duration::from_secs(30);

/// Where the shared cache is, and the key its blocks are tagged with: its settings, as
/// `config` checks them from the command line.
#[derive(Clone, Debug)]
pub struct SharedCacheSettings {
    pub s3: crate::store::s3::S3Settings,
    /// Key prefix in its bucket, ending with `/` (or empty).
    pub prefix: String,
    pub key: Option<Vec<u8>>,
}

/// Where the shared cache is and how it checks what it reads.
pub struct SharedCacheConfig {
    /// Key prefix in the cache bucket, ending with `/` (or empty).
    pub prefix: String,
    /// The source's endpoint and bucket: part of every version's identity.
    pub scope: String,
    /// Bytes per cached block.
    pub block: u64,
    pub check: Check,
    /// Bytes of blocks waiting to go up, at most.
    pub queue_bytes: u64,
    /// Whether fills wait while the CPUs are contended (the node's pressure stall information).
    pub pressure: CpuPressure,
}

/// A block waiting to go up, sealed by the filling thread (not on the reader's path).
struct Fill {
    key: String,
    block: Unsealed,
    identity: Identity,
    offset: u64,
}

pub struct SharedCache<C> {
    store: Arc<C>,
    config: SharedCacheConfig,
    /// Reads skip the cache until this many milliseconds after `started` (it stopped answering).
    skip_until_ms: AtomicU64,
    started: Instant,
    /// By version: the last block not found, and how many not found in a row before it.
    misses: Mutex<lru::LruCache<Identity, (u64, u32)>>,
    /// Lookups in a row, of any version, that found nothing.
    missed_in_a_row: AtomicU32,
    fills: tokio::sync::mpsc::Sender<Fill>,
    /// Buffers blocks are gathered and sent up in, back for the next block once sent: a fresh
    /// one is mapped and zeroed page by page, which cost more CPU than the copy into it.
    buffers: Arc<BufferPool>,
    pieces: Mutex<Pieces>,
    /// Blocks the queue dropped, oldest first, and when a reader last filled one (milliseconds
    /// after `started`): they go up once the readers have been quiet for a while.
    dropped: Mutex<VecDeque<Dropped>>,
    last_fill_ms: AtomicU64,
    metrics: SharedCacheMetrics,
}

impl<C: ObjectStore> SharedCache<C> {
    /// The cache in `store`; its fills are sealed and sent up through `fill_store` by a thread of
    /// their own at the lowest CPU priority (see `filling`).
    pub fn start(
        store: Arc<C>,
        fill_store: Arc<C>,
        config: SharedCacheConfig,
        metrics: SharedCacheMetrics,
    ) -> Result<Arc<Self>, String> {
        let slots = (config.queue_bytes / config.block.max(1)).max(1) as usize;
        // The queue's share of the budget holds the free buffers as well as the queued ones.
        let buffers = BufferPool::new(sealed::HEADER_LEN + config.block as usize, slots.min(FILLS_AT_ONCE * 2));
        let (fills, queued) = tokio::sync::mpsc::channel(slots);
        let pressure = config.pressure.clone();
        let sender = Sender {
            store: fill_store,
            check: config.check.clone(),
            buffers: Arc::clone(&buffers),
            metrics: metrics.clone(),
        };
        filling::start(sender.send_all(queued, pressure))
            .map_err(|e| format!("starting the shared cache's filling thread: {e}"))?;
        let misses = Mutex::new(lru::LruCache::new(
            std::num::NonZeroUsize::new(MISSES_KEPT).unwrap_or(std::num::NonZeroUsize::MIN),
        ));
        Ok(Arc::new(Self {
            store,
            config,
            skip_until_ms: AtomicU64::new(0),
            started: Instant::now(),
            misses,
            missed_in_a_row: AtomicU32::new(0),
            fills,
            buffers,
            pieces: Mutex::new(Pieces::default()),
            dropped: Mutex::new(VecDeque::new()),
            last_fill_ms: AtomicU64::new(0),
            metrics,
        }))
    }

    fn misses(&self) -> MutexGuard<'_, lru::LruCache<Identity, (u64, u32)>> {
        crate::sync::lock(&self.misses)
    }

    /// Whether block `index` of the version is better not asked for: the blocks just before it
    /// were all missing.
    fn likely_missing(&self, identity: &Identity, index: u64) -> bool {
        // Sampled by the version's digest, so every node asks of the same versions and a node
        // behind finds what one ahead of it filled.
        if self.missed_in_a_row.load(Ordering::Relaxed) >= COLD_AFTER && identity[0] % COLD_SAMPLE != 0 {
            return true;
        }
        let misses = self.misses().get(identity).copied();
        misses.is_some_and(|(last, in_a_row)| in_a_row >= 2 && index > last && index - last <= SKIP_AHEAD)
    }

    fn found(&self, identity: &Identity, index: u64, present: bool) {
        if present {
            self.missed_in_a_row.store(0, Ordering::Relaxed);
        } else {
            let _ = self.missed_in_a_row.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
        }
        let mut misses = self.misses();
        if present {
            misses.pop(identity);
            return;
        }
        let in_a_row = misses.get(identity).map_or(0, |&(_, n)| n);
        misses.put(*identity, (index, in_a_row.saturating_add(1)));
    }

    pub fn block(&self) -> u64 {
        self.config.block
    }

    fn identity(&self, key: &str, etag: &str, size: u64) -> Identity {
        sealed::identity(&self.config.scope, key, etag, size)
    }

    fn object_key(&self, identity: &Identity, index: u64) -> String {
        let hex: String = identity.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}{hex}/{index}", self.config.prefix)
    }

    /// Offset and length of block `index` of a `size`-byte object.
    fn block_span(&self, index: u64, size: u64) -> (u64, u64) {
        let offset = index * self.config.block;
        (offset, self.config.block.min(size.saturating_sub(offset)))
    }

    /// Block `index` of the version, if the cache holds it and it checks out.
    pub async fn get(&self, key: &str, etag: &str, size: u64, index: u64) -> Option<Bytes> {
        let identity = self.identity(key, etag, size);
        let (offset, len) = self.block_span(index, size);
        let now_ms = self.now_ms();
        if now_ms < self.skip_until_ms.load(Ordering::Relaxed) || self.likely_missing(&identity, index) {
            self.metrics.misses.inc();
            return None;
        }
        let object_key = self.object_key(&identity, index);
        let getting = self.store.get_whole(&object_key, sealed::HEADER_LEN as u64 + len);
        let found = match tokio::time::timeout(GET_DEADLINE, getting).await {
            Ok(Ok(found)) => found,
            Ok(Err(StoreError::NotFound)) => {
                self.metrics.misses.inc();
                self.found(&identity, index, false);
                return None;
            }
            Ok(Err(StoreError::TooLong(length))) => {
                self.metrics.misses.inc();
                self.metrics.integrity_failures.inc();
                tracing::warn!(
                    key,
                    etag,
                    index,
                    length,
                    "shared cache: a cached block was refused by its length, unread (longer than a block and its \
                     seal); reading from the source"
                );
                return None;
            }
            answer => {
                self.metrics.misses.inc();
                let why = match answer {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {} s", GET_DEADLINE.as_secs()),
                };
                let until = now_ms + BACK_OFF.as_millis() as u64;
                if self.skip_until_ms.swap(until, Ordering::Relaxed) <= now_ms {
                    tracing::warn!("shared cache: {why}; reads go to the source for {} s", BACK_OFF.as_secs());
                }
                return None;
            }
        };
        match sealed::open(&self.config.check, &identity, offset, len, found) {
            Ok(bytes) => {
                self.found(&identity, index, true);
                self.metrics.hits.inc();
                self.metrics.read_bytes.inc_by(len);
                Some(bytes)
            }
            Err(why) => {
                self.metrics.integrity_failures.inc();
                tracing::warn!(
                    key,
                    etag,
                    index,
                    "shared cache: a cached block was refused: {why}; reading from the source"
                );
                None
            }
        }
    }

    /// `bytes` at `at` within block `index` of the version, received apart from the rest of the
    /// block (a GET that began or ended inside it): the block goes up once its pieces cover it.
    pub fn fill_piece(&self, key: &str, etag: &str, size: u64, index: u64, at: u64, bytes: Bytes) {
        let (_, len) = self.block_span(index, size);
        let identity = self.identity(key, etag, size);
        let covered = crate::sync::lock(&self.pieces).add(identity, index, len, at, bytes);
        match covered {
            Some(Covered::Bytes(pieces)) => {
                let mut block = self.unsealed();
                pieces.iter().for_each(|piece| block.extend_from_slice(piece));
                self.fill(key, etag, size, index, block);
            }
            // Fetched whole again once the readers are quiet, as a block the queue dropped is.
            Some(Covered::LetGo) => self.drop_fill(key, etag, size, index),
            None => {}
        }
    }

    /// An empty block to gather bytes in for `fill`.
    pub fn unsealed(&self) -> Unsealed {
        Unsealed::in_buffer(self.buffers.take())
    }

    /// Queues block `index` of the version to go up; if the queue is full, it is dropped and
    /// remembered, to go up once the node is idle.
    pub fn fill(&self, key: &str, etag: &str, size: u64, index: u64, block: Unsealed) {
        self.last_fill_ms.store(self.now_ms(), Ordering::Relaxed);
        if self.fills.try_send(self.fill_of(key, etag, size, index, block)).is_err() {
            self.drop_fill(key, etag, size, index);
        }
    }

    /// Whether the fill queue has room now: when it has none, a block about to pass by is
    /// dropped at once rather than copied to be dropped when it is whole.
    pub fn has_room(&self) -> bool {
        self.fills.capacity() > 0
    }

    /// Block `index` of the version will not go up now: it is remembered, to go up once the node
    /// is idle.
    pub fn drop_fill(&self, key: &str, etag: &str, size: u64, index: u64) {
        self.last_fill_ms.store(self.now_ms(), Ordering::Relaxed);
        self.metrics.fills_dropped.inc();
        let mut dropped = self.lock_dropped();
        if dropped.len() >= DROPPED_KEPT {
            dropped.pop_front();
        }
        dropped.push_back(Dropped { key: key.to_owned(), etag: etag.to_owned(), size, index });
    }

    /// Block `index` of the version, to go up under its cache key.
    fn fill_of(&self, key: &str, etag: &str, size: u64, index: u64, block: Unsealed) -> Fill {
        let identity = self.identity(key, etag, size);
        let (offset, _) = self.block_span(index, size);
        Fill { key: self.object_key(&identity, index), block, identity, offset }
    }

    fn lock_dropped(&self) -> MutexGuard<'_, VecDeque<Dropped>> {
        crate::sync::lock(&self.dropped)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Up to `n` dropped blocks to send up now, if no reader filled one for `quiet`.
    fn dropped_if_quiet(&self, quiet: Duration, n: usize) -> Vec<Dropped> {
        let since = self.now_ms().saturating_sub(self.last_fill_ms.load(Ordering::Relaxed));
        if since < quiet.as_millis() as u64 {
            return Vec::new();
        }
        let mut dropped = self.lock_dropped();
        let n = n.min(dropped.len());
        dropped.drain(..n).collect()
    }

    /// Room in the queue for a block fetched again, waited for before it is fetched.
    async fn room(&self) -> Option<tokio::sync::mpsc::Permit<'_, Fill>> {
        self.fills.reserve().await.ok()
    }

    /// A dropped block fetched again, into the room kept for it.
    fn refill(&self, room: tokio::sync::mpsc::Permit<'_, Fill>, block: Dropped, bytes: Unsealed) {
        room.send(self.fill_of(&block.key, &block.etag, block.size, block.index, bytes));
        self.metrics.fills_completed.inc();
    }
}

/// A block the fill queue had no room for.
pub struct Dropped {
    pub key: String,
    pub etag: String,
    pub size: u64,
    pub index: u64,
}

/// What the filling thread needs to seal blocks and send them up.
struct Sender<C> {
    store: Arc<C>,
    check: Check,
    buffers: Arc<BufferPool>,
    metrics: SharedCacheMetrics,
}

impl<C: ObjectStore> Sender<C> {
    /// Sends up what is queued, FILLS_AT_ONCE at a time, until the cache is dropped; each fill
    /// first waits for the CPUs to calm (while it waits, the queue fills and readers drop blocks).
    async fn send_all(self, queued: tokio::sync::mpsc::Receiver<Fill>, pressure: CpuPressure) {
        let calmed = futures::stream::unfold((queued, pressure), |(mut queued, mut pressure)| async move {
            let fill = queued.recv().await?;
            pressure.wait_for_idle_cpu().await;
            Some((fill, (queued, pressure)))
        });
        calmed.for_each_concurrent(FILLS_AT_ONCE, |fill| self.send(fill)).await;
    }

    async fn send(&self, fill: Fill) {
        let Fill { key, block, identity, offset } = fill;
        let body = self.buffers.freeze(block.seal(&self.check, &identity, offset));
        let len = body.len() as u64;
        let putting = self.store.put_object(&key, body, Replace::Allowed);
        match tokio::time::timeout(FILL_DEADLINE, putting).await {
            Ok(Ok(_)) => {
                self.metrics.written_bytes.inc_by(len);
            }
            Ok(Err(e)) => {
                self.metrics.fills_failed.inc();
                tracing::debug!(key, "shared cache: a fill failed: {e}");
            }
            Err(_) => {
                self.metrics.fills_failed.inc();
                tracing::debug!(key, "shared cache: a fill took over {} s", FILL_DEADLINE.as_secs());
            }
        }
    }
}
