//! Sequential-read detection and the readahead window of one stream (an open file handle): pure
//! logic, no I/O, so its behaviour is tested directly.

use std::ops::Range;

/// How far a read may start from where the last one ended and still count as sequential: the
/// kernel splits and reorders its own readahead, and several of its reads are in flight at once.
pub const SEQUENTIAL_TOLERANCE: u64 = 4 * 1024 * 1024;

/// Most blocks fetched at once on a prediction after a jump elsewhere than back to the front: a
/// reader that read sequentially and then turns to random reads wastes at most this much once.
const PREDICTED_JUMP_BLOCKS: u64 = 8;

/// Reads a run needs to predict the next run's length.
const PREDICTING_RUN_READS: u32 = 3;

/// How close to the lowest read of a run a read must end to go on from it backwards: a reader
/// going down a file (or `memcpy` faulting in its region from the top) makes the kernel send each
/// READ just below the last.
const BACKWARD_TOLERANCE: u64 = 256 * 1024;

/// Descending reads in a row before readahead turns to the bytes below the reader: one read just
/// below a run's start is often the kernel reordering its own readahead.
const BACKWARD_RUN_READS: u32 = 2;

/// How far from where a stream's single read ended another read may start and still go on from
/// it, when the stream is not the one read last: with several streams per file, a random reader's
/// reads must not pass for runs.
const NEW_STREAM_TOLERANCE: u64 = 1024 * 1024;

/// How long a run that began with a jump and has nothing to predict its length is fetched ahead
/// of in bytes rather than in blocks: until a window of whole blocks (a quarter of the run rounded
/// up, ending anywhere in its last block) would stop at most half the run again past its end. Such
/// runs are often short (a Parquet column's chunks, read at once from a thread pool, a 4 MiB
/// `pread` each): windows of whole blocks ran 2.7-3.1 MB past each 4 MiB chunk pyarrow read, 1.7
/// bytes fetched per column byte. Longer, a small lead slows a reader for little: 8 MiB cost
/// four threads each reading a 128 MiB quarter about a tenth of their speed (s3-like).
const YOUNG_RUN: u64 = 6 * 1024 * 1024;

/// A young run's lead: this share of the run so far, at least `YOUNG_LEAD_MIN`, so that a run
/// that stops has had at most an eighth as much again fetched past its end (and the kernel's own
/// readahead past it, which it asked for).
const YOUNG_LEAD_SHARE: u64 = 8;

/// The smallest lead of a young run, whose reads are small; it is at least three of its reads (a
/// third of it is left when more is asked for, so the next read's bytes were asked for earlier).
const YOUNG_LEAD_MIN: u64 = 512 * 1024;

/// What a read asks of the fetch layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadPlan {
    /// Whole blocks to fetch ahead of the reader.
    pub prefetch: Option<Range<u64>>,
    /// Whole blocks to fetch below a reader going backwards, nearest first.
    pub prefetch_behind: Option<Range<u64>>,
    /// Parts of blocks to fetch ahead for this stream alone: the rest of the block a window
    /// starts in, and the bytes of its last block that a predicted run ends in.
    pub spans: Vec<Range<u64>>,
    /// Bytes just ahead of a young run's reader (see `YOUNG_RUN`), for this stream alone.
    pub lead: Option<Range<u64>>,
    /// Whether the read, if it is under a block and not cached, should fetch only its own bytes
    /// rather than whole blocks: a random read, the first read of a stream (readahead brings the
    /// rest of its block), a read in the partial first block of a window or the partial last
    /// block of a predicted run (both fetched ahead as spans), and the kernel's readahead of a
    /// run the reader has already left.
    pub own_bytes: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct WindowLimits {
    /// First window of a stream that turned sequential, and the unit prefetch ends are rounded
    /// to: a block.
    pub initial: u64,
    pub max: u64,
    /// Where another stream of the same version began, ahead of this one: its reader is there, so
    /// this window stops there (ranks each reading their part of one file).
    pub stop_at: Option<u64>,
}

