//! Stops asking a disk that stalled. After a read past its deadline the disk is left alone for a
//! while (the network serves, and opens skip the disk). A stalled read's thread stays stuck until
//! the disk answers, so while a few of them are stuck the disk is not used at all: without that
//! bound, stuck threads would pile up in the runtime's blocking pool, which other work shares.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a stalled disk is left alone before it is tried again.
pub const PAUSE: Duration = Duration::from_secs(30);
/// Reads stuck on the disk past their deadline that keep it unused whatever the time.
pub const MOST_STUCK: usize = 4;

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const STUCK: u8 = 2;

#[derive(Default)]
pub struct Breaker {
    open_until: Mutex<Option<Instant>>,
    stuck: Arc<AtomicUsize>,
}

/// A read on the disk; the thread doing it holds it until the read returns.
pub struct Read {
    state: Arc<AtomicU8>,
    stuck: Arc<AtomicUsize>,
}

/// What the waiting side keeps of a read, to say it passed its deadline.
pub struct Waiting {
    state: Arc<AtomicU8>,
    stuck: Arc<AtomicUsize>,
}

impl Drop for Read {
    fn drop(&mut self) {
        if self.state.swap(DONE, Ordering::AcqRel) == STUCK {
            self.stuck.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Waiting {
    /// The read passed its deadline: it counts as stuck until its thread comes back.
    pub fn gave_up(self) {
        self.stuck.fetch_add(1, Ordering::AcqRel);
        if self.state.compare_exchange(RUNNING, STUCK, Ordering::AcqRel, Ordering::Acquire).is_err() {
            // It came back meanwhile.
            self.stuck.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Breaker {
    fn open_until(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        crate::sync::lock(&self.open_until)
    }

    /// Whether the disk may be used now.
    pub fn closed(&self) -> bool {
        if self.stuck.load(Ordering::Acquire) >= MOST_STUCK {
            return false;
        }
        let mut until = self.open_until();
        match *until {
            Some(at) if Instant::now() < at => false,
            Some(_) => {
                *until = None;
                tracing::info!("disk cache: trying the disk again");
                true
            }
            None => true,
        }
    }

    /// A read, if the disk may be used: one half for the thread reading, one for the waiter.
    pub fn enter(&self) -> Option<(Read, Waiting)> {
        if !self.closed() {
            return None;
        }
        let state = Arc::new(AtomicU8::new(RUNNING));
        let read = Read { state: Arc::clone(&state), stuck: Arc::clone(&self.stuck) };
        Some((read, Waiting { state, stuck: Arc::clone(&self.stuck) }))
    }

    /// The disk stalled: leave it alone for PAUSE. Says whether this call opened the breaker.
    pub fn trip(&self) -> bool {
        let mut until = self.open_until();
        let first = until.is_none();
        *until = Some(Instant::now() + PAUSE);
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tripped_breaker_keeps_reads_off_the_disk() {
        let breaker = Breaker::default();
        assert!(breaker.enter().is_some());
        assert!(breaker.trip(), "the first trip opens it");
        assert!(!breaker.trip(), "a second one only extends the pause");
        assert!(breaker.enter().is_none() && !breaker.closed());
    }

    #[test]
    fn reads_stuck_on_the_disk_keep_it_unused_until_they_come_back() {
        let breaker = Breaker::default();
        let mut threads = Vec::new();
        for _ in 0..MOST_STUCK {
            let (read, waiting) = breaker.enter().expect("the disk is usable");
            waiting.gave_up();
            threads.push(read);
        }
        assert!(!breaker.closed(), "too many threads stuck");
        drop(threads);
        assert!(breaker.closed(), "they came back");
        let (read, waiting) = breaker.enter().unwrap();
        drop(read);
        waiting.gave_up();
        assert!(breaker.closed(), "a read that came back before its waiter gave up is not stuck");
    }
}
