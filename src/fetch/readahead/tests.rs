//! The readahead window alone: what it plans for each pattern of reads, without I/O.

use super::*;

const MIB: u64 = 1024 * 1024;
const LIMITS: WindowLimits = WindowLimits { initial: MIB, max: 64 * MIB, stop_at: None };

#[test]
fn a_sequential_stream_grows_its_window_to_the_max() {
    let mut w = ReadaheadWindow::default();
    let size = 1024 * MIB;
    let mut prefetched = Vec::new();
    for i in 0..512 {
        if let Some(r) = w.on_read(i * MIB..(i + 1) * MIB, size, LIMITS).prefetch {
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
fn random_reads_prefetch_nothing_and_a_jump_after_a_run_at_most_a_few_blocks() {
    let mut w = ReadaheadWindow::default();
    for i in 0..8 {
        w.on_read(i * MIB..(i + 1) * MIB, 1024 * MIB, LIMITS);
    }
    assert!(w.window() > MIB);
    let first =
        w.on_read(700 * MIB..700 * MIB + 4096, 1024 * MIB, LIMITS).prefetch.expect("the last run predicts this one");
    assert!(first.end - first.start <= PREDICTED_JUMP_BLOCKS * MIB, "{first:?}");
    assert_eq!(
        w.on_read(300 * MIB..300 * MIB + 4096, 1024 * MIB, LIMITS).prefetch,
        None,
        "a single read predicts nothing"
    );
    w.on_read(302 * MIB..302 * MIB + 4096, 1024 * MIB, LIMITS);
    assert_eq!(w.on_read(500 * MIB..500 * MIB + 4096, 1024 * MIB, LIMITS).prefetch, None, "nor two that landed close");
    assert_eq!(w.window(), 0);
}

#[test]
fn a_reader_back_at_the_front_after_the_end_gets_its_window_back_at_once() {
    let mut w = ReadaheadWindow::default();
    let size = 256 * MIB;
    for i in 0..256 {
        w.on_read(i * MIB..(i + 1) * MIB, size, LIMITS);
    }
    let plan = w.on_read(0..256 * 1024, size, LIMITS);
    assert_eq!(plan.spans, vec![256 * 1024..MIB], "the rest of the first block");
    let ahead = plan.prefetch.expect("a new epoch");
    assert_eq!(ahead.start, MIB);
    assert_eq!(ahead.end, LIMITS.max + MIB, "the largest window at the first read, to a block boundary");
}

/// One column of a Parquet file: chunks of `chunk` bytes, far apart, each read front to back
/// in 1 MiB reads. Bytes requested ahead of all the reads, beyond the chunks.
fn overshoot_reading_chunks(chunk: u64) -> u64 {
    let mut w = ReadaheadWindow::default();
    let size = 1024 * MIB;
    let mut requested = Vec::new();
    for group in 0..8 {
        let start = group * 128 * MIB + 20 * MIB;
        for offset in (start..start + chunk).step_by(MIB as usize) {
            requested.extend(w.on_read(offset..offset + MIB, size, LIMITS).prefetch);
        }
    }
    let in_chunks = |r: &Range<u64>| -> u64 {
        let chunks = (0..8).map(|g| g * 128 * MIB + 20 * MIB);
        chunks.map(|s| r.end.min(s + chunk).saturating_sub(r.start.max(s))).sum()
    };
    requested.iter().map(|r| r.end - r.start - in_chunks(r)).sum()
}

#[test]
fn a_reader_that_jumps_gets_runs_as_long_as_its_last_not_longer() {
    let chunk = 4 * MIB;
    let overshoot = overshoot_reading_chunks(chunk);
    // Only the first chunk, before anything predicts its length, is read past.
    assert!(overshoot <= chunk, "{overshoot} bytes fetched past 8 chunks of {chunk}");
    let overshoot = overshoot_reading_chunks(16 * MIB);
    assert!(overshoot <= 16 * MIB, "{overshoot} bytes fetched past 8 chunks of 16 MiB");
}

#[test]
fn the_kernels_late_readahead_of_the_last_run_lengthens_the_prediction_and_keeps_the_current_run() {
    let mut w = ReadaheadWindow::default();
    let size = 1024 * MIB;
    let half = MIB / 2;
    let chunk_reads = |start: u64| (0..8).map(move |i| start + i * half..start + (i + 1) * half);
    for r in chunk_reads(20 * MIB) {
        w.on_read(r, size, LIMITS);
    }
    // The next chunk's first READ, then the kernel's readahead past the first chunk's end.
    let first = w.on_read(300 * MIB..300 * MIB + half, size, LIMITS);
    assert_eq!(first.prefetch, Some(301 * MIB..304 * MIB), "predicted: 4 MiB, like the last run");
    assert_eq!(first.spans, vec![300 * MIB + half..301 * MIB], "the rest of the first block");
    let late = w.on_read(24 * MIB..24 * MIB + half, size, LIMITS);
    assert_eq!(late, ReadPlan { own_bytes: true, ..ReadPlan::default() });
    let second = w.on_read(300 * MIB + half..301 * MIB, size, LIMITS);
    assert!(second.own_bytes, "read from the span");
    let (mut furthest, mut spans) = (304 * MIB, second.spans);
    for r in chunk_reads(300 * MIB).skip(2) {
        let plan = w.on_read(r.clone(), size, LIMITS);
        furthest = plan.prefetch.map_or(furthest, |p| p.end.max(furthest));
        spans.extend(plan.spans);
        assert!(!plan.own_bytes, "{r:?} is read from blocks fetched ahead");
    }
    assert_eq!(furthest, 304 * MIB, "whole blocks up to the predicted end (304.5 MiB), no further");
    assert_eq!(spans, vec![304 * MIB..304 * MIB + half], "and the last, partial block as a span");
    let tail = w.on_read(304 * MIB..304 * MIB + half, size, LIMITS);
    assert_eq!(tail, ReadPlan { own_bytes: true, ..ReadPlan::default() }, "the partial last block: read from the span");
}

#[test]
fn a_predicted_run_that_starts_mid_block_fetches_whole_blocks_from_the_next_boundary() {
    let mut w = ReadaheadWindow::default();
    let size = 1024 * MIB;
    let half = MIB / 2;
    for i in 0..8 {
        w.on_read(i * half..(i + 1) * half, size, LIMITS);
    }
    let start = 300 * MIB + 123_457;
    let first = w.on_read(start..start + half, size, LIMITS);
    assert!(first.own_bytes, "the first block's bytes before the run are not wanted");
    assert_eq!(first.prefetch, Some(301 * MIB..304 * MIB));
    assert_eq!(
        first.spans,
        vec![start + half..301 * MIB, 304 * MIB..start + 4 * MIB],
        "the rest of the first block, and the run's part of its last"
    );
    let second = w.on_read(start + half..start + MIB, size, LIMITS);
    assert!(second.own_bytes, "it straddles into block 301, which readahead brings");
    let third = w.on_read(start + MIB..start + MIB + half, size, LIMITS);
    assert!(!third.own_bytes);
}

#[test]
fn a_run_past_its_prediction_grows_again() {
    let mut w = ReadaheadWindow::default();
    let size = 1024 * MIB;
    for i in 0..4 {
        w.on_read(i * MIB..(i + 1) * MIB, size, LIMITS);
    }
    let start = 500 * MIB;
    let mut furthest = 0;
    for i in 0..64 {
        if let Some(r) = w.on_read(start + i * MIB..start + (i + 1) * MIB, size, LIMITS).prefetch {
            furthest = r.end;
        }
    }
    assert!(w.window() >= 16 * MIB, "a long run's window grows: {}", w.window());
    assert!(furthest >= start + 64 * MIB + 8 * MIB, "and reaches ahead of the reader: {furthest}");
}

#[test]
fn a_window_shrinks_when_its_limit_falls() {
    let mut w = ReadaheadWindow::default();
    for i in 0..64 {
        w.on_read(i * MIB..(i + 1) * MIB, 1024 * MIB, LIMITS);
    }
    assert_eq!(w.window(), 64 * MIB);
    let shared = WindowLimits { initial: MIB, max: 8 * MIB, stop_at: None };
    let mut ahead_of_reader = 0;
    for i in 64..128 {
        if let Some(r) = w.on_read(i * MIB..(i + 1) * MIB, 1024 * MIB, shared).prefetch {
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
    let mut furthest = 0;
    for i in 0..4 {
        if let Some(r) = w.on_read(i * MIB..((i + 1) * MIB).min(size), size, LIMITS).prefetch {
            assert!(r.end <= size);
            furthest = furthest.max(r.end);
        }
    }
    assert_eq!(furthest, size, "a sequential reader's window reaches the end, and stops there");
}

#[test]
fn a_run_after_a_jump_is_led_by_bytes_until_it_is_long_then_by_whole_blocks() {
    let mut w = ReadaheadWindow::default();
    let size = 1024 * MIB;
    let start = 300 * MIB + 123 * 1024;
    let read = 256 * 1024;
    let mut requested_past = 0;
    let mut offset = start;
    while offset < start + YOUNG_RUN - read {
        let plan = w.on_read(offset..offset + read, size, LIMITS);
        assert_eq!(plan.prefetch, None, "no whole blocks while the run is young (at {})", offset - start);
        assert!(plan.own_bytes, "its reads take their bytes from the leads");
        offset += read;
        if let Some(lead) = plan.lead {
            requested_past = lead.end - offset;
        }
        let run = offset - start;
        let most = (run / YOUNG_LEAD_SHARE).max(3 * read);
        assert!(requested_past <= most, "{requested_past} bytes requested past the reader after {run}");
    }
    assert!(requested_past > 0, "the reader has a lead");
    let mut blocks = None;
    while blocks.is_none() && offset < start + 2 * YOUNG_RUN {
        blocks = w.on_read(offset..offset + read, size, LIMITS).prefetch;
        offset += read;
    }
    let blocks = blocks.expect("a long run gets a window of whole blocks");
    assert_eq!(blocks.start % MIB, 0, "{blocks:?}");
}
