//! The fetch layer over a shared cache tier: what one node fetched, the next reads from the cache
//! alone; only what checks out is served; what a full queue dropped goes up later.

use super::*;
use crate::cache::shared::sealed::{self, Check};
use crate::cache::shared::{CpuPressure, SharedCache, SharedCacheConfig};
use crate::cache::tier::BlockTier;
use crate::metrics::SharedCacheMetrics;

const BLOCK: u64 = 1000;

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
}

type Node = Arc<Fetcher<MemoryStore>>;

fn node(source: &Arc<MemoryStore>, cache: &Arc<MemoryStore>, check: Check) -> (Node, SharedCacheMetrics) {
    node_with_queue(source, cache, check, 1 << 20)
}

fn node_with_queue(
    source: &Arc<MemoryStore>,
    cache: &Arc<MemoryStore>,
    check: Check,
    queue_bytes: u64,
) -> (Node, SharedCacheMetrics) {
    let metrics = SharedCacheMetrics::default();
    // Fills here must not wait on how busy the machine running the tests is.
    let pressure = CpuPressure::ignored();
    let config = SharedCacheConfig {
        prefix: "c/".into(),
        scope: "test\nsrc".into(),
        block: BLOCK,
        check,
        queue_bytes,
        pressure,
    };
    let shared = SharedCache::start(Arc::clone(cache), Arc::clone(cache), config, metrics.clone()).expect("started");
    // Every object here is smaller than a part: fetched whole at its first read.
    let fetch = FetchConfig { block_size: BLOCK, part_size: 64 * BLOCK, ..FetchConfig::default() };
    let tiers = Tiers::new(None, vec![shared as Arc<dyn BlockTier>]);
    (Arc::new(Fetcher::new(Arc::clone(source), fetch, tiers, Arc::default())), metrics)
}

async fn version(source: &MemoryStore, key: &str) -> (Arc<ObjectId>, u64) {
    let meta = source.head(key).await.expect("head");
    (Arc::new(ObjectId { key: key.into(), etag: meta.etag }), meta.size)
}

/// `range` of `key` as a reader's own bytes: from the tiers, else one GET of just them.
async fn read(node: &Node, source: &MemoryStore, key: &str, range: Range<u64>) -> Vec<u8> {
    let (object, size) = version(source, key).await;
    node.read_direct(&object, size, range.start..range.end.min(size)).await.expect("read").to_vec()
}

/// All of `key`, as a reader's first READ of a small object: its blocks claimed and filled.
async fn read_whole(node: &Node, source: &MemoryStore, key: &str) -> Vec<u8> {
    let (object, size) = version(source, key).await;
    node.read(&object, size, &SharedStreams::default(), 0, size as u32).await.expect("read").to_vec()
}

/// Waits until `bytes` went up: generously, since fills wait for quiet readers and for a busy
/// machine's CPUs, and only the outcome is asserted, never how soon it came.
async fn settled(metrics: &SharedCacheMetrics, bytes: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if metrics.written_bytes.get() >= bytes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} of {bytes} bytes went up", metrics.written_bytes.get());
}

#[tokio::test]
async fn a_second_node_reads_what_the_first_fetched_from_the_cache_alone() {
    let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    let bytes = data(3500);
    source.put("obj", Bytes::from(bytes.clone()));
    let (first, metrics) = node(&source, &cache, Check::Digest);
    assert_eq!(read_whole(&first, &source, "obj").await, bytes);
    settled(&metrics, 3500).await;
    assert_eq!(cache.object_count(), 4, "three whole blocks and the last, shorter one");

    let (second, metrics) = node(&source, &cache, Check::Digest);
    let gets = source.counts().gets;
    assert_eq!(read_whole(&second, &source, "obj").await, bytes);
    let (object, size) = version(&source, "obj").await;
    let again = second.read(&object, size, &SharedStreams::default(), 1500, 700).await.expect("read");
    assert_eq!(again, bytes[1500..2200]);
    assert_eq!(source.counts().gets, gets, "nothing from the source");
    assert_eq!(metrics.hits.get(), 4, "each block once; the second read is the memory cache's");
}

