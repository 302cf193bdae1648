//! The order a job said it will read files in, and where it is in it: which queued files to fetch
//! next (in order, while the window's bytes and fetches in flight allow), which opens were
//! foretold, and which files the job went past. Pure bookkeeping: no I/O, no clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Names a queue holds at most; lines past it are dropped and counted (about 150 bytes each).
pub const MAX_QUEUED: usize = 1_000_000;
/// Bytes of names a queue holds at most, whatever their number: lines past it are dropped and
/// counted, so long names cannot grow the daemon past this (and `MAX_QUEUED` slots) either.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// How far behind the furthest open a queued file may still be opened in turn: workers of one job
/// take their files from one order a little out of step (a data loader's workers each load a
/// batch, so eight workers with batches of 32, two batches ahead, open 512 places apart).
pub const LAG: u64 = 1024;

/// What the window may hold at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes fetched or being fetched for files not yet opened.
    pub bytes: u64,
    /// Files being fetched at once.
    pub in_flight: usize,
}

/// What the queue did, since the mount began.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub queued: u64,
    /// Fetched ahead, and their bytes.
    pub fetched: u64,
    pub fetched_bytes: u64,
    /// Of those fetched, how many were held already (on disk or in memory): nothing came from the
    /// network for them.
    pub cached: u64,
    /// Opened after their fetch began.
    pub hit: u64,
    /// Opened before their fetch began (the job outran the window, or opened them out of turn).
    pub missed: u64,
    /// Passed by the job before their fetch began: never fetched.
    pub skipped: u64,
    /// Fetched, then passed by the job or cleared without being opened, and their bytes.
    pub wasted: u64,
    pub wasted_bytes: u64,
    /// Lines that named no file (outside the mount, missing, a directory), or that the writer
    /// may not read.
    pub bad: u64,
    /// Fetches that failed; the open fetches as usual.
    pub failed: u64,
    /// Lines past `MAX_QUEUED`.
    pub dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    /// Being resolved or fetched; its bytes are counted in the window.
    Fetching {
        bytes: u64,
    },
    Fetched {
        bytes: u64,
    },
    /// Opened, passed or cleared while its fetch was running; the fetch's end settles it.
    Leaving {
        opened: bool,
    },
    Settled,
}

struct Slot {
    key: Arc<str>,
    state: State,
    /// The next place the same key is queued at.
    again: Option<u64>,
}

/// Where a file opened stood in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Foretold {
    /// Not queued (or queued only far behind the job).
    No,
    /// Queued in turn; `fetched` when its fetch had begun.
    Yes { fetched: bool },
}

/// A queued file to fetch now: its place and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Next {
    pub seq: u64,
    pub key: Arc<str>,
}

#[derive(Default)]
pub struct Queue {
    slots: VecDeque<Slot>,
    /// Place of `slots[0]`; places only grow, across clears.
    base: u64,
    /// The first place not yet taken for fetching.
    next: u64,
    /// One past the furthest place opened.
    front: u64,
    /// Each queued key's first and last place still waiting for an open.
    places: HashMap<Arc<str>, (u64, u64)>,
    /// Files and bytes fetched or being fetched, not yet opened or passed.
    window_files: usize,
    window_bytes: u64,
    in_flight: usize,
    /// Bytes of the names in `slots`.
    key_bytes: usize,
    counts: Counts,
}

impl Queue {
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Files queued that are neither settled nor passed yet.
    pub fn pending(&self) -> usize {
        self.slots.iter().filter(|s| matches!(s.state, State::Waiting | State::Fetching { .. })).count()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Bytes of the names held.
    #[cfg(test)]
    pub(crate) fn key_bytes(&self) -> usize {
        self.key_bytes
    }

    pub fn window_bytes(&self) -> u64 {
        self.window_bytes
    }

    /// Whether files wait that the window has no room for until the job opens some.
    pub fn waits_for_reads(&self, limits: Limits) -> bool {
        self.in_flight == 0 && self.window_bytes >= limits.bytes && self.waiting_from(self.next).is_some()
    }

    fn slot(&mut self, seq: u64) -> Option<&mut Slot> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get_mut(index)
    }

    fn waiting_from(&self, seq: u64) -> Option<u64> {
        let from = usize::try_from(seq.saturating_sub(self.base)).ok()?;
        self.slots.iter().skip(from).position(|s| s.state == State::Waiting).map(|i| self.base + (from + i) as u64)
    }