/// Where a stream is and how far ahead of it bytes have been asked for.
///
/// A stream is a run of sequential reads; a read far from where the last ended is a jump, which
/// starts a new run. What the last run did says what the next will do: a reader that went through
/// the whole object and jumps back to its start (a new epoch, fio's loop) will go through it again,
/// and a reader of 4 MB column chunks will read 4 MB after its next jump. So after a jump that
/// ends a sequential run, the new run is fetched up to the length of the last one (its predicted
/// end), and no further until the reader passes that end: at once (up to the largest window) when
/// the reader went through to the object's end and came back to its front, else starting with a
/// few blocks. Without a prediction, a run that began with a jump grows its window with its length
/// (half of it); a stream that starts at the front of the object grows it by doubling.
#[derive(Clone, Debug, Default)]
pub struct ReadaheadWindow {
    /// Where the last read ended.
    next: u64,
    /// Current window size; 0 while the stream is not sequential.
    window: u64,
    /// End of what has been requested ahead of the reader.
    requested_to: u64,
    /// Where the window's whole blocks begin: the bytes before it, in the block the window
    /// started in, come as a span.
    whole_blocks_from: u64,
    /// Where the current run began, and how many reads it has had.
    run_start: u64,
    run_reads: u32,
    /// Whether the current run began with a jump (rather than at the front of the object).
    jumped: bool,
    /// Where the current run will end, as long as the last sequential run before the jump.
    predicted_end: Option<u64>,
    /// The run before the last jump (where it began, where its furthest read ended): the kernel's
    /// readahead of it may still arrive after the reader has jumped.
    previous_run: Option<Range<u64>>,
    /// Where the lowest read of the current run started.
    low: u64,
    /// Reads in a row that each ended just below the one before (a reader going backwards).
    descending: u32,
    /// The window below a reader going backwards; 0 until it has gone down `BACKWARD_RUN_READS`.
    behind_window: u64,
    /// The lowest byte requested below a reader going backwards, and the top of that request (the
    /// block the backward run started in is read by its own reads).
    behind_requested: Range<u64>,
}

/// Whether a read starting at `start` goes on from reads that ended at `end`, give or take the
/// kernel's splitting and reordering.
fn continues(start: u64, end: u64) -> bool {
    start.saturating_add(SEQUENTIAL_TOLERANCE) >= end && start <= end.saturating_add(SEQUENTIAL_TOLERANCE)
}

fn align_up(offset: u64, unit: u64) -> u64 {
    offset.div_ceil(unit.max(1)).saturating_mul(unit.max(1))
}

fn align_down(offset: u64, unit: u64) -> u64 {
    offset / unit.max(1) * unit.max(1)
}

impl ReadaheadWindow {
    /// Records a read of `range` in an object of `size` bytes and returns what to prefetch beyond
    /// it, if anything, and how to fetch the read itself. A jump resets the window (unless the last run predicts this one); a
    /// sequential read doubles it each time the reader has consumed a quarter of what was
    /// requested ahead, up to `limits.max`, and shrinks it at once when `limits.max` falls (more
    /// streams are sharing the memory).
    pub fn on_read(&mut self, range: Range<u64>, size: u64, limits: WindowLimits) -> ReadPlan {
        if self.is_descending(&range) {
            return self.go_down(range, limits);
        }
        if self.in_backward_run(&range) {
            // The rest of an application read that went down: the kernel sends it front to back.
            let fetched_ahead = self.behind_window > 0 && range.end <= self.behind_requested.end;
            return ReadPlan { own_bytes: !fetched_ahead, ..ReadPlan::default() };
        }
        let before = self.window;
        if self.is_late_read_of_previous_run(&range, size) {
            return ReadPlan { own_bytes: true, ..ReadPlan::default() };
        }
        let jump = !continues(range.start, self.next);
        if !jump && self.window == 0 && self.behind_window > 0 {
            // A reader that went down and now goes on up from where it started (a `memcpy` that
            // faulted its first region in from the top) is as fast a reader as it was going down.
            self.window = self.behind_window;
            self.requested_to = self.requested_to.max(range.end);
            self.whole_blocks_from = align_up(self.requested_to, limits.initial);
        }
        let mut spans = Vec::new();
        let mut lead = None;
        let prefetch = self.advance(range.clone(), size, limits, &mut spans, &mut lead);
        self.low = if jump { range.start } else { self.low.min(range.start) };
        self.descending = 0;
        self.behind_window = 0;
        // A young run's reads take their bytes from its leads (or fetch them): a window of whole
        // blocks starts only once the run is long enough to be worth one.
        let own_bytes = self.window == 0
            || before == 0
            || range.start < self.whole_blocks_from
            || self.in_predicted_tail(&range, limits.initial);
        ReadPlan { prefetch, prefetch_behind: None, spans, lead, own_bytes }
    }

