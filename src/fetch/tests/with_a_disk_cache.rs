//! The fetch layer over a disk tier: blocks go to disk behind the reader, and come back from it.

use super::*;
use crate::cache::disk::{DiskCache, DiskCacheConfig};
use crate::metrics::DiskMetrics;

struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fetcher_on(store: &Arc<MemoryStore>, dir: &Scratch) -> (Arc<Fetcher<MemoryStore>>, DiskMetrics) {
    let config = FetchConfig::default();
    let metrics = DiskMetrics::default();
    let disk = DiskCache::open(
        &DiskCacheConfig { dir: dir.0.clone(), cap: None },
        "scope".into(),
        config.block_size,
        config.disk_fill_bytes(),
        metrics.clone(),
    )
    .unwrap();
    (Arc::new(Fetcher::new(Arc::clone(store), config, Tiers::new(Some(disk), Vec::new()), Arc::default())), metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_mount_reads_what_the_first_fetched_without_a_get() {
    let dir = Scratch(std::env::temp_dir().join(format!("fetchfs-fetch-disk-{}", std::process::id())));
    let size = 24 * MIB as usize + 12345;
    let store = Arc::new(MemoryStore::new());
    let data = content(3, size);
    let object = Arc::new(ObjectId { key: "obj".into(), etag: store.put("obj", data.clone()) });

    let (first, metrics) = fetcher_on(&store, &dir);
    assert!(first.open_on_disk(&object, size as u64).is_none(), "nothing is whole on disk yet");
    read_sequentially(&first, &object, &data, Duration::ZERO).await;
    let blocks = (size as u64).div_ceil(MIB);
    let started = std::time::Instant::now();
    while metrics.written_bytes.get() < size as u64 {
        assert!(started.elapsed() < Duration::from_secs(20), "{} bytes written", metrics.written_bytes.get());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gets = store.counts().gets;
    drop(first);

    let (second, metrics) = fetcher_on(&store, &dir);
    let local = second.open_on_disk(&object, size as u64).expect("whole on disk: a descriptor for the kernel");
    assert_eq!(local.metadata().unwrap().len(), size as u64);
    read_sequentially(&second, &object, &data, Duration::ZERO).await;
    let stream = SharedStreams::default();
    let random = second.read(&object, size as u64, &stream, 5 * MIB + 17, 4096).await.unwrap();
    assert!(random == data.slice(5 * MIB as usize + 17..5 * MIB as usize + 17 + 4096));
    assert_eq!(store.counts().gets, gets, "no GET: every block came from disk");
    assert!(metrics.hits.get() >= blocks, "{} disk hits", metrics.hits.get());
}

/// A chunk read after a jump (a Parquet column's) is led by bytes without a disk cache; with
/// one, its blocks are fetched whole, so the disk gets every block the reader went through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_after_a_jump_reaches_the_disk_in_whole_blocks() {
    let dir = Scratch(std::env::temp_dir().join(format!("fetchfs-fetch-disk-jump-{}", std::process::id())));
    let size = 64 * MIB as usize;
    let store = Arc::new(MemoryStore::new());
    let data = content(5, size);
    let object = Arc::new(ObjectId { key: "obj".into(), etag: store.put("obj", data.clone()) });
    let (fetcher, metrics) = fetcher_on(&store, &dir);
    assert!(fetcher.open_on_disk(&object, size as u64).is_none(), "opened, as a file is, and not on disk yet");
    let stream = SharedStreams::default();
    let start = 40 * MIB + 12345;
    let end = start + 4 * MIB;
    let mut offset = start;
    while offset < end {
        let got = fetcher.read(&object, size as u64, &stream, offset, 256 * 1024).await.unwrap();
        assert!(got == data.slice(offset as usize..offset as usize + got.len()), "bytes at {offset}");
        offset += got.len() as u64;
    }
    // The blocks after the run's first, up to the one it ends in, were fetched whole.
    let whole = (end / MIB - (start / MIB + 1)) * MIB;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while metrics.written_bytes.get() < whole {
        assert!(std::time::Instant::now() < deadline, "{} bytes written of {whole}", metrics.written_bytes.get());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The disk stalls (its one I/O thread is stuck): a read waits the disk's deadline, then the
/// network serves it, correctly.
#[test]
fn a_disk_too_slow_to_answer_leaves_the_read_to_the_network() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = Scratch(std::env::temp_dir().join(format!("fetchfs-fetch-slow-disk-{}", std::process::id())));
        let size = 8 * MIB as usize;
        let store = Arc::new(MemoryStore::new());
        let data = content(4, size);
        let object = Arc::new(ObjectId { key: "obj".into(), etag: store.put("obj", data.clone()) });
        let (first, metrics) = fetcher_on(&store, &dir);
        assert!(first.open_on_disk(&object, size as u64).is_none());
        read_sequentially(&first, &object, &data, Duration::ZERO).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while metrics.written_bytes.get() < size as u64 {
            assert!(std::time::Instant::now() < deadline, "{} bytes written", metrics.written_bytes.get());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(first);

        let (second, metrics) = fetcher_on(&store, &dir);
        second.open_on_disk(&object, size as u64).expect("whole on disk");
        let stall = Duration::from_secs(4);
        let stuck = tokio::task::spawn_blocking(move || std::thread::sleep(stall));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let gets = store.counts().gets;
        let started = std::time::Instant::now();
        let stream = SharedStreams::default();
        let got = second.read(&object, size as u64, &stream, 3 * MIB + 5, 4096).await.unwrap();
        let waited = started.elapsed();
        assert!(got == data.slice(3 * MIB as usize + 5..3 * MIB as usize + 5 + 4096));
        assert!(store.counts().gets > gets, "the network served it");
        assert_eq!(metrics.hits.get(), 0);
        assert!(waited >= Duration::from_millis(400), "the disk had its deadline first: {waited:?}");
        assert!(waited < stall - Duration::from_secs(1), "the read did not wait for the disk: {waited:?}");
        stuck.await.unwrap();
    });
}
