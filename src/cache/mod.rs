//! The block cache: fixed-size blocks of object versions, keyed by (ObjectId, block index), in one
//! LRU under one byte budget for the whole mount. A block being fetched is in the cache already,
//! as a slot that later readers wait on, so two readers of one block cause one GET.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

use crate::object_id::ObjectId;
use crate::store::StoreError;

pub mod buffers;
pub mod disk;
pub mod fill_queue;
pub mod shared;
pub mod tier;

pub type BlockIndex = u64;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub object: Arc<ObjectId>,
    pub index: BlockIndex,
}

/// One block's bytes, once they have arrived (or the reason they will not).
#[derive(Default)]
pub struct BlockSlot {
    outcome: OnceLock<Result<Bytes, StoreError>>,
    filled: Notify,
    /// Claimed by readahead rather than by a reader.
    ahead: AtomicBool,
    /// Bytes of it readers have used, counted once per read (a read of the same bytes twice
    /// counts twice).
    bytes_read: AtomicU64,
}

impl BlockSlot {
    pub fn mark_ahead(&self) {
        self.ahead.store(true, Ordering::Relaxed);
    }

    /// A reader used `bytes` of it; returns the bytes used so far.
    pub fn note_read(&self, bytes: u64) -> u64 {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed) + bytes
    }

    fn fetched_for_nothing(&self) -> bool {
        self.ahead.load(Ordering::Relaxed) && self.bytes_read.load(Ordering::Relaxed) == 0
    }

    pub async fn wait(&self) -> Result<Bytes, StoreError> {
        loop {
            // Registered before the check, so a fill between the check and the await is not lost.
            let filled = self.filled.notified();
            if let Some(outcome) = self.outcome.get() {
                return outcome.clone();
            }
            filled.await;
        }
    }
}

struct Inner {
    blocks: LruCache<BlockKey, Arc<BlockSlot>>,
    /// Bytes of filled blocks currently in `blocks`.
    used: u64,
}

pub struct BlockCache {
    inner: Mutex<Inner>,
    budget: u64,
    /// Bytes evicted that readahead fetched and no reader used.
    unread_evictions: Counter,
}

/// The slot for a block, and whether the caller must fetch it.
pub enum Lookup {
    /// Filled, or being fetched by someone else: wait on it.
    Present(Arc<BlockSlot>),
    /// New: the caller fetches it and calls `fill`.
    Claimed(Arc<BlockSlot>),
}

impl BlockCache {
    pub fn new(budget: u64, unread_evictions: Counter) -> Self {
        Self { inner: Mutex::new(Inner { blocks: LruCache::unbounded(), used: 0 }), budget, unread_evictions }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change below keeps `used` equal to the filled bytes in `blocks` before unlocking.
        crate::sync::lock(&self.inner)
    }

    pub fn get_or_claim(&self, key: BlockKey) -> Lookup {
        let mut inner = self.lock();
        if let Some(slot) = inner.blocks.get(&key) {
            return Lookup::Present(Arc::clone(slot));
        }
        let slot = Arc::new(BlockSlot::default());
        inner.blocks.put(key, Arc::clone(&slot));
        Lookup::Claimed(slot)
    }

    /// The slot of a block that is cached or being fetched, without claiming it if not.
    pub fn peek(&self, key: &BlockKey) -> Option<Arc<BlockSlot>> {
        self.lock().blocks.get(key).cloned()
    }

    /// Lets a filled block go now, as if evicted; a block still being fetched stays.
    pub fn release(&self, key: &BlockKey) {
        let mut inner = self.lock();
        let filled_len = match inner.blocks.peek(key).and_then(|slot| slot.outcome.get()) {
            Some(Ok(bytes)) => bytes.len() as u64,
            _ => return,
        };
        inner.blocks.pop(key);
        inner.used -= filled_len;
    }