    /// Whether `range` ends just below the lowest read of this run, going down from it (by up to
    /// an application read: a 1 MiB `pread` is sent as four READs, front to back).
    fn is_descending(&self, range: &Range<u64>) -> bool {
        self.run_reads > 0
            && range.start < self.low
            && range.end.saturating_add(SEQUENTIAL_TOLERANCE) >= self.low
            && range.end <= self.low.saturating_add(BACKWARD_TOLERANCE)
    }

    /// Whether `range` lies just above the lowest read of a run that has gone down: the rest of
    /// the application read whose first READ went down.
    fn in_backward_run(&self, range: &Range<u64>) -> bool {
        self.descending > 0 && range.start >= self.low && range.end <= self.low.saturating_add(SEQUENTIAL_TOLERANCE)
    }

    /// A read below the last: after `BACKWARD_RUN_READS` of them, the window turns downwards,
    /// whole blocks below the block the run turned in, growing by doubling as forward windows do.
    fn go_down(&mut self, range: Range<u64>, limits: WindowLimits) -> ReadPlan {
        let unit = limits.initial;
        self.low = range.start;
        self.descending = self.descending.saturating_add(1);
        self.run_reads = self.run_reads.saturating_add(1);
        let mut plan = ReadPlan { own_bytes: true, ..ReadPlan::default() };
        if self.descending < BACKWARD_RUN_READS {
            return plan;
        }
        if self.behind_window == 0 {
            // From the reader down: the rest of the block it is in comes with the first blocks
            // below it (whole, for the cache), not in a READ's own GET each.
            self.behind_window = unit;
            self.behind_requested = range.start..range.start;
        }
        plan.own_bytes = range.end > self.behind_requested.end;
        let ahead = self.low.saturating_sub(self.behind_requested.start);
        if ahead <= self.behind_window - self.behind_window / 4 && self.behind_requested.start > 0 {
            let from = align_down(self.low.saturating_sub(self.behind_window), unit);
            plan.prefetch_behind = (from < self.behind_requested.start).then_some(from..self.behind_requested.start);
            self.behind_requested.start = from.min(self.behind_requested.start);
            self.behind_window = (self.behind_window * 2).min(limits.max.max(unit));
        }
        plan
    }

    /// Whether this stream would take `range` as its own, were it not the one read last: a read
    /// going on from it (closer, while it has had a single read) or going down from it.
    pub fn takes(&self, range: &Range<u64>) -> bool {
        if self.run_reads == 0 {
            return false;
        }
        let tolerance = if self.is_established() { SEQUENTIAL_TOLERANCE } else { NEW_STREAM_TOLERANCE };
        let goes_on =
            range.start.saturating_add(tolerance) >= self.next && range.start <= self.next.saturating_add(tolerance);
        goes_on || self.is_descending(range) || self.in_backward_run(range)
    }

    /// Whether `range` goes on from this stream as the one read last: forwards or backwards,
    /// give or take the kernel's reordering, or the kernel's late readahead of the last run.
    pub fn goes_on_from(&self, range: &Range<u64>) -> bool {
        continues(range.start, self.next) || self.is_descending(range) || self.in_backward_run(range)
    }

    /// Whether what this stream has asked for ahead of its reader already holds `range`.
    pub fn has_requested(&self, range: &Range<u64>) -> bool {
        self.window > 0 && range.start >= self.next && range.end <= self.requested_to
    }

