use std::os::unix::fs::FileExt;
use std::time::Instant;

use super::*;
use crate::object_id::ETag;

const BS: u64 = 4096;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("fetchfs-disk-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }

    fn cache(&self, cap: Option<u64>) -> Arc<DiskCache> {
        let config = DiskCacheConfig { dir: self.0.clone(), cap };
        DiskCache::open(&config, "http://s3\nbucket".into(), BS, 64 * BS, DiskMetrics::default()).unwrap()
    }

    /// A version's data file by its name, as someone else on the machine would reach it (the
    /// cache reaches it through its directory's descriptor, gone with the cache).
    fn data_file(&self, version: &VersionFile) -> PathBuf {
        self.0.join("v1").join(version.data_path().file_name().expect("a file name"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn object(key: &str, etag: &str) -> ObjectId {
    ObjectId { key: key.into(), etag: ETag::new(etag) }
}

fn content(size: u64, seed: u8) -> Vec<u8> {
    (0..size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn block(data: &[u8], index: u64) -> Bytes {
    let start = (index * BS) as usize;
    Bytes::copy_from_slice(&data[start..(start + BS as usize).min(data.len())])
}

/// Offers a block as the fetch layer does, through the tier interface.
fn offer(cache: &DiskCache, id: &ObjectId, size: u64, index: u64, bytes: &Bytes) {
    BlockTier::offer(cache, &BlockOf { object: Arc::new(id.clone()), size, index }, bytes);
}

/// Offers every block and waits until the writer has recorded them.
fn fill(cache: &DiskCache, id: &ObjectId, data: &[u8]) -> Arc<VersionFile> {
    let version = cache.open_version(id, data.len() as u64).unwrap();
    let blocks = (data.len() as u64).div_ceil(BS);
    for index in 0..blocks {
        offer(cache, id, data.len() as u64, index, &block(data, index));
        let started = Instant::now();
        while !version.has(index) {
            assert!(started.elapsed() < Duration::from_secs(10), "block {index} never written");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    version
}

#[tokio::test]
async fn what_one_mount_wrote_the_next_reads_back_exactly() {
    let dir = Scratch::new("remount");
    let id = object("a/b.bin", "\"v1\"");
    let data = content(10 * BS + 100, 1);
    drop(fill(&dir.cache(None), &id, &data));
    let next = dir.cache(None);
    let version = next.open_version(&id, data.len() as u64).unwrap();
    assert!(version.is_complete());
    let read = next.read(&version, 3 * BS + 5..10 * BS + 100, Vec::new()).await.unwrap();
    assert_eq!(&read[..], &data[(3 * BS + 5) as usize..]);
}

#[test]
fn another_version_of_the_key_starts_empty() {
    let dir = Scratch::new("versions");
    let cache = dir.cache(None);
    fill(&cache, &object("k", "\"v1\""), &content(3 * BS, 1));
    let newer = cache.open_version(&object("k", "\"v2\""), 3 * BS).unwrap();
    assert!((0..3).all(|i| !newer.has(i)), "a new ETag never sees the old bytes");
    let other_size = cache.open_version(&object("k", "\"v1\""), 2 * BS).unwrap();
    assert!(!other_size.has(0), "nor does another size");
}

#[test]
fn a_file_changed_or_truncated_by_hand_is_dropped() {
    let dir = Scratch::new("changed");
    let id = object("k", "\"v1\"");
    let data = content(4 * BS, 2);
    let version = fill(&dir.cache(None), &id, &data);
    let path = dir.data_file(&version);
    drop(version);
    // Written behind fetchfs's back: the modification time moves.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(b"garbage", 10).unwrap();
    let cache = dir.cache(None);
    let reopened = cache.open_version(&id, data.len() as u64).unwrap();
    assert!((0..4).all(|i| !reopened.has(i)), "changed: nothing is served from it");
    assert_eq!(cache.metrics.files_dropped.get(), 1);
    drop(reopened);
    drop(cache);

    let version = fill(&dir.cache(None), &id, &data);
    drop(version);
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(BS).unwrap();
    let reopened = dir.cache(None).open_version(&id, data.len() as u64).unwrap();
    assert!((0..4).all(|i| !reopened.has(i)), "truncated: nothing is served from it");
}

#[test]
fn a_record_without_its_bytes_durable_is_never_trusted() {
    // A daemon killed between writing bytes and recording them leaves a data file newer than its
    // record: the next open drops it.
    let dir = Scratch::new("torn");
    let id = object("k", "\"v1\"");
    let version = fill(&dir.cache(None), &id, &content(2 * BS, 3));
    std::thread::sleep(Duration::from_millis(20));
    std::fs::OpenOptions::new().write(true).open(dir.data_file(&version)).unwrap().write_all_at(&[9; 16], 0).unwrap();
    drop(version);
    assert!(!dir.cache(None).open_version(&id, 2 * BS).unwrap().has(0));
}

#[test]
fn two_caches_filling_one_version_at_once_record_every_block() {
    let dir = Scratch::new("shared");
    let (first, second) = (dir.cache(None), dir.cache(None));
    let id = object("shared.bin", "\"v1\"");
    let data = Arc::new(content(64 * BS, 4));
    let fillers: Vec<_> = [(first, 0u64), (second, 1u64)]
        .into_iter()
        .map(|(cache, parity)| {
            let (id, data) = (id.clone(), Arc::clone(&data));
            std::thread::spawn(move || {
                let version = cache.open_version(&id, data.len() as u64).unwrap();
                for index in (0..64).filter(|i| i % 2 == parity || i % 5 == 0) {
                    offer(&cache, &id, data.len() as u64, index, &block(&data, index));
                }
                let started = Instant::now();
                while !(0..64).filter(|i| i % 2 == parity).all(|i| version.has(i)) {
                    assert!(started.elapsed() < Duration::from_secs(10));
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    fillers.into_iter().for_each(|f| f.join().unwrap());
    let cache = dir.cache(None);
    let version = cache.open_version(&id, data.len() as u64).unwrap();
    assert!(version.is_complete(), "each cache's blocks are recorded, none lost to the other's record");
    let mut all = vec![0; data.len()];
    std::fs::File::open(version.data_path()).unwrap().read_exact_at(&mut all, 0).unwrap();
    assert!(all == *data);
}

#[test]
fn the_least_recently_used_versions_leave_to_keep_the_cap() {
    let dir = Scratch::new("evict");
    let cap = 40 * BS;
    let cache = dir.cache(Some(cap));
    for n in 0..10 {
        fill(&cache, &object(&format!("k{n}"), "\"v\""), &content(8 * BS, n as u8));
        std::thread::sleep(Duration::from_millis(5));
    }
    let used: u64 = scan(&cache.files.root).iter().map(|f| f.bytes).sum();
    assert!(used <= cap, "{used} bytes on disk over a cap of {cap}");
    assert!(cache.metrics.evictions.get() >= 5);
    let names: Vec<String> =
        (0..10).map(|n| DiskCache::file_name(&cache.identity(&object(&format!("k{n}"), "\"v\""), 8 * BS))).collect();
    assert!(!cache.files.root.join(format!("{}.data", names[0])).exists(), "the oldest went");
    assert!(cache.files.root.join(format!("{}.data", names[9])).exists(), "the newest stayed");
}

#[test]
fn a_version_larger_than_the_cap_keeps_what_fits_instead_of_evicting_itself() {
    let dir = Scratch::new("larger");
    let cap = 8 * BS;
    let cache = dir.cache(Some(cap));
    let id = object("big", "\"v\"");
    let data = content(20 * BS, 3);
    let version = cache.open_version(&id, data.len() as u64).unwrap();
    for index in 0..20 {
        offer(&cache, &id, data.len() as u64, index, &block(&data, index));
    }
    let started = Instant::now();
    while cache.metrics.written_bytes.get() + cache.metrics.fills_skipped.get() * BS < 20 * BS {
        assert!(started.elapsed() < Duration::from_secs(10), "every block written or skipped");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!version.is_gone(), "the version being filled was not evicted for its own blocks");
    assert_eq!(cache.metrics.evictions.get(), 0);
    let kept: Vec<u64> = (0..20).filter(|&index| version.has(index)).collect();
    // The record's own bytes count against the cap too.
    assert!(kept.len() >= 6 && kept == (0..kept.len() as u64).collect::<Vec<_>>(), "the first blocks stay: {kept:?}");
}

#[test]
fn a_newer_version_known_deletes_the_old_file() {
    let dir = Scratch::new("forget");
    let cache = dir.cache(None);
    let id = object("k", "\"v1\"");
    let path = fill(&cache, &id, &content(2 * BS, 5)).data_path().to_owned();
    cache.forget_version(&id, 2 * BS);
    assert!(!path.exists());
}

#[test]
fn opens_while_the_writer_writes_never_drop_the_file() {
    // flock does not exclude threads sharing an open file: an open checking the record while the
    // writer was between its bytes and its record saw them disagree and dropped the file.
    let dir = Scratch::new("busy");
    let cache = dir.cache(None);
    let id = object("busy.bin", "\"v1\"");
    let data = content(256 * BS, 6);
    let version = cache.open_version(&id, data.len() as u64).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for index in 0..256 {
                offer(&cache, &id, data.len() as u64, index, &block(&data, index));
                while !version.has(index) && !version.is_gone() {
                    std::thread::yield_now();
                }
            }
        });
        scope.spawn(|| {
            while !version.is_complete() && !version.is_gone() {
                cache.open_version(&id, data.len() as u64).unwrap();
            }
        });
    });
    assert_eq!(cache.metrics.files_dropped.get(), 0);
    assert!(cache.open_version(&id, data.len() as u64).unwrap().is_complete());
}