    /// Delivers a claimed block to its waiters. Data is kept under the budget, evicting the least
    /// recently used blocks; a failure is not kept, so the next reader tries again.
    pub fn fill(&self, key: &BlockKey, slot: &BlockSlot, outcome: Result<Bytes, StoreError>) {
        let len = outcome.as_ref().map_or(0, |b| b.len() as u64);
        let ok = outcome.is_ok();
        {
            // The outcome is set under the lock with the accounting, so a filled block in `blocks`
            // is always counted in `used`.
            let mut inner = self.lock();
            if slot.outcome.set(outcome).is_err() {
                return;
            }
            let still_cached = inner.blocks.peek(key).is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), slot));
            if still_cached && !ok {
                inner.blocks.pop(key);
            } else if still_cached {
                inner.used += len;
                self.evict_over_budget(&mut inner);
            }
        }
        slot.filled.notify_waiters();
    }

    fn evict_over_budget(&self, inner: &mut Inner) {
        while inner.used > self.budget {
            let Some((_, evicted)) = inner.blocks.pop_lru() else { break };
            if let Some(Ok(bytes)) = evicted.outcome.get() {
                inner.used -= bytes.len() as u64;
                if evicted.fetched_for_nothing() {
                    self.unread_evictions.inc_by(bytes.len() as u64);
                }
            }
        }
    }

    /// Most bytes of block data held at once.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes of block data held now.
    pub fn used(&self) -> u64 {
        self.lock().used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_id::ETag;

    fn key(index: u64) -> BlockKey {
        BlockKey { object: Arc::new(ObjectId { key: "k".into(), etag: ETag::new("\"e\"") }), index }
    }

    #[tokio::test]
    async fn a_second_reader_waits_for_the_first_fetch() {
        let cache = BlockCache::new(1 << 20, Counter::default());
        let Lookup::Claimed(slot) = cache.get_or_claim(key(0)) else { panic!("first lookup claims") };
        let Lookup::Present(waiter) = cache.get_or_claim(key(0)) else { panic!("second lookup waits") };
        let waiting = tokio::spawn(async move { waiter.wait().await });
        cache.fill(&key(0), &slot, Ok(Bytes::from_static(b"data")));
        assert_eq!(waiting.await.unwrap().unwrap(), Bytes::from_static(b"data"));
    }

    #[test]
    fn failures_are_not_cached() {
        let cache = BlockCache::new(1 << 20, Counter::default());
        let Lookup::Claimed(slot) = cache.get_or_claim(key(0)) else { panic!() };
        cache.fill(&key(0), &slot, Err(StoreError::PreconditionFailed));
        assert!(matches!(cache.get_or_claim(key(0)), Lookup::Claimed(_)), "the next reader fetches again");
    }

    #[test]
    fn never_holds_more_than_the_budget() {
        let unread = Counter::default();
        let cache = BlockCache::new(10_000, unread.clone());
        for i in 0..100 {
            let Lookup::Claimed(slot) = cache.get_or_claim(key(i)) else { panic!() };
            if i % 2 == 0 {
                slot.mark_ahead();
            }
            cache.fill(&key(i), &slot, Ok(Bytes::from(vec![0u8; 3000])));
            assert!(cache.used() <= 10_000, "used {} after block {i}", cache.used());
        }
        assert!(matches!(cache.get_or_claim(key(99)), Lookup::Present(_)), "the newest block stays");
        assert!(matches!(cache.get_or_claim(key(0)), Lookup::Claimed(_)), "the oldest was evicted");
        assert!(unread.get() >= 40 * 3000, "evicted blocks fetched ahead and never read are counted");
    }

    #[test]
    fn a_released_block_leaves_and_gives_back_its_bytes() {
        let cache = BlockCache::new(1 << 20, Counter::default());
        let Lookup::Claimed(slot) = cache.get_or_claim(key(0)) else { panic!() };
        let Lookup::Claimed(in_flight) = cache.get_or_claim(key(1)) else { panic!() };
        cache.fill(&key(0), &slot, Ok(Bytes::from(vec![0u8; 3000])));
        cache.release(&key(0));
        cache.release(&key(1));
        assert_eq!(cache.used(), 0);
        assert!(matches!(cache.get_or_claim(key(0)), Lookup::Claimed(_)), "released");
        assert!(matches!(cache.get_or_claim(key(1)), Lookup::Present(_)), "a block being fetched stays");
        cache.fill(&key(1), &in_flight, Ok(Bytes::from(vec![0u8; 100])));
        assert_eq!(cache.used(), 100);
    }
}
