//! The write-behind fill queue every tier below memory is filled through (the disk, the shared
//! cache). Bounded: a reader's block that finds it full is dropped, never waited for, and
//! remembered, so it can be fetched again once the readers are quiet. Background work (a file
//! completed on disk, a dropped block fetched again) waits for room instead. What is queued or
//! being written is counted until the tier is done with it, so an unmount can settle it. A tier
//! that stops taking fills (a disk that hangs, a cache bucket that stops answering) trips the
//! queue's breaker: nothing waits on it and nothing is fetched again for it until it moves.

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
/// A tier with fills pending that finished none for this long is stalled.
pub const STALL: Duration = Duration::from_secs(10);

/// A block of an object version: what a tier is offered and what a full queue remembers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockOf {
    pub object: Arc<ObjectId>,
    pub size: u64,
    pub index: u64,
}

/// When the queue last moved: a fill done, or one queued into an empty queue.
struct Progress {
    started: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn moved(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn still_for(&self) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A fill on its way to its tier, counted as pending until the tier drops it.
pub struct Queued<F> {
    pub fill: F,
    _pending: Counted,
    progress: Arc<Progress>,
}

impl<F> Drop for Queued<F> {
    fn drop(&mut self) {
        self.progress.moved();
    }
}

pub struct FillQueue<F> {
    /// The tier's name, for its log lines.
    name: &'static str,
    sender: mpsc::Sender<Queued<F>>,
    pending: InFlight,
    dropped: std::sync::Mutex<VecDeque<BlockOf>>,
    /// When a reader last offered a fill, in milliseconds after `started`.
    last_offer_ms: AtomicU64,
    started: Instant,
    progress: Arc<Progress>,
    /// How long without progress makes the tier stalled (`STALL`).
    stall: Duration,
    /// The stall was logged (cleared when the tier moves again).
    said_stalled: std::sync::atomic::AtomicBool,
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
    queue: &'a FillQueue<F>,
}

impl<F> Room<'_, F> {
    pub fn fill(self, fill: F) {
        self.permit.send(self.queue.queued(fill));
    }
}

impl<F> FillQueue<F> {
    /// A queue of at most `slots` fills for the tier `name`; `dropped` counts the fills it had
    /// no room for; `stall` is how long without progress trips its breaker.
    pub fn new(name: &'static str, slots: usize, dropped: Counter, stall: Duration) -> (Self, Drain<F>) {
        let (sender, receiver) = mpsc::channel(slots.max(1));
        let started = Instant::now();
        let queue = Self {
            name,
            sender,
            pending: InFlight::default(),
            dropped: std::sync::Mutex::new(VecDeque::new()),
            last_offer_ms: AtomicU64::new(0),
            started,
            progress: Arc::new(Progress { started, last_ms: AtomicU64::new(0) }),
            stall,
            said_stalled: std::sync::atomic::AtomicBool::new(false),
            dropped_count: dropped,
        };
        (queue, Drain(receiver))
    }

    /// `fill`, counted as pending until its tier is done with it.
    fn queued(&self, fill: F) -> Queued<F> {
        if self.pending.count() == 0 {
            self.progress.moved();
        }
        Queued { fill, _pending: self.pending.start(), progress: Arc::clone(&self.progress) }
    }

    /// Whether the tier has fills pending and finished none for the stall time: then nothing
    /// waits on it and nothing is fetched again for it (one log line), until it moves.
    pub fn stalled(&self) -> bool {
        let stalled = self.pending.count() > 0 && self.progress.still_for() >= self.stall;
        let said = self.said_stalled.swap(stalled, Ordering::Relaxed);
        if stalled && !said {
            tracing::warn!(
                "{}: no fill finished for {} s; blocks are dropped for it until it moves again",
                self.name,
                self.stall.as_secs()
            );
        } else if !stalled && said {
            tracing::info!("{}: taking fills again", self.name);
        }
        stalled
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Queues a reader's fill of `block`, or drops and remembers it when the queue is full.
    pub fn offer(&self, block: &BlockOf, fill: F) {
        self.last_offer_ms.store(self.now_ms(), Ordering::Relaxed);
        match self.sender.try_reserve() {
            Ok(room) => room.send(self.queued(fill)),
            Err(_) => self.drop_fill(block.clone()),
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

    /// Room for one fill, waited for, but not past the stall time: `None` when the tier is gone
    /// or stalled.
    pub async fn room(&self) -> Option<Room<'_, F>> {
        if self.stalled() {
            return None;
        }
        let permit = tokio::time::timeout(self.stall, self.sender.reserve()).await.ok()?.ok()?;
        Some(Room { permit, queue: self })
    }

    /// Up to `n` dropped blocks, oldest first, once no reader offered a fill for `quiet` (none
    /// while the tier is stalled).
    pub fn dropped_if_quiet(&self, quiet: Duration, n: usize) -> Vec<BlockOf> {
        if self.stalled() {
            return Vec::new();
        }
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
        let (queue, mut drain) = FillQueue::new("test", 2, dropped.clone(), STALL);
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
        let (queue, mut drain) = FillQueue::new("test", 1, Counter::default(), STALL);
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
        let (queue, mut drain) = FillQueue::new("test", 8, Counter::default(), STALL);
        for i in 0..5 {
            queue.offer(&block(i), i);
        }
        let batch: Vec<u64> = drain.next_batch_blocking(3).into_iter().map(|q| q.fill).collect();
        assert_eq!(batch, [0, 1, 2]);
        drop(queue);
        assert_eq!(drain.next_batch_blocking(3).len(), 2, "what was queued, then nothing");
        assert!(drain.next_batch_blocking(3).is_empty());
    }

    #[tokio::test]
    async fn a_tier_that_takes_nothing_trips_the_breaker_and_is_waited_on_no_more() {
        let stall = Duration::from_millis(200);
        let (queue, mut drain) = FillQueue::new("test", 1, Counter::default(), stall);
        queue.offer(&block(0), 0u64);
        queue.offer(&block(1), 1);
        assert!(!queue.stalled(), "just queued");
        tokio::time::sleep(stall * 2).await;
        assert!(queue.stalled(), "nothing taken for the stall time");
        assert!(queue.dropped_if_quiet(Duration::ZERO, 10).is_empty(), "nothing fetched again for it");
        let started = Instant::now();
        assert!(!queue.push(2).await, "a background fill gives up at once");
        assert!(started.elapsed() < stall, "without waiting");
        drop(drain.next().await);
        assert!(!queue.stalled(), "it moved");
        assert_eq!(queue.dropped_if_quiet(Duration::ZERO, 10).len(), 1, "its dropped block is fetched again");
    }
}
