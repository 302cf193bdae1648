//! Which sequential streams are reading now, so that their readahead windows together fit the
//! memory budget: blocks fetched ahead for one stream must not push out, unread, those fetched for
//! another.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A stream that has not read for this long no longer counts as reading.
pub const IDLE_AFTER: Duration = Duration::from_secs(2);

/// Streams are told apart by the address of their shared state, which lives while they do.
pub type StreamId = usize;

#[derive(Default)]
pub struct ActiveStreams {
    last_read: Mutex<HashMap<StreamId, Instant>>,
}

impl ActiveStreams {
    fn lock(&self) -> MutexGuard<'_, HashMap<StreamId, Instant>> {
        crate::sync::lock(&self.last_read)
    }

    /// Records that `stream` read sequentially at `now`.
    pub fn note(&self, stream: StreamId, now: Instant) {
        self.lock().insert(stream, now);
    }

    /// Forgets `stream`: it met another, or was pushed out.
    pub fn forget(&self, stream: StreamId) {
        self.lock().remove(&stream);
    }

    /// How many streams have read within `IDLE_AFTER` of `now`; forgets the others.
    pub fn reading(&self, now: Instant) -> usize {
        let mut last_read = self.lock();
        last_read.retain(|_, at| now.saturating_duration_since(*at) < IDLE_AFTER);
        last_read.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_count_while_they_read_and_not_after() {
        let streams = ActiveStreams::default();
        let start = Instant::now();
        assert_eq!(streams.reading(start), 0);
        streams.note(1, start);
        streams.note(2, start);
        streams.note(1, start + Duration::from_millis(10));
        assert_eq!(streams.reading(start + Duration::from_millis(10)), 2);
        streams.note(1, start + IDLE_AFTER);
        assert_eq!(streams.reading(start + IDLE_AFTER), 1, "stream 2 went idle");
        assert_eq!(streams.reading(start + IDLE_AFTER * 3), 0);
    }
}
