//! The fetch layer against the in-memory store: exact bytes, request counts, sharing, staleness
//! and the memory budget.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::cache::BlockKey;
use crate::object_id::{ETag, ObjectId};
use crate::store::StoreError;
use crate::store::memory::MemoryStore;

const MIB: u64 = 1024 * 1024;

/// Deterministic content: byte i of object `seed` (cheap to check anywhere).
fn content(seed: u8, len: usize) -> Bytes {
    (0..len).map(|i| (i as u64).wrapping_mul(2654435761).wrapping_add(seed as u64).to_le_bytes()[1]).collect()
}

fn setup(size: usize, config: FetchConfig) -> (Arc<MemoryStore>, Arc<Fetcher<MemoryStore>>, Arc<ObjectId>, Bytes) {
    let store = Arc::new(MemoryStore::new());
    let data = content(7, size);
    let etag = store.put("obj", data.clone());
    let fetcher = Arc::new(Fetcher::new(Arc::clone(&store), config, Tiers::default(), Arc::default()));
    (store, fetcher, Arc::new(ObjectId { key: "obj".into(), etag }), data)
}

/// Reads all of `object` (whose bytes are `data`) front to back in 1 MiB reads through one stream,
/// checking every byte, and waiting `pause` after each read (a consumer slower than the store).
async fn read_sequentially(fetcher: &Arc<Fetcher<MemoryStore>>, object: &Arc<ObjectId>, data: &Bytes, pause: Duration) {
    let size = data.len() as u64;
    let stream = SharedStreams::default();
    let mut offset = 0;
    while offset < size {
        let got = fetcher.read(object, size, &stream, offset, 1 << 20).await.unwrap();
        assert!(got == data.slice(offset as usize..offset as usize + got.len()), "bytes at {offset}");
        offset += got.len() as u64;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_read_of_256_mib_makes_few_gets() {
    let size = 256 * MIB as usize;
    let config = FetchConfig::default();
    let (store, fetcher, object, data) = setup(size, config);
    read_sequentially(&fetcher, &object, &data, Duration::ZERO).await;
    let gets = store.counts().gets;
    // While the window doubles from one block to its maximum, each step is split over up to
    // PARALLEL_SPLIT GETs (one more where a step ends mid-part); after that, one GET per part.
    let parts = size as u64 / config.part_size;
    let doublings = u64::from((config.max_readahead / config.block_size).ilog2());
    // A reader may also claim, in one GET each, blocks just ahead of it before a readahead task
    // has run: at most a couple per top-up (every quarter of the largest window).
    let top_ups = size as u64 / (config.max_readahead / 4);
    let bound = parts + doublings * (PARALLEL_SPLIT + 1) + 2 * top_ups;
    assert!(gets <= bound, "{gets} GETs for {parts} parts (bound {bound})");
    assert!(gets >= parts, "parts are not merged beyond the part size");
    assert!(store.counts().bytes_sent <= size as u64 + config.part_size, "read each byte about once");
    assert_eq!(fetcher.cache().used(), 0, "blocks a sequential reader consumed leave the cache");
}

/// The kernel's readahead for a mount (`KERNEL_READAHEAD` in `fuse/session.rs`).
const KERNEL_READAHEAD: u64 = 256 * 1024;

/// The FUSE READs the kernel sends (recorded with `--log-level trace`, read_ahead_kb 256, 1 MiB
/// max read) when a program reads front to back with `app_read` bytes at a time: its readahead
/// window grows from 4x the read size to 256 KiB, and then asks for 256 KiB at a time from
/// wherever the growth left it, not at block boundaries.
fn kernel_reads(app_read: u64, size: u64) -> Vec<Range<u64>> {
    const MAX: u64 = KERNEL_READAHEAD;
    // mm/readahead.c: the first window is 4x a small read, 2x a middling one; the next ones grow
    // 4x while under a sixteenth of the maximum, then 2x.
    let first = app_read.next_power_of_two();
    let mut len = if first <= MAX / 32 {
        4 * first
    } else if first <= MAX / 4 {
        2 * first
    } else {
        MAX
    };
    let mut reads = Vec::new();
    let mut offset = 0;
    while offset < size {
        let end = (offset + len).min(size);
        reads.push(offset..end);
        offset = end;
        len = if len < MAX / 16 { 4 * len } else { (2 * len).min(MAX) };
    }
    reads
}

#[test]
fn kernel_reads_match_the_recording() {
    let starts: Vec<u64> = kernel_reads(4096, 8 * MIB).iter().map(|r| r.start).take(8).collect();
    assert_eq!(starts, [0, 16384, 49152, 114688, 245760, 507904, 770048, 1032192], "dd bs=4K");
    let starts: Vec<u64> = kernel_reads(64 * 1024, 8 * MIB).iter().map(|r| r.start).take(6).collect();
    assert_eq!(starts, [0, 131072, 393216, 655360, 917504, 1179648], "dd bs=64K");
    let starts: Vec<u64> = kernel_reads(256 * 1024, 8 * MIB).iter().map(|r| r.start).take(4).collect();
    assert_eq!(starts, [0, 262144, 524288, 786432], "dd bs=256K");
}

/// GETs and bytes sent for reading all of an object of `size` bytes as the kernel does for
/// `app_read`-byte reads: its READs two at a time (it keeps more than one in flight), each checked.
async fn read_as_the_kernel_does(app_read: u64, size: usize, config: FetchConfig) -> (u64, u64, u64) {
    let (store, fetcher, object, data) = setup(size, config);
    store.set_get_delay(Duration::from_millis(1));
    let stream = SharedStreams::default();
    for pair in kernel_reads(app_read, size as u64).chunks(2) {
        let reads = pair.iter().map(|r| fetcher.read(&object, size as u64, &stream, r.start, (r.end - r.start) as u32));
        for (r, got) in pair.iter().zip(futures::future::join_all(reads).await) {
            let got = got.unwrap();
            assert!(got == data.slice(r.start as usize..r.end as usize), "bytes of {r:?}");
        }
    }
    let grown = stream.largest_window();
    (store.counts().gets, store.counts().bytes_sent, grown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_application_reads_grow_the_window_and_cost_as_few_gets_as_1_mib_reads() {
    let size = 256 * MIB as usize;
    // A budget smaller than the object, so what a reader leaves behind in the cache matters.
    let config = FetchConfig { cache_bytes: 128 * MIB, ..FetchConfig::default() };
    let (aligned_gets, _, _) = read_as_the_kernel_does(MIB, size, config).await;
    for app_read in [4096, 64 * 1024, 256 * 1024] {
        let (gets, sent, window) = read_as_the_kernel_does(app_read, size, config).await;
        assert!(window >= 16 * MIB, "{app_read} B reads: the window grew to {window} only");
        assert!(
            gets <= aligned_gets + aligned_gets / 5,
            "{app_read} B reads: {gets} GETs, against {aligned_gets} for 1 MiB reads"
        );
        assert!(sent <= size as u64 + config.part_size, "{app_read} B reads: {sent} bytes sent for {size}");
    }
}

/// The READs the kernel sends for one column of a Parquet file read with 1 MiB `pread`s (recorded
/// with read_ahead_kb 256): chunks of `chunk` bytes at `starts`, each read in 256 KiB READs from
/// its first page (the second 8 KiB short) up to one that starts past the chunk's end: the
/// kernel's own readahead, which arrives after the first READ of the next chunk.
fn column_reads(starts: &[u64], chunk: u64) -> Vec<Range<u64>> {
    let mut reads: Vec<Range<u64>> = Vec::new();
    let mut late: Option<Range<u64>> = None;
    for &start in starts {
        let mut chunk_reads: Vec<Range<u64>> = Vec::new();
        let mut offset = start / 4096 * 4096;
        loop {
            let len = if chunk_reads.len() == 1 { KERNEL_READAHEAD - 8192 } else { KERNEL_READAHEAD };
            chunk_reads.push(offset..offset + len);
            if offset >= start + chunk {
                break;
            }
            offset += len;
        }
        let tail = chunk_reads.pop();
        reads.push(chunk_reads.remove(0));
        reads.extend(late.take());
        reads.extend(chunk_reads);
        late = tail;
    }
    reads.extend(late);
    reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_column_chunks_fetches_little_more_than_the_kernel_asks_for() {
    let size = 1024 * MIB;
    let (store, fetcher, object, data) = setup(size as usize, FetchConfig::default());
    // A GET takes a while, as over a network, so readahead has started before the next READ.
    store.set_get_delay(Duration::from_millis(2));
    let stream = SharedStreams::default();
    // Chunk starts off block boundaries, as in a real file.
    let starts: Vec<u64> = (0..8).map(|g| g * 128 * MIB + 20 * MIB + 123_457).collect();
    let reads = column_reads(&starts, 4 * MIB);
    for r in &reads {
        let got = fetcher.read(&object, size, &stream, r.start, (r.end - r.start) as u32).await.unwrap();
        assert!(got == data.slice(r.start as usize..r.end as usize), "bytes of {r:?}");
    }
    // Readahead still in flight when the reader stops counts too: wait until nothing more arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = store.counts().bytes_sent;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if store.counts().bytes_sent == before || std::time::Instant::now() > deadline {
            break;
        }
    }
    let asked: u64 = reads.iter().map(|r| r.end - r.start).sum();
    let sent = store.counts().bytes_sent;
    assert!(sent >= asked, "every byte the kernel asked for was fetched");
    // The first chunk has nothing to predict its length, and block edges cost a little more.
    assert!(sent * 100 <= asked * 106, "{sent} bytes sent for {asked} the kernel asked for");
    // Only a chunk's first READ, and the kernel's readahead past its end, wait for GETs of their
    // own: the rest of the chunk's first and last blocks were fetched ahead with its whole ones.
    let waited = fetcher.metrics.cache_misses.get();
    assert!(waited <= 2 * starts.len() as u64, "{waited} of {} READs waited for a GET of their own", reads.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_4k_read_fetches_at_most_one_block() {
    let size = 64 * MIB as usize;
    let (store, fetcher, object, data) = setup(size, FetchConfig::default());
    let stream = SharedStreams::default();
    let offset = 40 * MIB + 12345;
    let got = fetcher.read(&object, size as u64, &stream, offset, 4096).await.unwrap();
    assert!(got == data.slice(offset as usize..offset as usize + 4096));
    assert_eq!(store.counts().gets, 1);
    assert!(store.counts().bytes_sent <= MIB, "sent {} bytes for a 4 KiB read", store.counts().bytes_sent);
    assert_eq!(store.counts().bytes_sent, 4096, "a random partial-block read fetches only its bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_read_of_cached_blocks_makes_no_get() {
    let size = 64 * MIB as usize;
    let (store, fetcher, object, data) = setup(size, FetchConfig::default());
    let sequential = SharedStreams::default();
    for i in 0..4 {
        fetcher.read(&object, size as u64, &sequential, i * MIB, MIB as u32).await.unwrap();
    }
    // Readahead has brought blocks beyond the fourth; wait until the next one has arrived.
    let ahead = 4 * MIB + 100;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let slot = loop {
        match fetcher.cache().peek(&BlockKey { object: Arc::clone(&object), index: ahead / MIB }) {
            Some(slot) => break slot,
            None => {
                assert!(std::time::Instant::now() < deadline, "readahead claimed the block");
                tokio::time::sleep(Duration::from_millis(1)).await
            }
        }
    };
    slot.wait().await.expect("readahead brought the block");
    // Any GET from here on fails, so a successful read proves it came from the cache.
    store.fail_next_gets(u64::MAX);
    let got = fetcher.read(&object, size as u64, &SharedStreams::default(), ahead, 4096).await;
    let got = got.expect("served from the blocks readahead brought");
    assert!(got == data.slice(ahead as usize..ahead as usize + 4096));
}

/// GETs and bytes sent for a random read of `wanted` once block `cached` is in the cache.
async fn fetched_beside_a_cached_block(cached: u64, wanted: Range<u64>) -> (u64, u64) {
    let size = 64 * MIB;
    let (store, fetcher, object, data) = setup(size as usize, FetchConfig::default());
    // A random read of a whole block caches it.
    fetcher.read(&object, size, &SharedStreams::default(), cached * MIB, MIB as u32).await.unwrap();
    let before = store.counts();
    let len = (wanted.end - wanted.start) as u32;
    let got = fetcher.read(&object, size, &SharedStreams::default(), wanted.start, len).await.unwrap();
    assert!(got == data.slice(wanted.start as usize..wanted.end as usize));
    let after = store.counts();
    (after.gets - before.gets, after.bytes_sent - before.bytes_sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_read_half_in_a_cached_block_fetches_only_the_other_half() {
    let after_it = fetched_beside_a_cached_block(10, 11 * MIB - 100_000..11 * MIB + 50_000).await;
    assert_eq!(after_it, (1, 50_000), "only the bytes past the cached block");
    let before_it = fetched_beside_a_cached_block(11, 11 * MIB - 70_000..11 * MIB + 30_000).await;
    assert_eq!(before_it, (1, 70_000), "only the bytes before the cached block");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_are_fetched_whole_in_one_get() {
    let size = 3 * MIB as usize + 5;
    let (store, fetcher, object, data) = setup(size, FetchConfig::default());
    let stream = SharedStreams::default();
    for offset in [2 * MIB, 0, MIB, 3 * MIB] {
        let got = fetcher.read(&object, size as u64, &stream, offset, 4096).await.unwrap();
        assert!(got == data.slice(offset as usize..(offset as usize + 4096).min(size)));
    }
    assert_eq!(store.counts().gets, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_readers_of_one_region_cause_one_get_per_block() {
    let size = 64 * MIB as usize;
    let (store, fetcher, object, data) = setup(size, FetchConfig::default());
    store.set_get_delay(Duration::from_millis(50));
    let read = |offset: u64| {
        let (fetcher, object) = (Arc::clone(&fetcher), Arc::clone(&object));
        tokio::spawn(async move {
            let stream = SharedStreams::default();
            fetcher.read(&object, size as u64, &stream, offset, 2 * MIB as u32).await.unwrap()
        })
    };
    let (a, b) = (read(30 * MIB), read(30 * MIB));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let want = data.slice(30 * MIB as usize..32 * MIB as usize);
    assert!(a == want && b == want);
    // Blocks are claimed one by one, so the two readers may split the region between them, but
    // no block is fetched twice.
    assert!(store.counts().gets <= 2, "{} GETs for two blocks", store.counts().gets);
    assert_eq!(store.counts().bytes_sent, 2 * MIB, "each block was fetched once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_mid_read_fails_stale_never_mixed() {
    let size = 64 * MIB as usize;
    let (store, fetcher, object, data) = setup(size, FetchConfig::default());
    let stream = SharedStreams::default();
    let first = fetcher.read(&object, size as u64, &stream, 0, 4096).await.unwrap();
    assert!(first == data.slice(0..4096));
    // Past the first block, the reader waits for the blocks its window brings whole.
    let next = fetcher.read(&object, size as u64, &stream, MIB, 4096).await.unwrap();
    assert!(next == data.slice(MIB as usize..MIB as usize + 4096));
    store.put("obj", content(9, size));
    let later = fetcher.read(&object, size as u64, &SharedStreams::default(), 50 * MIB, 4096).await;
    assert_eq!(later, Err(StoreError::PreconditionFailed));
    let again = fetcher.read(&object, size as u64, &SharedStreams::default(), MIB + 4096, 4096).await.unwrap();
    let cached = MIB as usize + 4096..MIB as usize + 8192;
    assert!(again == data.slice(cached), "bytes already cached for the old version stay the old version's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_never_exceeds_its_budget() {
    let size = 128 * MIB as usize;
    let config = FetchConfig { cache_bytes: 32 * MIB, ..FetchConfig::default() };
    let (_store, fetcher, object, data) = setup(size, config);
    let stream = SharedStreams::default();
    let mut offset = 0;
    while offset < size as u64 {
        let got = fetcher.read(&object, size as u64, &stream, offset, 1 << 20).await.unwrap();
        assert!(got == data.slice(offset as usize..offset as usize + got.len()));
        assert!(fetcher.cache().used() <= 32 * MIB, "cache holds {} bytes", fetcher.cache().used());
        offset += got.len() as u64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sequential_readers_share_the_budget_without_refetching() {
    const READERS: u8 = 8;
    let size = 64 * MIB as usize;
    let store = Arc::new(MemoryStore::new());
    store.set_get_delay(Duration::from_millis(5));
    let config = FetchConfig { cache_bytes: 128 * MIB, ..FetchConfig::default() };
    let metrics = Arc::new(Metrics::default());
    let fetcher = Arc::new(Fetcher::new(Arc::clone(&store), config, Tiers::default(), Arc::clone(&metrics)));
    let readers: Vec<_> = (0..READERS)
        .map(|seed| {
            let data = content(seed, size);
            let key = format!("obj{seed}");
            let object = Arc::new(ObjectId { etag: store.put(&key, data.clone()), key });
            let fetcher = Arc::clone(&fetcher);
            // Consumers slower than the store, so readahead runs their windows ahead.
            tokio::spawn(async move { read_sequentially(&fetcher, &object, &data, Duration::from_millis(2)).await })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
    let total = u64::from(READERS) * size as u64;
    let sent = store.counts().bytes_sent;
    let unread = metrics.prefetched_unread_bytes.get();
    // Their windows together stay within the budget, so nothing fetched ahead is evicted unread.
    assert!(sent <= total + total / 20, "{sent} bytes sent for {total} read ({unread} evicted unread)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_get_is_an_error_and_the_next_read_retries() {
    let size = 64 * MIB as usize;
    let (store, fetcher, object, data) = setup(size, FetchConfig::default());
    store.fail_next_gets(1);
    let stream = SharedStreams::default();
    assert!(fetcher.read(&object, size as u64, &stream, 10 * MIB, 4096).await.is_err());
    let got = fetcher.read(&object, size as u64, &stream, 10 * MIB, 4096).await.unwrap();
    assert!(got == data.slice(10 * MIB as usize..10 * MIB as usize + 4096));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_cut_off_mid_stream_resume_from_the_last_byte() {
    let size = 16 * MIB as usize;
    let (store, fetcher, object, data) = setup(size, FetchConfig::default());
    store.cut_next_bodies(3, 100_000);
    read_sequentially(&fetcher, &object, &data, Duration::ZERO).await;
    assert!(fetcher.metrics.body_resumes.get() == 3, "each cut body was resumed once");
    // A random read's direct GET resumes too.
    store.cut_next_bodies(1, 10);
    let stream = SharedStreams::default();
    let fresh = Arc::new(Fetcher::new(Arc::clone(&store), FetchConfig::default(), Tiers::default(), Arc::default()));
    let got = fresh.read(&object, size as u64, &stream, 5 * MIB + 7, 4096).await.unwrap();
    assert!(got == data.slice(5 * MIB as usize + 7..5 * MIB as usize + 7 + 4096));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_off_again_and_again_without_progress_fails_the_read_and_the_next_read_retries() {
    let size = 8 * MIB as usize;
    let (store, fetcher, object, data) = setup(size, FetchConfig::default());
    store.cut_next_bodies(1000, 0);
    let stream = SharedStreams::default();
    assert!(fetcher.read(&object, size as u64, &stream, 0, 4096).await.is_err());
    store.cut_next_bodies(0, 0);
    let got = fetcher.read(&object, size as u64, &stream, 0, 4096).await.unwrap();
    assert!(got == data.slice(0..4096));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of reads and seeks, with small blocks and parts so that reads cross block and
    /// part edges and the cache evicts, returns exactly the source bytes.
    #[test]
    fn random_reads_and_seeks_return_the_source_bytes(
        size in 1usize..300_000,
        ops in prop::collection::vec((0u64..320_000, 1u32..70_000, any::<bool>()), 1..40),
    ) {
        let config = FetchConfig {
            block_size: 4096,
            part_size: 16384,
            max_readahead: 65536,
            cache_bytes: 65536,
            max_connections: 4,
            body: BodyPolicy::default(),
            shared_fill_bytes: 0,
        };
        let (_store, fetcher, object, data) = setup(size, config);
        let rt = runtime();
        let stream = SharedStreams::default();
        let mut position = 0u64;
        for (seek_to, len, seek) in ops {
            if seek {
                position = seek_to;
            }
            let got = rt.block_on(fetcher.read(&object, size as u64, &stream, position, len)).unwrap();
            let start = (position as usize).min(size);
            let end = (position as usize + len as usize).min(size);
            prop_assert_eq!(&got[..], &data[start..end]);
            position += got.len() as u64;
        }
    }
}

#[test]
fn etags_of_versions_differ() {
    let store = MemoryStore::new();
    let a = store.put("k", Bytes::from_static(b"x"));
    let b = store.put("k", Bytes::from_static(b"x"));
    assert_ne!(a, b);
    assert_ne!(a, ETag::new(""));
}

mod with_a_disk_cache;
mod with_a_shared_cache;