    /// Appends `key` to the order; false when the queue is full (the line is dropped).
    pub fn push(&mut self, key: &str) -> bool {
        if self.slots.len() >= MAX_QUEUED || self.key_bytes + key.len() > MAX_QUEUED_BYTES {
            self.counts.dropped += 1;
            return false;
        }
        self.key_bytes += key.len();
        let seq = self.base + self.slots.len() as u64;
        let key: Arc<str> = Arc::from(key);
        match self.places.get_mut(&key) {
            Some((_, last)) => {
                let previous = *last;
                *last = seq;
                if let Some(slot) = self.slot(previous) {
                    slot.again = Some(seq);
                }
            }
            None => {
                self.places.insert(Arc::clone(&key), (seq, seq));
            }
        }
        self.slots.push_back(Slot { key, state: State::Waiting, again: None });
        self.counts.queued += 1;
        true
    }

    /// A line that named no file, counted.
    pub fn bad_line(&mut self) {
        self.counts.bad += 1;
    }

    /// Empties the queue; fetches running finish, and what they bring counts as wasted.
    pub fn clear(&mut self) {
        let end = self.base + self.slots.len() as u64;
        for seq in self.base..end {
            self.leave(seq, false);
        }
        self.places.clear();
        self.trim();
        self.next = self.next.max(end);
        self.front = self.front.max(end);
    }

    /// The file at `seq` leaves the window unopened (passed or cleared).
    fn leave(&mut self, seq: u64, opened: bool) {
        let Some(slot) = self.slot(seq) else { return };
        let before = slot.state;
        slot.state = match before {
            State::Fetching { .. } => State::Leaving { opened },
            State::Leaving { opened: was } => State::Leaving { opened: was || opened },
            _ => State::Settled,
        };
        match before {
            State::Waiting if opened => self.counts.missed += 1,
            State::Waiting => self.counts.skipped += 1,
            State::Fetching { bytes } => {
                self.window_files -= 1;
                self.window_bytes -= bytes;
                if opened {
                    self.counts.hit += 1;
                }
            }
            State::Fetched { bytes } => {
                self.window_files -= 1;
                self.window_bytes -= bytes;
                if opened {
                    self.counts.hit += 1;
                } else {
                    self.counts.wasted += 1;
                    self.counts.wasted_bytes += bytes;
                }
            }
            State::Leaving { .. } | State::Settled => {}
        }
    }

    /// The first place of `key` the job has not passed, taken off the key's places.
    fn take_place(&mut self, key: &str) -> Option<u64> {
        let (first, last) = *self.places.get(key)?;
        let again = self.slot(first).and_then(|s| s.again);
        match again {
            Some(next) => {
                self.places.insert(Arc::from(key), (next, last));
            }
            None => {
                self.places.remove(key);
            }
        }
        Some(first)
    }

    /// The job opened `key`: if it was queued in turn, it leaves the window as read, and the job's
    /// place moves on, past the files it left behind.
    pub fn opened(&mut self, key: &str) -> Foretold {
        let Some(seq) = self.take_place(key) else { return Foretold::No };
        let fetched = self.slot(seq).is_some_and(|s| s.state != State::Waiting);
        self.leave(seq, true);
        self.front = self.front.max(seq + 1);
        self.pass_behind();
        Foretold::Yes { fetched }
    }

    /// Files far behind the furthest open are passed: never fetched, or wasted.
    fn pass_behind(&mut self) {
        let behind = self.front.saturating_sub(LAG);
        let mut seq = self.base;
        while seq < behind && seq < self.base + self.slots.len() as u64 {
            let key = self.slot(seq).map(|s| Arc::clone(&s.key));
            if let Some(key) = key
                && self.places.get(&key).is_some_and(|&(first, _)| first == seq)
            {
                self.take_place(&key);
            }
            self.leave(seq, false);
            seq += 1;
        }
        self.next = self.next.max(behind);
        self.trim();
    }

