//! The shared cache: a bucket near the cluster (S3 Express One Zone, MinIO, Ceph) that holds the
//! blocks of object versions one node fetched, for every node. A tier below the disk cache and
//! above the source, behind the tier interface (`cache::tier`) the fetch layer asks. A hit serves
//! the block; a miss goes to the source, and the block goes up to the cache behind the reader,
//! through the fill queue, dropped rather than slowing it. Keys name a digest of the version
//! (endpoint, bucket, key, ETag, size), so a new version is a new key and stale bytes are never
//! served; fetchfs never deletes from the bucket (a lifecycle rule expires it).

mod connect;
mod filling;
mod pieces;
mod pressure;
pub mod sealed;

use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use connect::connect;
use futures::StreamExt;
use futures::future::BoxFuture;
use pieces::{Covered, Pieces};
pub use pressure::CpuPressure;
use sealed::{Check, Identity, Unsealed};

use crate::cache::buffers::BufferPool;
use crate::cache::fill_queue::{BlockOf, Drain, FillQueue, STALL};
use crate::cache::tier::BlockTier;
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

/// A block waiting to go up, copied behind its seal's room and sealed by the filling thread (not
/// on the reader's path).
struct Fill {
    key: String,
    block: Bytes,
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
    fills: FillQueue<Fill>,
    pieces: Mutex<Pieces>,
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
        // Buffers blocks are sealed and sent up in, back for the next block once sent: a fresh
        // one is mapped and zeroed page by page, which cost more CPU than the copy into it. The
        // queue's share of the budget holds them as well as the queued blocks.
        let buffers = BufferPool::new(sealed::HEADER_LEN + config.block as usize, slots.min(FILLS_AT_ONCE * 2));
        let (fills, queued) = FillQueue::new("shared cache", slots, metrics.fills_dropped.clone(), STALL);
        let pressure = config.pressure.clone();
        let sender = Sender { store: fill_store, check: config.check.clone(), buffers, metrics: metrics.clone() };
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
            pieces: Mutex::new(Pieces::default()),
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
    async fn get(&self, block: &BlockOf) -> Option<Bytes> {
        let (key, etag, index) = (block.object.key.as_str(), block.object.etag.as_str(), block.index);
        let identity = self.identity(key, etag, block.size);
        let (offset, len) = self.block_span(index, block.size);
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

    /// Block `block` to go up: queued, or dropped and remembered when the queue is full.
    fn fill(&self, block: &BlockOf, bytes: Bytes) {
        let identity = self.identity(&block.object.key, block.object.etag.as_str(), block.size);
        let (offset, _) = self.block_span(block.index, block.size);
        let fill = Fill { key: self.object_key(&identity, block.index), block: bytes, identity, offset };
        self.fills.offer(block, fill);
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

impl<C: ObjectStore> BlockTier for SharedCache<C> {
    fn name(&self) -> &'static str {
        "shared cache"
    }

    /// Copied out of the cache object into a recycled block buffer: the object's buffer goes at
    /// once (fresh buffers cost page faults), and none is held while the GET is under way.
    fn read<'a>(
        &'a self,
        block: &'a BlockOf,
        within: Range<u64>,
        buffers: &'a Arc<BufferPool>,
    ) -> BoxFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let bytes = self.get(block).await?;
            let start = block.index * self.config.block;
            let (from, to) = (within.start.saturating_sub(start) as usize, (within.end - start) as usize);
            if to > bytes.len() || from > to {
                return None;
            }
            let mut into = buffers.take_for(to - from);
            into.extend_from_slice(&bytes[from..to]);
            Some(buffers.freeze(into))
        })
    }

    fn offer(&self, block: &BlockOf, bytes: &Bytes) {
        self.fill(block, bytes.clone());
    }

    /// The block goes up once its pieces cover it.
    fn offer_piece(&self, block: &BlockOf, at: u64, bytes: Bytes) {
        let (_, len) = self.block_span(block.index, block.size);
        let identity = self.identity(&block.object.key, block.object.etag.as_str(), block.size);
        let covered = crate::sync::lock(&self.pieces).add(identity, block.index, len, at, bytes);
        match covered {
            Some(Covered::Bytes(pieces)) => {
                let mut whole = Vec::with_capacity(len as usize);
                pieces.iter().for_each(|piece| whole.extend_from_slice(piece));
                self.fill(block, Bytes::from(whole));
            }
            // Fetched whole again once the readers are quiet, as a block the queue dropped is.
            Some(Covered::LetGo) => self.fills.drop_fill(block.clone()),
            None => {}
        }
    }

    fn refill<'a>(&'a self, block: &'a BlockOf, bytes: Bytes) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let identity = self.identity(&block.object.key, block.object.etag.as_str(), block.size);
            let (offset, _) = self.block_span(block.index, block.size);
            let fill = Fill { key: self.object_key(&identity, block.index), block: bytes, identity, offset };
            if self.fills.push(fill).await {
                self.metrics.fills_completed.inc();
            }
        })
    }

    fn dropped_if_quiet(&self, quiet: Duration, n: usize) -> Vec<BlockOf> {
        self.fills.dropped_if_quiet(quiet, n)
    }

    fn fills_pending(&self) -> usize {
        self.fills.pending()
    }
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
    async fn send_all(self, queued: Drain<Fill>, pressure: CpuPressure) {
        let calmed = futures::stream::unfold((queued, pressure), |(mut queued, mut pressure)| async move {
            let fill = queued.next().await?;
            pressure.wait_for_idle_cpu().await;
            Some((fill, (queued, pressure)))
        });
        calmed.for_each_concurrent(FILLS_AT_ONCE, |fill| self.send(fill)).await;
    }

    async fn send(&self, queued: crate::cache::fill_queue::Queued<Fill>) {
        let Fill { key, block, identity, offset } = &queued.fill;
        let mut unsealed = Unsealed::in_buffer(self.buffers.take());
        unsealed.extend_from_slice(block);
        let body = self.buffers.freeze(unsealed.seal(&self.check, identity, *offset));
        let len = body.len() as u64;
        let putting = self.store.put_object(key, body, Replace::Allowed);
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
