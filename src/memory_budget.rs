//! The mount's one memory budget (`--cache-size`) and every share of it, decided here and nowhere
//! else: the files being written, the blocks being received, the free block buffers, the tiers'
//! fill queues, the spans, the cached blocks, the readahead windows and the prefetch queue's
//! window. Each part of the daemon takes its share from these functions.

const MIB: u64 = 1024 * 1024;

/// Files being written take a quarter of the budget, on a mount that writes: with the default
/// 512 MiB, sixteen parts of 8 MiB in flight.
const UPLOAD_SHARE: u64 = 4;

/// An eighth of the reads' share holds blocks on their way to the disk cache: a 1 GiB read at
/// loopback speed outruns the disk's writer only briefly, and a full queue drops fills, never
/// slows a reader.
const DISK_FILL_SHARE: u64 = 8;

/// An eighth of the whole budget holds blocks on their way up to the shared cache.
const SHARED_FILL_SHARE: u64 = 8;

/// A sixty-fourth of the reads' share holds spans, parts of blocks fetched ahead for one stream
/// (two per column chunk a reader is in, each under a block; 8 MiB by default, for four such
/// readers at once); beyond it, readahead fetches whole blocks into the cache. A sixteenth taken
/// from the cache slowed eight sequential readers of their own files (s3-like, 857-989 MB/s in
/// nine runs, against 1019-1110 in four runs that left the cache its whole share).
const SPAN_SHARE: u64 = 64;

/// An eighth of the reads' share is kept as free block buffers, for reuse once their blocks leave
/// the cache. A sequential reader gives back blocks in bursts (readahead tops its window up a
/// quarter at a time), and buffers beyond the free list go back to the allocator only for the
/// next ones to be faulted in fresh: a 1 GiB `dd` on loopback faulted in ~62,000 pages with 16
/// free buffers and ~18,000 with 64 (an eighth of the default budget), and ran 5-9 % faster.
const FREE_BUFFER_SHARE: u64 = 8;

/// The prefetch queue's files fetched and not yet opened take at most a quarter of the cached
/// blocks (the job's own reads stay cached beside them, and a file fetched ahead is not evicted
/// before its turn), or half the disk cache's cap when there is one.
const QUEUE_MEMORY_SHARE: u64 = 4;
const QUEUE_DISK_SHARE: u64 = 2;

/// `--cache-size` split between reads and files being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub reads: u64,
    pub uploads: u64,
}

/// Splits `total`: a quarter for files being written, none on a read-only mount. Refused when
/// the writes' quarter holds fewer than two parts of `part_size` (one filling, one going up).
pub fn split(total: u64, read_only: bool, part_size: u64) -> Result<Split, String> {
    if read_only {
        return Ok(Split { reads: total, uploads: 0 });
    }
    let uploads = total / UPLOAD_SHARE;
    if uploads < 2 * part_size {
        return Err(format!(
            "--cache-size {} MiB leaves {} MiB for writing, less than two parts of --upload-part-size {} MiB: \
             raise --cache-size, lower --upload-part-size, or mount --read-only",
            total / MIB,
            uploads / MIB,
            part_size / MIB
        ));
    }
    Ok(Split { reads: total - uploads, uploads })
}

/// The shared cache's fill queue, of the whole budget `total`.
pub fn shared_fills(total: u64) -> u64 {
    total / SHARED_FILL_SHARE
}

/// The disk cache's fill queue, of the reads' share.
pub fn disk_fills(reads: u64) -> u64 {
    reads / DISK_FILL_SHARE
}

/// What the reads' share holds, on a mount with these tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadShares {
    /// Blocks being received: one per GET in flight.
    pub in_flight: u64,
    /// Free block buffers kept for reuse, as a count of buffers.
    pub free_buffers: u64,
    pub disk_fills: u64,
    pub shared_fills: u64,
    /// Parts of blocks fetched for one stream; none with a disk cache, where readahead brings
    /// whole blocks so every block a reader passes reaches the disk.
    pub spans: u64,
    /// What is left for cached blocks: at least one block.
    pub blocks: u64,
}

/// The reads' share `reads` of a mount fetching `block`-byte blocks over at most `connections`
/// GETs, with a disk cache or not, and `shared_fills` bytes queued for a shared cache.
pub fn read_shares(reads: u64, block: u64, connections: usize, disk: bool, shared_fills: u64) -> ReadShares {
    let in_flight = connections as u64 * block;
    let free_buffers = reads / FREE_BUFFER_SHARE / block.max(1);
    let disk_fills = if disk { disk_fills(reads) } else { 0 };
    let spans = if disk { 0 } else { reads / SPAN_SHARE };
    let outside = in_flight + free_buffers * block + disk_fills + shared_fills + spans;
    let blocks = reads.saturating_sub(outside).max(block);
    ReadShares { in_flight, free_buffers, disk_fills, shared_fills, spans, blocks }
}

/// What the readahead windows of all the streams reading at once may hold together: three
/// quarters of the cached blocks, so blocks fetched ahead are not evicted before they are read
/// (eight readers, each with a window of a quarter of the cache, fetched 1.27 bytes per byte).
pub fn readahead_windows(blocks: u64) -> u64 {
    blocks / 4 * 3
}

/// How far ahead of the job the prefetch queue fetches: a share of the cached blocks, or of the
/// disk cache's cap.
pub fn queue_window(blocks: u64, disk_cap: Option<u64>) -> u64 {
    match disk_cap {
        Some(cap) => cap / QUEUE_DISK_SHARE,
        None => blocks / QUEUE_MEMORY_SHARE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_budget_is_shared_as_the_startup_line_and_the_readme_say() {
        let split = split(512 * MIB, false, 8 * MIB).expect("fits");
        assert_eq!(split, Split { reads: 384 * MIB, uploads: 128 * MIB });
        assert_eq!(super::split(512 * MIB, true, 8 * MIB).map(|s| s.reads), Ok(512 * MIB));
        let shares = read_shares(split.reads, MIB, 32, false, 0);
        assert_eq!(shares.in_flight, 32 * MIB);
        assert_eq!(shares.free_buffers, 48);
        assert_eq!(shares.spans, 6 * MIB);
        assert_eq!(shares.blocks, 384 * MIB - 32 * MIB - 48 * MIB - 6 * MIB);
        assert_eq!(queue_window(shares.blocks, None), shares.blocks / 4, "about 75 MiB");
    }

    #[test]
    fn every_share_fits_in_the_budget_whatever_the_tiers() {
        for total in [64 * MIB, 512 * MIB, 8192 * MIB] {
            for (disk, shared) in [(false, false), (true, false), (false, true), (true, true)] {
                let split = split(total, false, 8 * MIB).expect("fits");
                let shared = if shared { shared_fills(total) } else { 0 };
                let s = read_shares(split.reads, MIB, 32, disk, shared);
                let held = s.in_flight + s.free_buffers * MIB + s.disk_fills + s.shared_fills + s.spans + s.blocks;
                assert!(held + split.uploads <= total || s.blocks == MIB, "{total}: {s:?}");
                assert!(readahead_windows(s.blocks) < s.blocks);
            }
        }
    }

    #[test]
    fn a_budget_without_room_for_two_upload_parts_is_refused_with_the_way_out() {
        let refused = split(32 * MIB, false, 8 * MIB).expect_err("8 MiB for writing");
        assert!(refused.contains("--read-only") && refused.contains("--upload-part-size"), "{refused}");
    }
}
