//! The write-behind fill queue every tier below memory is filled through (the disk, the shared
//! cache). Bounded: a reader's block that finds it full is dropped, never waited for, and
//! remembered, so it can be fetched again once the readers are quiet. Background work (a file
//! completed on disk, a dropped block fetched again) waits for room instead. What is queued or
//! being written is counted until the tier is done with it, so an unmount can settle it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::in_flight::{Counted, InFlight};
use crate::object_id::ObjectId;

/// Dropped blocks remembered, per queue; the oldest are forgotten past it.
const DROPPED_KEPT: usize = 16_384;

/// A block of an object version: what a tier is offered and what a full queue remembers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockOf {
    pub object: Arc<ObjectId>,
    pub size: u64,
    pub index: u64,
}

/// A fill on its way to its tier, counted as pending until the tier drops it.
pub struct Queued<F> {
    pub fill: F,
    _pending: Counted,
}

pub struct FillQueue<F> {
    sender: mpsc::Sender<Queued<F>>,
    pending: InFlight,
    dropped: std::sync::Mutex<VecDeque<BlockOf>>,
    /// When a reader last offered a fill, in milliseconds after `started`.
    last_offer_ms: AtomicU64,
    started: Instant,
    /// Fills dropped because the queue was full.
    dropped_count: Counter,
}

/// The tier's end of the queue.
pub struct Drain<F>(mpsc::Receiver<Queued<F>>);

impl<F> Drain<F> {
    /// The next fill; `None` once the queue is gone.
    pub async fn next(&mut self) -> Option<Queued<F>> {
        self.0.recv().await
    }

    /// The next fill and up to `most - 1` more already queued, waiting on this thread (for a
    /// tier's own thread, outside any runtime); empty once the queue is gone.
    pub fn next_batch_blocking(&mut self, most: usize) -> Vec<Queued<F>> {
        let Some(first) = self.0.blocking_recv() else { return Vec::new() };
        let mut batch = vec![first];
        while batch.len() < most {
            match self.0.try_recv() {
                Ok(fill) => batch.push(fill),
                Err(_) => break,
            }
        }
        batch
    }
}

/// Room in the queue kept for one fill.
pub struct Room<'a, F> {
    permit: mpsc::Permit<'a, Queued<F>>,
    pending: &'a InFlight,
}

impl<F> Room<'_, F> {
    pub fn fill(self, fill: F) {
        self.permit.send(Queued { fill, _pending: self.pending.start() });
    }
}

impl<F> FillQueue<F> {
    /// A queue of at most `slots` fills; `dropped` counts the fills it had no room for.
    pub fn new(slots: usize, dropped: Counter) -> (Self, Drain<F>) {
        let (sender, receiver) = mpsc::channel(slots.max(1));
        let queue = Self {
            sender,
            pending: InFlight::default(),
            dropped: std::sync::Mutex::new(VecDeque::new()),
            last_offer_ms: AtomicU64::new(0),
            started: Instant::now(),
            dropped_count: dropped,
        };
        (queue, Drain(receiver))
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Queues a reader's fill of `block`, or drops and remembers it when the queue is full.
    pub fn offer(&self, block: &BlockOf, fill: F) {
        self.last_offer_ms.store(self.now_ms(), Ordering::Relaxed);
        if self.sender.try_send(Queued { fill, _pending: self.pending.start() }).is_err() {
            self.drop_fill(block.clone());
        }
    }

    /// `block` will not be filled now (the queue was full, or its bytes were not kept): it is
    /// remembered, to be fetched again once the readers are quiet.
    pub fn drop_fill(&self, block: BlockOf) {
        self.last_offer_ms.store(self.now_ms(), Ordering::Relaxed);
        self.dropped_count.inc();
        let mut dropped = crate::sync::lock(&self.dropped);
        if dropped.len() >= DROPPED_KEPT {
            dropped.pop_front();
        }
        dropped.push_back(block);
    }

    /// Queues a fill for work in the background, waiting for room rather than dropping it.
    /// Says whether it was queued (not when the tier is gone).
    pub async fn push(&self, fill: F) -> bool {
        match self.room().await {
            Some(room) => {
                room.fill(fill);
                true
            }
            None => false,
        }
    }

    /// Room for one fill, waited for: taken before a dropped block is fetched again, so nothing
    /// is fetched to be dropped again. `None` when the tier is gone.
    pub async fn room(&self) -> Option<Room<'_, F>> {
        let permit = self.sender.reserve().await.ok()?;
        Some(Room { permit, pending: &self.pending })
    }

    /// Up to `n` dropped blocks, oldest first, once no reader offered a fill for `quiet`.
    pub fn dropped_if_quiet(&self, quiet: Duration, n: usize) -> Vec<BlockOf> {
        let since = self.now_ms().saturating_sub(self.last_offer_ms.load(Ordering::Relaxed));
        if since < quiet.as_millis() as u64 {
            return Vec::new();
        }
        let mut dropped = crate::sync::lock(&self.dropped);
        let n = n.min(dropped.len());
        dropped.drain(..n).collect()
    }

    /// Fills queued or being written.
    pub fn pending(&self) -> usize {
        self.pending.count()
    }

    /// Blocks dropped and not yet taken to be fetched again.
    #[cfg(test)]
    pub fn dropped(&self) -> usize {
        crate::sync::lock(&self.dropped).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_id::ETag;

    fn block(index: u64) -> BlockOf {
        BlockOf { object: Arc::new(ObjectId { key: "k".into(), etag: ETag::new("\"e\"") }), size: 10, index }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_remembers_and_counts_what_is_pending_until_written() {
        let dropped = Counter::default();
        let (queue, mut drain) = FillQueue::new(2, dropped.clone());
        for i in 0..5 {
            queue.offer(&block(i), i);
        }
        assert_eq!((queue.pending(), dropped.get()), (2, 3));
        assert!(queue.dropped_if_quiet(Duration::from_secs(60), 10).is_empty(), "not while readers offer");
        let again: Vec<u64> = queue.dropped_if_quiet(Duration::ZERO, 2).iter().map(|b| b.index).collect();
        assert_eq!(again, [2, 3], "oldest first");
        let first = drain.next().await.expect("a fill");
        assert_eq!(first.fill, 0);
        assert_eq!(queue.pending(), 2, "pending until the tier is done with it");
        drop(first);
        assert_eq!(queue.pending(), 1);
        assert!(queue.push(9).await, "room again");
        assert_eq!(queue.dropped(), 1);
    }

    #[tokio::test]
    async fn background_fills_wait_for_room_rather_than_drop() {
        let (queue, mut drain) = FillQueue::new(1, Counter::default());
        let queue = Arc::new(queue);
        queue.offer(&block(0), 0u64);
        let waiting = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.push(1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "waits while full");
        assert_eq!(drain.next().await.map(|q| q.fill), Some(0));
        assert!(waiting.await.expect("joined"));
        assert_eq!(drain.next().await.map(|q| q.fill), Some(1));
        assert_eq!(queue.dropped(), 0);
    }

    #[test]
    fn a_tiers_own_thread_takes_fills_in_batches() {
        let (queue, mut drain) = FillQueue::new(8, Counter::default());
        for i in 0..5 {
            queue.offer(&block(i), i);
        }
        let batch: Vec<u64> = drain.next_batch_blocking(3).into_iter().map(|q| q.fill).collect();
        assert_eq!(batch, [0, 1, 2]);
        drop(queue);
        assert_eq!(drain.next_batch_blocking(3).len(), 2, "what was queued, then nothing");
        assert!(drain.next_batch_blocking(3).is_empty());
    }
}