#[tokio::test]
async fn only_whole_blocks_go_up_and_a_run_goes_to_the_source_from_the_first_block_missing() {
    let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    let bytes = data(3500);
    source.put("obj", Bytes::from(bytes.clone()));
    let (first, metrics) = node(&source, &cache, Check::Digest);
    assert_eq!(read(&first, &source, "obj", 500..2500).await, bytes[500..2500]);
    settled(&metrics, 1000).await;
    assert_eq!(cache.object_count(), 1, "only block 1 passed by whole");
    let (second, metrics) = node(&source, &cache, Check::Digest);
    let gets = source.counts().gets;
    let (object, size) = version(&source, "obj").await;
    let slots = second.ensure(&object, size, 1000..3500);
    let (got, _) = second.assemble(&slots, 1000..3500, size).await.expect("read");
    assert_eq!(got, bytes[1000..3500]);
    assert_eq!(metrics.hits.get(), 1, "block 1 from the cache");
    assert_eq!(source.counts().gets, gets + 1, "the rest in one GET");
}

#[tokio::test]
async fn a_block_fetched_in_pieces_goes_up_once_they_cover_it() {
    let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    let bytes = data(2500);
    source.put("obj", Bytes::from(bytes.clone()));
    let (first, metrics) = node(&source, &cache, Check::Digest);
    // A stream's first read on its own, then the rest of its block and the next as a span.
    assert_eq!(read(&first, &source, "obj", 0..300).await, bytes[..300]);
    assert_eq!(read(&first, &source, "obj", 300..2000).await, bytes[300..2000]);
    settled(&metrics, 2000).await;
    let (second, _) = node(&source, &cache, Check::Digest);
    let gets = source.counts().gets;
    assert_eq!(read(&second, &source, "obj", 0..2000).await, bytes[..2000]);
    assert_eq!(source.counts().gets, gets, "blocks 0 and 1 both from the cache");
}

#[tokio::test]
async fn a_planted_or_unkeyed_block_is_never_served() {
    let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    let bytes = data(800);
    source.put("obj", Bytes::from(bytes.clone()));
    let (first, metrics) = node(&source, &cache, Check::Digest);
    assert_eq!(read_whole(&first, &source, "obj").await, bytes);
    settled(&metrics, 800).await;
    // A node holding the key refuses what a node without it sealed.
    let (keyed, metrics) = node(&source, &cache, Check::keyed(b"cluster secret"));
    assert_eq!(read_whole(&keyed, &source, "obj").await, bytes);
    assert_eq!(metrics.integrity_failures.get(), 1);
    // Bytes changed in the cache bucket by hand.
    let (key, sealed) = cache.objects().into_iter().next().expect("a cached block");
    let mut planted = sealed.to_vec();
    if let Some(last) = planted.last_mut() {
        *last ^= 0xff;
    }
    cache.put(&key, Bytes::from(planted));
    let (plain, metrics) = node(&source, &cache, Check::Digest);
    assert_eq!(read_whole(&plain, &source, "obj").await, bytes);
    assert_eq!(metrics.integrity_failures.get(), 1);
}

#[tokio::test]
async fn keyed_nodes_share_blocks_and_refuse_a_flipped_byte_or_an_oversized_object() {
    let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    let bytes = data(800);
    source.put("obj", Bytes::from(bytes.clone()));
    let secret: &[u8] = b"cluster secret";
    let (first, metrics) = node(&source, &cache, Check::keyed(secret));
    assert_eq!(read_whole(&first, &source, "obj").await, bytes);
    settled(&metrics, 800).await;
    // A second node with the same key is served from the cache alone.
    let (second, metrics) = node(&source, &cache, Check::keyed(secret));
    let gets = source.counts().gets;
    assert_eq!(read_whole(&second, &source, "obj").await, bytes);
    assert_eq!((source.counts().gets, metrics.hits.get(), metrics.integrity_failures.get()), (gets, 1, 0));
    // One byte flipped in a block sealed with the right key.
    let (key, sealed) = cache.objects().into_iter().next().expect("a cached block");
    let mut flipped = sealed.to_vec();
    flipped[sealed::HEADER_LEN + 17] ^= 0x01;
    cache.put(&key, Bytes::from(flipped));
    let (third, metrics) = node(&source, &cache, Check::keyed(secret));
    assert_eq!(read_whole(&third, &source, "obj").await, bytes, "exact bytes, from the source");
    assert_eq!((metrics.hits.get(), metrics.integrity_failures.get()), (0, 1));
    // The third node sends up the block it read from the source: planted over only after that.
    assert!(third.settle(Duration::from_secs(30)).await);
    // A planted object far longer than a block and its seal is refused by its length alone.
    let mut oversized = sealed.to_vec();
    oversized.extend(std::iter::repeat_n(0u8, 1 << 20));
    cache.put(&key, Bytes::from(oversized));
    let (fourth, metrics) = node(&source, &cache, Check::keyed(secret));
    assert_eq!(read_whole(&fourth, &source, "obj").await, bytes);
    assert_eq!((metrics.hits.get(), metrics.integrity_failures.get()), (0, 1));
}

