//! Routing reads to streams: pure logic, the shapes real programs make.

use super::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const LIMITS: WindowLimits = WindowLimits { initial: MIB, max: 64 * MIB, stop_at: None };
const SIZE: u64 = 1024 * MIB;

/// Bytes of `reads` that no plan fetched ahead of them (the reads that wait for a GET of their
/// own), and the bytes fetched ahead in all.
fn replay(streams: &VersionStreams, reads: &[Range<u64>]) -> (usize, u64) {
    let mut requested: Vec<Range<u64>> = Vec::new();
    let mut waited = 0;
    for r in reads {
        let covered = requested.iter().any(|q| q.start <= r.start && r.end <= q.end);
        if !covered {
            waited += 1;
        }
        let plan = streams.route(r.clone(), SIZE, LIMITS).plan;
        requested.extend(plan.prefetch);
        requested.extend(plan.prefetch_behind);
        requested.extend(plan.spans);
        requested.extend(plan.lead);
        requested.push(r.clone());
    }
    // Adjacent requests count as one, so a read across two of them is covered.
    requested.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::new();
    for r in requested {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let fetched = merged.iter().map(|r| r.end - r.start).sum();
    (waited, fetched)
}

fn sequential(from: u64, to: u64, step: u64) -> Vec<Range<u64>> {
    (from..to).step_by(step as usize).map(|o| o..(o + step).min(to)).collect()
}

#[test]
fn a_jump_ahead_and_back_keeps_the_stream_it_left() {
    let streams = VersionStreams::default();
    for r in sequential(0, 16 * MIB, 256 * KIB) {
        streams.route(r, SIZE, LIMITS);
    }
    let window = streams.largest_window();
    assert!(window >= 8 * MIB, "{window}");
    // A memcpy of the next 8 MiB touches its last page first, then goes on from where it was.
    streams.route(24 * MIB - 132 * KIB..24 * MIB, SIZE, LIMITS);
    let mut prefetched = false;
    for r in sequential(16 * MIB, 24 * MIB, 256 * KIB) {
        prefetched |= streams.route(r, SIZE, LIMITS).plan.prefetch.is_some();
    }
    assert!(prefetched, "the stream went on fetching ahead");
    assert!(streams.largest_window() >= window, "and kept its window");
    assert_eq!(streams.count(), 1, "the stream met the one the jump started, which went");
}

#[test]
fn a_reader_going_backwards_gets_the_blocks_below_it_fetched_ahead() {
    let streams = VersionStreams::default();
    let reads: Vec<Range<u64>> = (0..200).map(|i| 64 * MIB - (i + 1) * 132 * KIB..64 * MIB - i * 132 * KIB).collect();
    let (waited, fetched) = replay(&streams, &reads);
    assert!(waited <= 16, "{waited} of {} reads waited", reads.len());
    let read = 200 * 132 * KIB;
    assert!(fetched <= read + LIMITS.max + 2 * MIB, "{fetched} bytes for {read}: at most a window below the reader");
}

#[test]
fn threads_reading_their_own_regions_of_one_descriptor_each_keep_a_window() {
    let streams = VersionStreams::default();
    let mut reads = Vec::new();
    for i in 0..64 {
        for t in 0..4 {
            let o = t * 256 * MIB + i * MIB;
            reads.push(o..o + MIB);
        }
    }
    let (waited, fetched) = replay(&streams, &reads);
    assert!(waited <= 4 * 4, "{waited} of {} reads waited", reads.len());
    assert!(fetched <= 4 * 64 * MIB + 4 * 64 * MIB, "{fetched}");
    assert_eq!(streams.count(), 4);
}

#[test]
fn a_window_stops_where_the_next_readers_part_begins() {
    let streams = VersionStreams::default();
    let quarter = SIZE / 4;
    let mut reads = Vec::new();
    for i in 0..(quarter / MIB) {
        for t in 0..4 {
            let o = t * quarter + i * MIB;
            reads.push(o..o + MIB);
        }
    }
    let mut furthest_before_second = 0;
    for r in &reads {
        let plan = streams.route(r.clone(), SIZE, LIMITS).plan;
        if r.start < quarter
            && let Some(p) = plan.prefetch
        {
            furthest_before_second = furthest_before_second.max(p.end);
        }
    }
    assert!(furthest_before_second <= quarter, "the first reader's window ran to {furthest_before_second}");
}

#[test]
fn random_reads_are_not_taken_for_streams() {
    let streams = VersionStreams::default();
    let mut fetched_ahead = 0;
    // Reads 3 MiB apart: within the tolerance of the stream read last, never close to another.
    let mut offset = 0u64;
    for i in 0..100u64 {
        offset = (offset + 37 * MIB + i * 4096) % (SIZE - MIB);
        let plan = streams.route(offset..offset + 4096, SIZE, LIMITS).plan;
        fetched_ahead += plan.prefetch.map_or(0, |p| p.end - p.start);
        fetched_ahead += plan.prefetch_behind.map_or(0, |p| p.end - p.start);
    }
    assert_eq!(fetched_ahead, 0);
    assert!(streams.count() <= MAX_STREAMS);
}