    /// Whether the stream has gone on past its first read: a run, not a lone read.
    pub fn is_established(&self) -> bool {
        self.run_reads >= 2
    }

    /// Whether the stream is fetching ahead of (or below) its reader.
    pub fn is_streaming(&self) -> bool {
        self.window > 0 || self.behind_window > 0
    }

    /// Where the current run began.
    pub fn run_start(&self) -> u64 {
        self.run_start
    }

    /// A read that goes on from this stream, taken as the kernel's late readahead of it rather
    /// than as the reader coming back: where the stream is moves on, nothing is fetched.
    pub fn note_late_read(&mut self, range: &Range<u64>) {
        self.next = self.next.max(range.end);
    }

    /// The kernel's late readahead of the run before the last jump lengthens the prediction made
    /// from it; whether `range` was that.
    pub fn lengthen_by_late_read(&mut self, range: &Range<u64>, size: u64) -> bool {
        self.is_late_read_of_previous_run(range, size)
    }

    /// A read just after where the run before the jump ended, while the reader is elsewhere: the
    /// kernel's asynchronous readahead of that run, sent before the jump and arriving after it.
    /// It lengthens that run (and so the prediction made from it), and leaves the current run be.
    fn is_late_read_of_previous_run(&mut self, range: &Range<u64>, size: u64) -> bool {
        let Some(previous) = &mut self.previous_run else { return false };
        let near_its_end = range.start >= previous.start && continues(range.start, previous.end);
        if !near_its_end || continues(range.start, self.next) {
            return false;
        }
        let longer_by = range.end.saturating_sub(previous.end);
        previous.end = previous.end.max(range.end);
        if let Some(end) = &mut self.predicted_end {
            *end = end.saturating_add(longer_by).min(size);
        }
        true
    }

    fn advance(
        &mut self,
        range: Range<u64>,
        size: u64,
        limits: WindowLimits,
        spans: &mut Vec<Range<u64>>,
        lead: &mut Option<Range<u64>>,
    ) -> Option<Range<u64>> {
        let max = limits.max.max(limits.initial);
        if !continues(range.start, self.next) {
            let last_run = self.next.saturating_sub(self.run_start);
            self.previous_run = Some(self.run_start..self.next);
            // Two random reads that happen to land close together are not a run to go by.
            let predicted = (self.run_reads >= PREDICTING_RUN_READS).then_some(last_run);
            self.run_reads = 1;
            self.next = range.end;
            self.requested_to = range.end;
            self.run_start = range.start;
            self.jumped = true;
            let restart = range.start < limits.initial && last_run > 0 && self.run_start + last_run >= size;
            self.predicted_end = predicted.map(|run| range.start.saturating_add(run).min(size));
            let first_window = if restart { max } else { (PREDICTED_JUMP_BLOCKS * limits.initial).min(max) };
            self.window = match self.predicted_end {
                Some(end) if end > range.end => align_up(end - range.start, limits.initial).min(first_window),
                _ => 0,
            };
            self.whole_blocks_from = 0;
            if let Some(end) = self.predicted_end {
                // Whole blocks from the next boundary on, the rest of this block as a span: the
                // bytes of the block before the run are not wanted, and this read has its own.
                self.start_with_span(align_up(self.requested_to, limits.initial).min(end), spans);
            }
            return self.top_up(range.end, size, limits, spans);
        }
        self.next = self.next.max(range.end);
        self.run_reads = self.run_reads.saturating_add(1);
        if let Some(end) = self.predicted_end
            && range.end > end
        {
            // Past the predicted end: this run is longer than the last. It gets its own bytes
            // now, and a window that grows from the smallest again.
            self.predicted_end = None;
            self.window = 0;
            self.requested_to = self.requested_to.max(range.end);
            return None;
        }
        let run = self.next - self.run_start;
        if self.window == 0 && self.jumped && self.predicted_end.is_none() && run < YOUNG_RUN {
            *lead = self.lead_young_run(&range, size, limits);
            return None;
        }
        if self.window == 0 {
            self.window = limits.initial;
            self.requested_to = self.requested_to.max(range.end);
            self.start_with_span(align_up(self.requested_to, limits.initial).min(size), spans);
        }
        self.window = self.window.min(max);
        if self.jumped && self.predicted_end.is_none() {
            // Half the run so far: a reader that stops where a chunk ends has had at most half
            // as much again fetched past it.
            let run = self.next - self.run_start;
            self.window = self.window.min(align_up(run / 4, limits.initial).max(limits.initial));
        }
        let ahead = self.top_up(range.end, size, limits, spans);
        if ahead.is_some() {
            self.window = (self.window * 2).min(max);
        }
        ahead
    }