fn names_index(name: &str) -> usize {
    name[1..].parse().expect("a numbered name")
}

#[tokio::test]
async fn a_node_ahead_of_the_others_asks_the_cache_of_few_files_until_one_is_there() {
    let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    let names: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
    for (i, name) in names.iter().enumerate() {
        source.put(name, Bytes::from(data(500 + i)));
    }
    let read_all = async |node: &Node, names: &[String]| {
        for name in names {
            assert_eq!(read_whole(node, &source, name).await, data(500 + names_index(name)), "{name}");
        }
    };
    // Another node read the last hundred files first.
    let (other, metrics) = node(&source, &cache, Check::Digest);
    read_all(&other, &names[200..]).await;
    settled(&metrics, (200..300).map(|i| 500 + i as u64).sum()).await;

    let (first, metrics) = node(&source, &cache, Check::Digest);
    let lookups = cache.counts().gets;
    read_all(&first, &names[..200]).await;
    let asked = cache.counts().gets - lookups;
    assert!(asked < 80, "after 32 misses in a row, about one file in 8 is looked up: {asked} of 200");
    assert!(asked >= 32, "the first 32 are: {asked}");
    assert_eq!(metrics.hits.get(), 0);

    let gets = source.counts().gets;
    read_all(&first, &names[200..]).await;
    let from_source = source.counts().gets - gets;
    assert!(from_source < 40, "once a sampled file is found, every file is looked up: {from_source} of 100");
}

#[tokio::test]
async fn blocks_a_full_queue_dropped_go_up_once_the_readers_are_quiet() {
    let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    let bytes = data(20 * BLOCK as usize);
    source.put("obj", Bytes::from(bytes.clone()));
    // A queue of one block and a slow cache: most of the 20 blocks find it full.
    cache.set_put_delay(Duration::from_millis(50));
    let (first, metrics) = node_with_queue(&source, &cache, Check::Digest, BLOCK);
    assert_eq!(read_whole(&first, &source, "obj").await, bytes);
    let dropped = metrics.fills_dropped.get();
    assert!(dropped > 0, "the queue dropped blocks");
    let gets = source.counts().gets;
    settled(&metrics, 20 * (BLOCK + sealed::HEADER_LEN as u64)).await;
    assert_eq!(metrics.fills_completed.get(), dropped, "each dropped block went up later");
    assert_eq!(source.counts().gets - gets, dropped, "fetched again from the source, once each");

    let (second, _) = node(&source, &cache, Check::Digest);
    let gets = source.counts().gets;
    assert_eq!(read_whole(&second, &source, "obj").await, bytes);
    assert_eq!(source.counts().gets, gets, "the second node reads nothing from the source");
}

#[tokio::test]
async fn what_is_queued_for_the_cache_is_settled_before_an_unmount_ends() {
    let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    source.put("obj", Bytes::from(data(8 * BLOCK as usize)));
    cache.set_put_delay(Duration::from_secs(2));
    let (node, metrics) = node(&source, &cache, Check::Digest);
    read_whole(&node, &source, "obj").await;
    assert!(metrics.written_bytes.get() < 8 * BLOCK, "still going up after the read");
    assert!(node.settle(Duration::from_secs(30)).await, "settled");
    assert_eq!(metrics.written_bytes.get(), 8 * (BLOCK + sealed::HEADER_LEN as u64), "every block went up");
}

#[tokio::test]
async fn a_version_replaced_at_the_source_is_a_new_key_in_the_cache() {
    let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    source.put("obj", Bytes::from(data(500)));
    let (first, metrics) = node(&source, &cache, Check::Digest);
    read_whole(&first, &source, "obj").await;
    settled(&metrics, 500).await;
    source.put("obj", Bytes::from_static(b"new bytes"));
    let (second, _) = node(&source, &cache, Check::Digest);
    assert_eq!(read_whole(&second, &source, "obj").await, b"new bytes");
}
