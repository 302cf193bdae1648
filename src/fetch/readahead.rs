//! Sequential-read detection and the readahead window of one stream (an open file handle): pure
//! logic, no I/O, so its behaviour is tested directly.

use std::ops::Range;

/// How far a read may start from where the last one ended and still count as sequential: the
/// kernel splits and reorders its own readahead, and several of its reads are in flight at once.
pub const SEQUENTIAL_TOLERANCE: u64 = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug)]
pub struct WindowLimits {
    /// First window of a stream that turned sequential; about the kernel's read size.
    pub initial: u64,
    pub max: u64,
}

/// Where a stream is and how far ahead of it bytes have been asked for.
#[derive(Clone, Debug, Default)]
pub struct ReadaheadWindow {
    /// Where the last read ended.
    next: u64,
    /// Current window size; 0 while the stream is not sequential.
    window: u64,
    /// End of what has been requested ahead of the reader.
    requested_to: u64,
}

impl ReadaheadWindow {
    /// Records a read of `range` in an object of `size` bytes and returns what to prefetch beyond
    /// it, if anything. A random read resets the window; a sequential one doubles it each time the
    /// reader has consumed a quarter of what was requested ahead, up to `limits.max`, and shrinks
    /// it at once when `limits.max` falls (more streams are sharing the memory).
    pub fn on_read(&mut self, range: Range<u64>, size: u64, limits: WindowLimits) -> Option<Range<u64>> {
        let sequential =
            range.start + SEQUENTIAL_TOLERANCE >= self.next && range.start <= self.next + SEQUENTIAL_TOLERANCE;
        self.next = self.next.max(range.end);
        if !sequential {
            self.next = range.end;
            self.window = 0;
            self.requested_to = range.end;
            return None;
        }
        if self.window == 0 {
            self.window = limits.initial;
            self.requested_to = self.requested_to.max(range.end);
        }
        self.window = self.window.min(limits.max.max(limits.initial));
        // Top the window up once a quarter of it has been consumed, so the bytes just ahead of the
        // reader were requested long enough ago to have arrived.
        let remaining_ahead = self.requested_to.saturating_sub(range.end);
        if remaining_ahead > self.window - self.window / 4 {
            return None;
        }
        let start = self.requested_to.max(range.end);
        let end = (range.end + self.window).min(size);
        self.window = (self.window * 2).min(limits.max);
        if start >= end {
            return None;
        }
        self.requested_to = end;
        Some(start..end)
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    /// Where the reader is: the end of its furthest read.
    pub fn position(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const LIMITS: WindowLimits = WindowLimits { initial: MIB, max: 64 * MIB };

    #[test]
    fn a_sequential_stream_grows_its_window_to_the_max() {
        let mut w = ReadaheadWindow::default();
        let size = 1024 * MIB;
        let mut prefetched = Vec::new();
        for i in 0..512 {
            if let Some(r) = w.on_read(i * MIB..(i + 1) * MIB, size, LIMITS) {
                prefetched.push(r);
            }
        }
        assert_eq!(w.window(), 64 * MIB);
        for pair in prefetched.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "prefetches are contiguous");
        }
        let first = &prefetched[0];
        assert!(first.end - first.start <= MIB, "the first window is small");
        let last = prefetched.last().unwrap();
        assert!(last.end - last.start >= 16 * MIB, "later windows are large");
    }

    #[test]
    fn reordered_kernel_reads_still_count_as_sequential() {
        let mut w = ReadaheadWindow::default();
        for (start, len) in [(0, 128), (256, 128), (128, 128), (384, 128), (640, 128), (512, 128)] {
            w.on_read(start * 1024..(start + len) * 1024, 100 * MIB, LIMITS);
            assert!(w.window() > 0, "read at {start} KiB broke the stream");
        }
    }

    #[test]
    fn a_random_read_resets_the_window_and_prefetches_nothing() {
        let mut w = ReadaheadWindow::default();
        for i in 0..8 {
            w.on_read(i * MIB..(i + 1) * MIB, 1024 * MIB, LIMITS);
        }
        assert!(w.window() > MIB);
        assert_eq!(w.on_read(700 * MIB..700 * MIB + 4096, 1024 * MIB, LIMITS), None);
        assert_eq!(w.window(), 0);
    }

    #[test]
    fn a_window_shrinks_when_its_limit_falls() {
        let mut w = ReadaheadWindow::default();
        for i in 0..64 {
            w.on_read(i * MIB..(i + 1) * MIB, 1024 * MIB, LIMITS);
        }
        assert_eq!(w.window(), 64 * MIB);
        let shared = WindowLimits { initial: MIB, max: 8 * MIB };
        let mut ahead_of_reader = 0;
        for i in 64..128 {
            if let Some(r) = w.on_read(i * MIB..(i + 1) * MIB, 1024 * MIB, shared) {
                ahead_of_reader = r.end - (i + 1) * MIB;
            }
            assert!(w.window() <= 8 * MIB);
        }
        assert!(ahead_of_reader > 0 && ahead_of_reader <= 8 * MIB, "asked {ahead_of_reader} bytes ahead");
    }

    #[test]
    fn prefetch_never_passes_the_end() {
        let mut w = ReadaheadWindow::default();
        let size = 3 * MIB + 17;
        for i in 0..4 {
            if let Some(r) = w.on_read(i * MIB..((i + 1) * MIB).min(size), size, LIMITS) {
                assert!(r.end <= size);
            }
        }
    }
}
