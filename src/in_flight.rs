//! A count of work in flight, and the guard that keeps one piece of it counted for as long as it
//! lives (a task aborted or ended early is uncounted all the same).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// One piece of work, counted until dropped.
pub struct Counted(Arc<AtomicUsize>);

impl InFlight {
    pub fn start(&self) -> Counted {
        self.0.fetch_add(1, Ordering::Relaxed);
        Counted(Arc::clone(&self.0))
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