    /// The bytes to fetch so that a young run's reader, after `read`, has its lead ahead of it:
    /// nothing while more than a third of it (and more than a read) is still ahead, and never
    /// where another stream began.
    fn lead_young_run(&mut self, read: &Range<u64>, size: u64, limits: WindowLimits) -> Option<Range<u64>> {
        let run = self.next - self.run_start;
        let len = read.end - read.start;
        let lead = (run / YOUNG_LEAD_SHARE).max(YOUNG_LEAD_MIN).max(3 * len);
        let reader_end = read.end;
        self.requested_to = self.requested_to.max(reader_end);
        if self.requested_to - reader_end > len.max(lead / 3) {
            return None;
        }
        let end = (reader_end + lead).min(size).min(limits.stop_at.unwrap_or(u64::MAX));
        let from = self.requested_to;
        self.requested_to = self.requested_to.max(end);
        (from < end).then_some(from..end)
    }

    /// A window starts: the bytes from what is requested so far up to `blocks_from` (the next
    /// block boundary, or the end of a run shorter than that) are fetched as a span, and whole
    /// blocks from there.
    fn start_with_span(&mut self, blocks_from: u64, spans: &mut Vec<Range<u64>>) {
        if self.requested_to < blocks_from {
            spans.push(self.requested_to..blocks_from);
            self.requested_to = blocks_from;
        }
        self.whole_blocks_from = blocks_from;
    }

    /// What to request so that the reader, at `reader_end`, has a window ahead of it: nothing
    /// while more than three quarters of the window is still ahead, so the bytes just ahead of
    /// the reader were requested long enough ago to have arrived. Blocks end on a `unit`
    /// boundary (the kernel's reads do not), never past the predicted end; the predicted run's
    /// last, partial block is requested as a span of the bytes the run reads there.
    fn top_up(
        &mut self,
        reader_end: u64,
        size: u64,
        limits: WindowLimits,
        spans: &mut Vec<Range<u64>>,
    ) -> Option<Range<u64>> {
        let unit = limits.initial;
        if self.window == 0 {
            return None;
        }
        let remaining_ahead = self.requested_to.saturating_sub(reader_end);
        if remaining_ahead > self.window - self.window / 4 {
            return None;
        }
        let start = self.requested_to.max(reader_end);
        let (mut run_end, mut tail_end) = match self.predicted_end {
            Some(end) if end < size => (align_down(end, unit), end),
            _ => (size, size),
        };
        if let Some(stop) = limits.stop_at.map(|stop| align_up(stop, unit).min(size))
            && stop < run_end
        {
            (run_end, tail_end) = (stop, stop);
        }
        let end = run_end.min(align_up(reader_end + self.window, unit));
        let blocks = (start < end).then_some(start..end);
        self.requested_to = self.requested_to.max(end);
        let tail_start = self.requested_to.max(start);
        if end == run_end && tail_start < tail_end {
            spans.push(tail_start..tail_end);
            self.requested_to = tail_end;
        }
        blocks
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    /// Whether `range` ends in the last, partial `unit` of the predicted run: a chunk's end is
    /// rarely on a block boundary, and fetching that whole block would send up to a block more
    /// than the run needs, for every run.
    fn in_predicted_tail(&self, range: &Range<u64>, unit: u64) -> bool {
        self.predicted_end.is_some_and(|end| range.end > align_down(end, unit) && range.end <= end)
    }

    /// Where the reader is: the end of its furthest read.
    pub fn position(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests;