    /// Drops settled places off the front.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(|s| s.state == State::Settled) {
            if let Some(slot) = self.slots.pop_front() {
                self.key_bytes -= slot.key.len();
            }
            self.base += 1;
        }
        self.next = self.next.max(self.base);
    }

    /// The next file to fetch, if the window has room: in the queue's order, skipping files opened
    /// or passed already.
    pub fn next_to_fetch(&mut self, limits: Limits) -> Option<Next> {
        if self.in_flight >= limits.in_flight || self.window_bytes >= limits.bytes {
            return None;
        }
        let seq = self.waiting_from(self.next)?;
        self.next = seq + 1;
        let slot = self.slot(seq)?;
        slot.state = State::Fetching { bytes: 0 };
        let key = Arc::clone(&slot.key);
        self.window_files += 1;
        self.in_flight += 1;
        Some(Next { seq, key })
    }

    /// The file at `seq` was found to be `bytes` to fetch.
    pub fn sized(&mut self, seq: u64, bytes: u64) {
        if let Some(slot) = self.slot(seq)
            && let State::Fetching { bytes: before } = slot.state
        {
            slot.state = State::Fetching { bytes };
            self.window_bytes = self.window_bytes - before + bytes;
        }
    }

    /// The fetch of `seq` ended: `Some(bytes)` fetched, or `None` when it named no file
    /// (`bad`) or failed.
    pub fn fetch_ended(&mut self, seq: u64, fetched: Option<u64>, bad: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match fetched {
            Some(bytes) => {
                self.counts.fetched += 1;
                self.counts.fetched_bytes += bytes;
                self.counts.cached += u64::from(bytes == 0);
            }
            None if bad => self.counts.bad += 1,
            None => self.counts.failed += 1,
        }
        let Some(slot) = self.slot(seq) else { return };
        match slot.state {
            State::Fetching { bytes: counted } => match fetched {
                Some(bytes) => {
                    slot.state = State::Fetched { bytes };
                    self.window_bytes = self.window_bytes - counted + bytes;
                }
                None => {
                    slot.state = State::Settled;
                    self.window_files -= 1;
                    self.window_bytes -= counted;
                }
            },
            State::Leaving { opened } => {
                slot.state = State::Settled;
                if let (false, Some(bytes)) = (opened, fetched) {
                    self.counts.wasted += 1;
                    self.counts.wasted_bytes += bytes;
                }
            }
            State::Waiting | State::Fetched { .. } | State::Settled => {}
        }
        self.trim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDE: Limits = Limits { bytes: u64::MAX, in_flight: usize::MAX };

    fn queue_of(keys: impl IntoIterator<Item = String>) -> Queue {
        let mut queue = Queue::default();
        for key in keys {
            assert!(queue.push(&key));
        }
        queue
    }

    fn names(n: usize) -> impl Iterator<Item = String> {
        (0..n).map(|i| format!("f{i}"))
    }

    #[test]
    fn files_are_fetched_in_the_order_queued() {
        let mut queue = queue_of(["c", "a", "b"].map(String::from));
        let taken: Vec<_> = std::iter::from_fn(|| queue.next_to_fetch(WIDE)).map(|n| n.key.to_string()).collect();
        assert_eq!(taken, ["c", "a", "b"]);
    }

    #[test]
    fn the_window_holds_at_most_its_bytes_and_fetches_in_flight() {
        let mut queue = queue_of(names(10));
        let limits = Limits { bytes: 250, in_flight: 2 };
        let a = queue.next_to_fetch(limits).unwrap();
        let b = queue.next_to_fetch(limits).unwrap();
        assert_eq!(queue.next_to_fetch(limits), None, "two in flight");
        queue.sized(a.seq, 100);
        queue.sized(b.seq, 100);
        queue.fetch_ended(a.seq, Some(100), false);
        let c = queue.next_to_fetch(limits).unwrap();
        queue.sized(c.seq, 100);
        queue.fetch_ended(b.seq, Some(100), false);
        assert_eq!(queue.next_to_fetch(limits), None, "300 bytes ahead of the job");
        assert_eq!(queue.opened("f0"), Foretold::Yes { fetched: true });
        assert_eq!(queue.next_to_fetch(limits).map(|n| n.key.to_string()), Some("f3".into()), "an open makes room");
    }

    #[test]
    fn an_open_out_of_turn_is_missed_and_never_fetched_after() {
        let mut queue = queue_of(names(5));
        assert_eq!(queue.opened("f2"), Foretold::Yes { fetched: false });
        let taken: Vec<_> = std::iter::from_fn(|| queue.next_to_fetch(WIDE)).map(|n| n.key.to_string()).collect();
        assert_eq!(taken, ["f0", "f1", "f3", "f4"]);
        assert_eq!(queue.counts().missed, 1);
        assert_eq!(queue.opened("elsewhere"), Foretold::No);
    }

    #[test]
    fn files_far_behind_the_job_are_skipped_or_wasted() {
        let n = LAG as usize + 10;
        let mut queue = queue_of(names(n));
        let first = queue.next_to_fetch(WIDE).unwrap();
        queue.sized(first.seq, 7);
        queue.fetch_ended(first.seq, Some(7), false);
        let last = format!("f{}", n - 1);
        assert_eq!(queue.opened(&last), Foretold::Yes { fetched: false });
        let counts = queue.counts();
        assert_eq!((counts.wasted, counts.wasted_bytes), (1, 7), "f0 was fetched and passed");
        assert_eq!(counts.skipped, 9, "f1..f9 were passed before their fetch");
        assert_eq!(queue.window_bytes(), 0);
        assert_eq!(queue.next_to_fetch(WIDE).map(|n| n.key.to_string()), Some("f10".into()));
        assert_eq!(queue.opened("f3"), Foretold::No, "passed");
    }

    #[test]
    fn a_key_queued_twice_is_foretold_twice() {
        let mut queue = queue_of(["a", "b", "a"].map(String::from));
        assert_eq!(queue.opened("a"), Foretold::Yes { fetched: false });
        assert_eq!(queue.opened("a"), Foretold::Yes { fetched: false });
        assert_eq!(queue.opened("a"), Foretold::No);
        assert_eq!(queue.next_to_fetch(WIDE).map(|n| n.key.to_string()), Some("b".into()));
    }

    #[test]
    fn a_clear_empties_the_queue_and_fetches_running_end_as_wasted() {
        let mut queue = queue_of(names(4));
        let running = queue.next_to_fetch(WIDE).unwrap();
        queue.sized(running.seq, 5);
        queue.clear();
        assert_eq!(queue.next_to_fetch(WIDE), None);
        assert_eq!(queue.window_bytes(), 0, "what was cleared leaves the window");
        queue.fetch_ended(running.seq, Some(5), false);
        assert_eq!(queue.counts().wasted_bytes, 5);
        assert_eq!(queue.opened("f0"), Foretold::No);
        queue.push("g");
        assert_eq!(queue.next_to_fetch(WIDE).map(|n| n.key.to_string()), Some("g".into()));
        assert_eq!(queue.in_flight(), 1);
    }

    #[test]
    fn bad_and_failed_fetches_leave_the_window() {
        let mut queue = queue_of(names(2));
        let a = queue.next_to_fetch(WIDE).unwrap();
        let b = queue.next_to_fetch(WIDE).unwrap();
        queue.sized(b.seq, 9);
        queue.fetch_ended(a.seq, None, true);
        queue.fetch_ended(b.seq, None, false);
        let counts = queue.counts();
        assert_eq!((counts.bad, counts.failed, queue.window_bytes(), queue.pending()), (1, 1, 0, 0));
    }

    #[test]
    fn a_full_queue_drops_lines_and_says_how_many() {
        let mut queue = Queue::default();
        for i in 0..MAX_QUEUED {
            queue.push(&i.to_string());
        }
        assert!(!queue.push("one more"));
        assert_eq!(queue.counts().dropped, 1);
    }

    #[test]
    fn long_names_fill_the_queue_by_their_bytes_and_leave_it_with_them() {
        let mut queue = Queue::default();
        let name = |i: usize| format!("{i:05}{}", "n/".repeat(2000));
        let fit = MAX_QUEUED_BYTES / name(0).len();
        for i in 0..fit {
            assert!(queue.push(&name(i)), "{i} of {fit}");
        }
        assert!(!queue.push(&name(fit)), "over the bytes, far under the count");
        assert_eq!((queue.counts().dropped, queue.slots.len()), (1, fit));
        assert!(queue.key_bytes <= MAX_QUEUED_BYTES);
        queue.clear();
        assert_eq!(queue.key_bytes, 0, "cleared names give their bytes back");
        assert!(queue.push(&name(0)));
    }

    #[test]
    fn a_long_queue_read_in_turn_keeps_only_the_window() {
        let mut queue = queue_of(names(100_000));
        let limits = Limits { bytes: 10, in_flight: 4 };
        for i in 0..100_000 {
            while let Some(next) = queue.next_to_fetch(limits) {
                queue.sized(next.seq, 1);
                queue.fetch_ended(next.seq, Some(1), false);
            }
            assert!(queue.window_bytes() <= 10);
            queue.opened(&format!("f{i}"));
            assert!(queue.slots.len() <= 100_000 - i, "read places leave");
        }
        assert_eq!(queue.counts().hit, 100_000);
        assert!(queue.slots.is_empty() && queue.places.is_empty());
    }

    #[test]
    fn the_window_waits_for_reads_when_full() {
        let mut queue = queue_of(names(3));
        let limits = Limits { bytes: 1, in_flight: 4 };
        let a = queue.next_to_fetch(limits).unwrap();
        queue.sized(a.seq, 1);
        assert!(!queue.waits_for_reads(limits), "a fetch is running");
        queue.fetch_ended(a.seq, Some(1), false);
        assert!(queue.waits_for_reads(limits));
    }
}
