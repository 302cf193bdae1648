//! The streams of reads of one object version, across its open handles and processes, the way the
//! kernel keeps readahead state per stream: each READ goes to the stream it goes on from, and a
//! jump starts a new stream instead of ending the last one. So a `memcpy` of a mapped tensor that
//! touches its region's end first, threads sharing a descriptor, and ranks each reading their part
//! of one checkpoint each keep a window of their own.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use super::readahead::{ReadPlan, WindowLimits};
use super::stream::ReadStream;

/// Streams followed per version; the one read longest ago goes first.
pub const MAX_STREAMS: usize = 16;

/// Reads of a stream left by a jump that are taken as the kernel's late readahead of it (it sends
/// up to two windows past where a reader stopped) before the stream counts as read again.
const LATE_READS: u8 = 2;

struct Tracked {
    stream: Arc<ReadStream>,
    /// Reads still to be taken as late readahead rather than as its reader coming back.
    late_reads_left: u8,
}

/// Which stream a read went to, what to fetch for it, and the streams it made redundant.
pub struct Routed {
    pub stream: Arc<ReadStream>,
    pub plan: ReadPlan,
    /// Streams that met this one (its reader went through where they were) or that were pushed
    /// out: their spans and their share of the window budget go.
    pub dropped: Vec<Arc<ReadStream>>,
}

/// The streams of one version, the one read last first.
#[derive(Default)]
pub struct VersionStreams {
    streams: Mutex<Vec<Tracked>>,
}

impl VersionStreams {
    fn lock(&self) -> MutexGuard<'_, Vec<Tracked>> {
        crate::sync::lock(&self.streams)
    }

    /// Records a read of `range` of a version of `size` bytes: the stream it goes on from takes
    /// it (the one read last first; another after its late reads), else the last read's stream
    /// predicts a new one from its last run, and stays for its reader to come back to.
    pub fn route(&self, range: Range<u64>, size: u64, limits: WindowLimits) -> Routed {
        let mut streams = self.lock();
        let mut dropped = Vec::new();
        let chosen = match streams.first() {
            None => None,
            Some(front) if front.stream.window().goes_on_from(&range) => Some(0),
            Some(_) => streams.iter().skip(1).position(|t| t.stream.window().takes(&range)).map(|i| i + 1),
        };
        let index = match chosen {
            Some(i) if streams[i].late_reads_left > 0 => {
                let tracked = &mut streams[i];
                tracked.late_reads_left -= 1;
                tracked.stream.window().note_late_read(&range);
                let stream = Arc::clone(&tracked.stream);
                streams[0].stream.window().lengthen_by_late_read(&range, size);
                return Routed { stream, plan: ReadPlan { own_bytes: true, ..ReadPlan::default() }, dropped };
            }
            Some(i) => i,
            None => {
                // A jump into what the last stream has asked for already (a `memcpy` touching
                // its region's end first) needs nothing fetched for it, and that stream's reader
                // is coming: what goes on from it is not the kernel's late readahead.
                let mut ahead_of_last = false;
                let new = match streams.first_mut() {
                    Some(front) if front.stream.window().lengthen_by_late_read(&range, size) => {
                        let stream = Arc::clone(&front.stream);
                        return Routed { stream, plan: ReadPlan { own_bytes: true, ..ReadPlan::default() }, dropped };
                    }
                    Some(front) => {
                        let window = front.stream.window();
                        ahead_of_last = window.has_requested(&range);
                        let forwards = window.is_established() && window.window() > 0;
                        front.late_reads_left = if forwards && !ahead_of_last { LATE_READS } else { 0 };
                        drop(window);
                        ReadStream::continuing(&front.stream)
                    }
                    None => ReadStream::default(),
                };
                streams.insert(0, Tracked { stream: Arc::new(new), late_reads_left: 0 });
                if streams.len() > MAX_STREAMS {
                    dropped.extend(streams.pop().map(|t| t.stream));
                }
                if ahead_of_last {
                    let stream = Arc::clone(&streams[0].stream);
                    stream.window().on_read(range, size, limits);
                    return Routed { stream, plan: ReadPlan::default(), dropped };
                }
                0
            }
        };
        let tracked = streams.remove(index);
        let stop_at = stop_for(&streams, &tracked.stream);
        let plan = tracked.stream.window().on_read(range, size, WindowLimits { stop_at, ..limits });
        let (run_start, position) = {
            let w = tracked.stream.window();
            (w.run_start(), w.position())
        };
        // Streams this one's reader went through are behind it now: their reads would go on from
        // this one.
        streams.retain(|t| {
            let at = t.stream.position();
            let met = at > run_start && at <= position;
            if met {
                dropped.push(Arc::clone(&t.stream));
            }
            !met
        });
        let stream = Arc::clone(&tracked.stream);
        streams.insert(0, tracked);
        Routed { stream, plan, dropped }
    }

    /// Where the furthest of the streams is.
    pub fn furthest(&self) -> u64 {
        self.lock().iter().map(|t| t.stream.position()).max().unwrap_or(0)
    }

    #[cfg(test)]
    pub fn largest_window(&self) -> u64 {
        self.lock().iter().map(|t| t.stream.window().window()).max().unwrap_or(0)
    }

    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// The files were closed: what was fetched ahead for the streams' readers goes (where they
    /// are stays, for the next open to go on from).
    pub fn forget_spans(&self) {
        for tracked in self.lock().iter() {
            tracked.stream.forget_spans();
        }
    }
}

/// Where the nearest run of another stream ahead of `stream` began, if it has gone on past its
/// first read: `stream`'s window stops there.
fn stop_for(others: &[Tracked], stream: &ReadStream) -> Option<u64> {
    let at = stream.position();
    others
        .iter()
        .filter_map(|t| {
            let w = t.stream.window();
            (w.is_established() && w.run_start() > at).then(|| w.run_start())
        })
        .min()
}

#[cfg(test)]
mod tests;
