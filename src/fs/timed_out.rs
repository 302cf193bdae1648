//! Reads that recently ran out of time. The kernel sends a failed read again (its readahead failed,
//! then the page the program waits for is asked for on its own), and each would wait a full
//! `--read-timeout` on a stalled network; remembering the failure for a short while makes the
//! program see its error at about one timeout.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::object_id::ObjectId;

/// Failures remembered at most; the oldest goes first.
const MAX_REMEMBERED: usize = 1024;

/// A read of `Range` of a version that ran out of time at `Instant`.
type Failure = (Arc<ObjectId>, Range<u64>, Instant);

pub struct TimedOutReads {
    memory: Duration,
    failures: Mutex<Vec<Failure>>,
}

impl TimedOutReads {
    /// Remembers each failure for `memory`.
    pub fn new(memory: Duration) -> Self {
        Self { memory, failures: Mutex::default() }
    }

    pub fn note(&self, object: &Arc<ObjectId>, range: Range<u64>) {
        let mut failures = crate::sync::lock(&self.failures);
        failures.retain(|(.., at)| at.elapsed() < self.memory);
        if failures.len() >= MAX_REMEMBERED {
            failures.remove(0);
        }
        failures.push((Arc::clone(object), range, Instant::now()));
    }

    /// Whether a read of `range` of `object` overlaps one that ran out of time a moment ago.
    pub fn recently_failed(&self, object: &ObjectId, range: &Range<u64>) -> bool {
        let failures = crate::sync::lock(&self.failures);
        failures.iter().any(|(failed, failed_range, at)| {
            at.elapsed() < self.memory
                && **failed == *object
                && failed_range.start < range.end
                && range.start < failed_range.end
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_id::ETag;

    fn object(etag: &str) -> Arc<ObjectId> {
        Arc::new(ObjectId { key: "k".into(), etag: ETag::new(etag) })
    }

    #[test]
    fn an_overlapping_read_of_the_same_version_fails_at_once_for_a_while() {
        let reads = TimedOutReads::new(Duration::from_millis(100));
        let a = object("a");
        reads.note(&a, 4096..8192);
        assert!(reads.recently_failed(&a, &(0..4097)));
        assert!(reads.recently_failed(&a, &(8191..9000)));
        assert!(!reads.recently_failed(&a, &(8192..9000)), "a read next to it was not part of it");
        assert!(!reads.recently_failed(&object("b"), &(4096..8192)), "another version is another object");
        std::thread::sleep(Duration::from_millis(120));
        assert!(!reads.recently_failed(&a, &(4096..8192)), "forgotten after a while");
    }

    #[test]
    fn memory_stays_bounded() {
        let reads = TimedOutReads::new(Duration::from_secs(60));
        let a = object("a");
        for i in 0..(MAX_REMEMBERED as u64 + 10) {
            reads.note(&a, i..i + 1);
        }
        assert!(!reads.recently_failed(&a, &(0..1)), "the oldest went first");
        assert!(reads.recently_failed(&a, &(MAX_REMEMBERED as u64 + 9..MAX_REMEMBERED as u64 + 10)));
    }
}
