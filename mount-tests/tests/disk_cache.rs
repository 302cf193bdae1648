//! The disk cache on real mounts against the test server: what one mount fetched, the next reads
//! from disk (the kernel itself, by passthrough, for whole files) with no GET; a daemon killed
//! mid-fill, a cache file changed by hand, two daemons filling one directory, an object replaced
//! in S3 and a full disk all leave the bytes exact.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mount_tests::data;
use mount_tests::metrics::MetricsPort;
use mount_tests::mount::{Mount, fresh_dir};
use mount_tests::server::{StoredObject, TestServer};

const BUCKET: &str = "disk";
const MIB: usize = 1024 * 1024;

/// A cache directory, removed when the test ends.
struct CacheDir(PathBuf);

impl CacheDir {
    fn new() -> Self {
        Self(fresh_dir("disk-cache"))
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }

    /// The data files in it.
    fn data_files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.0.join("v1")) else { return Vec::new() };
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "data")).collect()
    }
}

impl Drop for CacheDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tmpfs of a given size mounted on a cache directory, unmounted when dropped.
struct Tmpfs<'a>(&'a str);

impl<'a> Tmpfs<'a> {
    fn mount(cache: &'a CacheDir, size: &str) -> Self {
        let options = format!("size={size},mode=0700");
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &options, "tmpfs", cache.arg()]).output().unwrap();
        ok(out, "mount tmpfs");
        Self(cache.arg())
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// A 64 MiB ext4 image at `image`, loop-mounted on a cache directory; unfrozen (if a test froze
/// it) and unmounted when dropped.
struct LoopExt4<'a>(&'a str);

impl<'a> LoopExt4<'a> {
    fn mount(image: &Path, cache: &'a CacheDir) -> Self {
        ok(Command::new("truncate").args(["-s", "64M"]).arg(image).output().unwrap(), "truncate");
        ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image).output().unwrap(), "mkfs.ext4");
        let mounted = Command::new("mount").args(["-o", "loop"]).arg(image).arg(cache.arg()).output().unwrap();
        ok(mounted, "mount -o loop");
        Self(cache.arg())
    }
}

impl Drop for LoopExt4<'_> {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").args(["-u", self.0]).stderr(std::process::Stdio::null()).status();
        let _ = Command::new("umount").arg(self.0).status();
    }
}

fn put(server: &TestServer, key: &str, seed: u64, size: usize) {
    server.storage().put(BUCKET, key, StoredObject::new(data::content(seed, size), None)).expect("put");
}

/// A mount of the bucket with the disk cache in `cache` and metrics at `metrics`.
fn mount(server: &TestServer, cache: &CacheDir, metrics: &MetricsPort, extra: &[&str]) -> Mount {
    let addr = metrics.addr();
    let mut args = vec!["--disk-cache", cache.arg(), "--metrics-addr", &addr];
    args.extend_from_slice(extra);
    Mount::of(server, BUCKET, &args)
}

/// Reads `path` front to back in 1 MiB reads and checks every byte against object `seed`.
fn read_and_check(path: &Path, seed: u64, size: usize) {
    let mut file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buffer = vec![0; MIB];
    let mut offset = 0u64;
    loop {
        let n = file.read(&mut buffer).unwrap_or_else(|e| panic!("read {} at {offset}: {e}", path.display()));
        if n == 0 {
            break;
        }
        assert_eq!(data::first_mismatch(seed, offset, &buffer[..n]), None, "{}", path.display());
        offset += n as u64;
    }
    assert_eq!(offset, size as u64, "the whole of {}", path.display());
}

/// Waits until the daemon has written `bytes` to its disk cache.
fn wait_written(metrics: &MetricsPort, bytes: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let written = metrics.value("fetchfs_disk_cache_written_bytes_total");
        if written >= bytes as u64 {
            return;
        }
        assert!(Instant::now() < deadline, "{written} of {bytes} bytes written to the disk cache");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gets(server: &TestServer) -> u64 {
    server.knobs().counters().snapshot().requests_of("GetObject")
}

fn ok(out: std::process::Output, what: &str) -> Vec<u8> {
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn an_unmount_right_after_reading_leaves_what_was_read_on_disk() {
    // A pod restarting after a training run: umount at once, the daemon exits, a new one mounts.
    const SMALL: usize = 100 * 1024;
    let server = TestServer::with_files(BUCKET, "small", 200, SMALL);
    put(&server, "big.bin", 8, 1024 * MIB);
    let cache = CacheDir::new();
    {
        let metrics = MetricsPort::free();
        let first = mount(&server, &cache, &metrics, &[]);
        read_and_check(&first.path("big.bin"), 8, 1024 * MIB);
        ok(first.sh("cat small/* > /dev/null"), "cat");
        let daemon = first.daemon_pid().expect("the daemon runs");
        first.unmount_and_wait();
        assert!(!Path::new(&format!("/proc/{daemon}")).exists(), "the daemon exits within its grace after the unmount");
    }
    server.knobs().counters().reset();
    let metrics = MetricsPort::free();
    let second = mount(&server, &cache, &metrics, &[]);
    read_and_check(&second.path("big.bin"), 8, 1024 * MIB);
    ok(second.sh("cat small/* > /dev/null"), "cat");
    let fetched = server.knobs().counters().snapshot().body_bytes_sent;
    let read = (1024 * MIB + 200 * SMALL) as u64;
    assert!(fetched <= read / 20, "the second mount fetched {fetched} of the {read} bytes read");
}

#[test]
fn a_second_mount_reads_a_gib_and_a_thousand_files_from_disk_without_a_get() {
    const SMALL: usize = 100 * 1024;
    let server = TestServer::with_files(BUCKET, "small", 1000, SMALL);
    put(&server, "big.bin", 7, 1024 * MIB);
    let cache = CacheDir::new();
    let expected_small: Vec<u8> = (0..1000).flat_map(|i| data::content(i, SMALL)).collect();
    {
        let metrics = MetricsPort::free();
        let first = mount(&server, &cache, &metrics, &["--cache-size", "128"]);
        read_and_check(&first.path("big.bin"), 7, 1024 * MIB);
        assert!(ok(first.sh("ls small > /dev/null && cat small/*"), "cat") == expected_small);
        // Fills the disk's writer dropped are fetched again after the last close.
        wait_written(&metrics, 1024 * MIB + 1000 * SMALL);
        // The fill queue is part of the memory budget (plus what any process needs to run).
        let peak_mib = first.peak_rss_kib() / 1024;
        assert!(peak_mib <= 128 + 128, "peak RSS {peak_mib} MiB with --cache-size 128");
    }
    server.knobs().counters().reset();
    let metrics = MetricsPort::free();
    let second = mount(&server, &cache, &metrics, &[]);
    read_and_check(&second.path("big.bin"), 7, 1024 * MIB);
    assert!(ok(second.sh("ls small > /dev/null && cat small/*"), "cat") == expected_small);
    assert_eq!(gets(&server), 0, "{:?}", server.knobs().counters().snapshot());
    let passthrough = metrics.value("fetchfs_disk_cache_passthrough_opens_total");
    assert!(passthrough >= 1001, "whole files are opened in passthrough: {passthrough}");
    assert_eq!(metrics.value("fetchfs_disk_cache_read_bytes_total"), 0, "the kernel read them, not the daemon");
}

#[test]
fn a_directory_read_at_random_is_fetched_to_disk_before_its_files_are_opened() {
    // A shuffled data loader that never says its order: after a handful of opens, the rest of
    // the directory comes to disk, and the files it opens after that cost no GET.
    const FILES: u64 = 300;
    const SIZE: usize = 20 * 1024;
    let server = TestServer::with_files(BUCKET, "train", FILES, SIZE);
    let cache = CacheDir::new();
    let metrics = MetricsPort::free();
    let mounted = mount(&server, &cache, &metrics, &[]);
    // A fixed shuffle: a stride coprime with the count visits every file once, far apart.
    let order: Vec<u64> = (0..FILES).map(|i| (i * 97 + 13) % FILES).collect();
    let path = |i: u64| mounted.path(&format!("train/f{i:05}"));
    ok(mounted.sh("ls train > /dev/null"), "ls");
    let (first, rest) = order.split_at(30);
    for &i in first {
        read_and_check(&path(i), i, SIZE);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics.value("fetchfs_disk_cache_epoch_files_total") + 30 < FILES {
        let fetched = metrics.value("fetchfs_disk_cache_epoch_files_total");
        assert!(Instant::now() < deadline, "{fetched} files of the epoch fetched to disk");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.knobs().counters().reset();
    for &i in rest {
        read_and_check(&path(i), i, SIZE);
    }
    assert_eq!(gets(&server), 0, "the rest of the epoch came from disk: {:?}", server.knobs().counters().snapshot());
    let passthrough = metrics.value("fetchfs_disk_cache_passthrough_opens_total");
    assert!(passthrough >= rest.len() as u64, "{passthrough} opens in passthrough");
}

#[test]
fn an_epoch_fetch_leaves_room_in_the_disk_cache_and_evicts_nothing() {
    const FILES: u64 = 400;
    const SIZE: usize = 256 * 1024;
    let server = TestServer::with_files(BUCKET, "big-epoch", FILES, SIZE);
    let cache = CacheDir::new();
    let metrics = MetricsPort::free();
    // 100 MB of files, 64 MiB of disk cache.
    let mounted = mount(&server, &cache, &metrics, &["--disk-cache-size", "64"]);
    ok(mounted.sh("ls big-epoch > /dev/null"), "ls");
    for i in (0..40).map(|i| (i * 97 + 13) % FILES) {
        read_and_check(&mounted.path(&format!("big-epoch/f{i:05}")), i, SIZE);
    }
    // The fetch stops short of the cap: what was written levels off below it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = u64::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let written = metrics.value("fetchfs_disk_cache_written_bytes_total");
        if written == last || Instant::now() > deadline {
            break;
        }
        last = written;
    }
    let fetched = metrics.value("fetchfs_disk_cache_epoch_files_total");
    assert!(fetched > 0, "the epoch fetched files to disk");
    assert!(fetched * (SIZE as u64) < 64 * MIB as u64, "{fetched} files fetched for a 64 MiB cache");
    assert_eq!(metrics.value("fetchfs_disk_cache_evictions_total"), 0, "nothing evicted for the epoch");
}

/// Pages of `path` in the page cache (mincore of a mapping of it).
fn resident_pages(path: &Path) -> usize {
    let file = File::open(path).expect("open a cache file");
    let len = file.metadata().expect("stat").len() as usize;
    if len == 0 {
        return 0;
    }
    // SAFETY: a private read-only mapping of a file we hold open, unmapped below; mincore only
    // writes one byte per page into `pages`, sized for the mapping.
    unsafe {
        let map = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0);
        assert!(map != libc::MAP_FAILED, "mmap {}", path.display());
        let mut pages = vec![0u8; len.div_ceil(4096)];
        let done = libc::mincore(map, len, pages.as_mut_ptr());
        libc::munmap(map, len);
        assert_eq!(done, 0, "mincore {}", path.display());
        pages.iter().filter(|p| *p & 1 == 1).count()
    }
}

#[test]
fn files_opened_in_order_from_disk_have_the_next_ones_read_into_memory_first() {
    const FILES: u64 = 40;
    const SMALL: usize = 100 * 1024;
    let server = TestServer::with_files(BUCKET, "small", FILES, SMALL);
    let cache = CacheDir::new();
    {
        let metrics = MetricsPort::free();
        let first = mount(&server, &cache, &metrics, &[]);
        ok(first.sh("cat small/* > /dev/null"), "cat");
        wait_written(&metrics, FILES as usize * SMALL);
    }
    // Out of the page cache (they are written and synced, so clean): only a read brings them back.
    for data in cache.data_files() {
        let file = File::open(&data).expect("open a cache file");
        // SAFETY: advice on a descriptor we own.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(resident_pages(&data), 0, "{} left the page cache", data.display());
    }
    server.knobs().counters().reset();
    let metrics = MetricsPort::free();
    let second = mount(&server, &cache, &metrics, &[]);
    ok(second.sh("ls small > /dev/null"), "ls");
    // Opened and closed in the listing's order, never read: what is in memory now was read ahead.
    for i in 0..8 {
        drop(File::open(second.path(&format!("small/f{i:05}"))).expect("open"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let warmed = loop {
        let warmed = cache.data_files().iter().filter(|d| resident_pages(d) > 0).count();
        if warmed >= 4 || Instant::now() > deadline {
            break warmed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(warmed >= 4, "files after the opened ones are read into memory: {warmed} of {FILES}");
    assert_eq!(gets(&server), 0, "all from disk");
    let expected: Vec<u8> = (0..FILES).flat_map(|i| data::content(i, SMALL)).collect();
    assert!(ok(second.sh("cat small/*"), "cat") == expected, "the bytes read are the objects'");
}

#[test]
fn a_daemon_killed_mid_fill_leaves_exact_bytes_and_its_whole_files() {
    let server = TestServer::with_bucket(BUCKET);
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        put(&server, key, i as u64, 8 * MIB);
    }
    put(&server, "big.bin", 9, 256 * MIB);
    let cache = CacheDir::new();
    {
        let metrics = MetricsPort::free();
        let first = mount(&server, &cache, &metrics, &[]);
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            read_and_check(&first.path(key), i as u64, 8 * MIB);
        }
        wait_written(&metrics, 24 * MIB);
        // Killed while the blocks of the large file are being written: once some are on disk,
        // with the reader still going.
        server.knobs().set_bandwidth(Some(50_000_000));
        let mut reader = Command::new("dd")
            .arg(format!("if={}", first.path("big.bin").display()))
            .args(["of=/dev/null", "bs=1M"])
            .spawn()
            .expect("dd");
        let deadline = Instant::now() + Duration::from_secs(60);
        while metrics.value("fetchfs_disk_cache_written_bytes_total") < (24 + 32) as u64 * MIB as u64 {
            assert!(Instant::now() < deadline, "the large file's blocks reach the disk");
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = first.daemon_pid().expect("the daemon");
        ok(Command::new("kill").args(["-KILL", &pid.to_string()]).output().expect("kill"), "kill");
        let _ = reader.wait();
        server.knobs().set_bandwidth(None);
    }
    server.knobs().counters().reset();
    let metrics = MetricsPort::free();
    let second = mount(&server, &cache, &metrics, &[]);
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        read_and_check(&second.path(key), i as u64, 8 * MIB);
    }
    assert_eq!(gets(&server), 0, "the whole files are not fetched again");
    read_and_check(&second.path("big.bin"), 9, 256 * MIB);
    // The kill lands either between a batch's bytes and its record (the data file is newer than
    // its record: the whole file is dropped and fetched again) or between batches (the blocks
    // recorded are read from disk, the rest fetched).
    let fetched = server.knobs().counters().snapshot().body_bytes_sent;
    let whole = 256 * MIB as u64;
    if metrics.value("fetchfs_disk_cache_files_dropped_total") >= 1 {
        assert!(fetched >= whole, "a torn file is never read from: {fetched} of {whole} fetched");
    } else {
        assert!(fetched > 0, "what the kill left unrecorded is fetched again");
        assert!(fetched < whole, "blocks recorded before the kill are read from disk: {fetched} fetched");
    }
}

#[test]
fn a_cache_file_changed_or_truncated_by_hand_is_fetched_again() {
    let server = TestServer::with_bucket(BUCKET);
    put(&server, "f.bin", 3, 8 * MIB);
    let cache = CacheDir::new();
    {
        let metrics = MetricsPort::free();
        let first = mount(&server, &cache, &metrics, &[]);
        read_and_check(&first.path("f.bin"), 3, 8 * MIB);
        wait_written(&metrics, 8 * MIB);
    }
    let [data_file] = <[PathBuf; 1]>::try_from(cache.data_files()).expect("one data file");
    std::fs::OpenOptions::new().write(true).open(&data_file).unwrap().write_all_at(&[0xAA; 4096], MIB as u64).unwrap();
    {
        server.knobs().counters().reset();
        let metrics = MetricsPort::free();
        let second = mount(&server, &cache, &metrics, &[]);
        read_and_check(&second.path("f.bin"), 3, 8 * MIB);
        assert!(gets(&server) > 0, "changed: fetched again");
        assert_eq!(metrics.value("fetchfs_disk_cache_files_dropped_total"), 1);
        wait_written(&metrics, 8 * MIB);
    }
    std::fs::OpenOptions::new().write(true).open(&data_file).unwrap().set_len(MIB as u64).unwrap();
    server.knobs().counters().reset();
    let metrics = MetricsPort::free();
    let third = mount(&server, &cache, &metrics, &[]);
    read_and_check(&third.path("f.bin"), 3, 8 * MIB);
    assert!(gets(&server) > 0, "truncated: fetched again");
    assert_eq!(metrics.value("fetchfs_disk_cache_files_dropped_total"), 1);
}

#[test]
fn two_daemons_filling_one_cache_at_once_serve_exact_bytes() {
    let server = TestServer::with_bucket(BUCKET);
    put(&server, "x.bin", 11, 64 * MIB);
    put(&server, "y.bin", 12, 64 * MIB);
    let cache = CacheDir::new();
    {
        let (metrics_a, metrics_b) = (MetricsPort::free(), MetricsPort::free());
        let a = mount(&server, &cache, &metrics_a, &[]);
        let b = mount(&server, &cache, &metrics_b, &[]);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                read_and_check(&a.path("x.bin"), 11, 64 * MIB);
                read_and_check(&a.path("y.bin"), 12, 64 * MIB);
            });
            scope.spawn(|| {
                read_and_check(&b.path("y.bin"), 12, 64 * MIB);
                read_and_check(&b.path("x.bin"), 11, 64 * MIB);
            });
        });
        // Each block is written once, by one daemon or the other.
        let deadline = Instant::now() + Duration::from_secs(120);
        let written = || {
            metrics_a.value("fetchfs_disk_cache_written_bytes_total")
                + metrics_b.value("fetchfs_disk_cache_written_bytes_total")
        };
        while written() < 128 * MIB as u64 {
            assert!(Instant::now() < deadline, "{} bytes written by the two", written());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    server.knobs().counters().reset();
    let metrics = MetricsPort::free();
    let third = mount(&server, &cache, &metrics, &[]);
    read_and_check(&third.path("x.bin"), 11, 64 * MIB);
    read_and_check(&third.path("y.bin"), 12, 64 * MIB);
    assert_eq!(gets(&server), 0, "what the two wrote is whole: {:?}", server.knobs().counters().snapshot());
}

#[test]
fn an_object_replaced_in_s3_is_read_new_and_its_old_copy_leaves() {
    let server = TestServer::with_bucket(BUCKET);
    put(&server, "model.bin", 21, 16 * MIB);
    let cache = CacheDir::new();
    let metrics = MetricsPort::free();
    {
        let first = mount(&server, &cache, &metrics, &["--metadata-ttl", "1"]);
        read_and_check(&first.path("model.bin"), 21, 16 * MIB);
        wait_written(&metrics, 16 * MIB);
        put(&server, "model.bin", 22, 16 * MIB);
        std::thread::sleep(Duration::from_millis(1500));
        read_and_check(&first.path("model.bin"), 22, 16 * MIB);
        wait_written(&metrics, 32 * MIB);
        assert_eq!(cache.data_files().len(), 1, "the old version's copy was deleted");
    }
    server.knobs().counters().reset();
    let second = mount(&server, &cache, &MetricsPort::free(), &[]);
    read_and_check(&second.path("model.bin"), 22, 16 * MIB);
    assert_eq!(gets(&server), 0);
}

#[test]
fn a_full_disk_never_fails_a_read() {
    let server = TestServer::with_bucket(BUCKET);
    put(&server, "f.bin", 5, 64 * MIB);
    let cache = CacheDir::new();
    let _tmpfs = Tmpfs::mount(&cache, "16m");
    // Nearly full before the mount starts.
    ok(
        Command::new("dd")
            .args(["if=/dev/zero", "bs=1M", "count=14"])
            .arg(format!("of={}/filler", cache.arg()))
            .output()
            .unwrap(),
        "dd",
    );
    let metrics = MetricsPort::free();
    {
        let full = mount(&server, &cache, &metrics, &[]);
        read_and_check(&full.path("f.bin"), 5, 64 * MIB);
        read_and_check(&full.path("f.bin"), 5, 64 * MIB);
        assert!(metrics.value("fetchfs_disk_cache_fills_skipped_total") > 0, "fills were skipped, reads went on");
        // Before the tmpfs goes: the daemon holds the cache's directory until it exits.
        full.unmount_and_wait();
    }
}

#[test]
fn a_cache_directory_others_may_write_is_refused() {
    let server = TestServer::with_bucket(BUCKET);
    let cache = CacheDir::new();
    std::fs::set_permissions(&cache.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let credentials = server.credentials().cloned().unwrap_or_default();
    let refused = Mount::new(&server.endpoint_url(), &credentials, BUCKET, &["--disk-cache", cache.arg()])
        .err()
        .expect("refused");
    assert!(refused.contains("writable by others"), "{refused}");
}

#[test]
fn a_cache_another_user_could_swap_is_refused_at_mount() {
    // (a) --disk-cache is a link in another user's directory, to a private directory of ours: the
    // user could repoint it at a directory of forged files. (b) A cache inside a directory anyone
    // may write: the user could move it away and plant another.
    let server = TestServer::with_bucket(BUCKET);
    let credentials = server.credentials().cloned().unwrap_or_default();
    let refused = |cache: &Path| {
        Mount::new(&server.endpoint_url(), &credentials, BUCKET, &["--disk-cache", cache.to_str().unwrap()])
            .err()
            .unwrap_or_else(|| panic!("--disk-cache {} was accepted", cache.display()))
    };
    let theirs = fresh_dir("other-users-dir");
    ok(Command::new("chown").arg("65534").arg(&theirs).output().unwrap(), "chown");
    let ours = CacheDir::new();
    std::os::unix::fs::symlink(&ours.0, theirs.join("cache")).unwrap();
    let said = refused(&theirs.join("cache"));
    assert!(said.contains(&theirs.display().to_string()) && said.contains("belongs to user 65534"), "{said}");

    let open = fresh_dir("open-parent");
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let said = refused(&open.join("cache"));
    assert!(said.contains(&open.display().to_string()) && said.contains("others may write to"), "{said}");
    let _ = std::fs::remove_dir_all(&theirs);
    let _ = std::fs::remove_dir_all(&open);
}

#[test]
fn a_file_evicted_while_open_in_passthrough_stays_readable() {
    let server = TestServer::with_bucket(BUCKET);
    put(&server, "a.bin", 1, 40 * MIB);
    put(&server, "b.bin", 2, 40 * MIB);
    let cache = CacheDir::new();
    let metrics = MetricsPort::free();
    let mounted = mount(&server, &cache, &metrics, &["--disk-cache-size", "64"]);
    read_and_check(&mounted.path("a.bin"), 1, 40 * MIB);
    wait_written(&metrics, 40 * MIB);
    // Whole on disk: an open once the daemon has heard of the last close is passed through.
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        let file = File::open(mounted.path("a.bin")).unwrap();
        if metrics.value("fetchfs_disk_cache_passthrough_opens_total") >= 1 {
            break file;
        }
        assert!(Instant::now() < deadline, "a.bin is opened in passthrough");
        drop(file);
        std::thread::sleep(Duration::from_millis(50));
    };
    // b.bin does not fit beside it under the 64 MiB cap: a.bin, used least recently, leaves.
    read_and_check(&mounted.path("b.bin"), 2, 40 * MIB);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.value("fetchfs_disk_cache_evictions_total") < 1 {
        assert!(Instant::now() < deadline, "a.bin was evicted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut all = vec![0; 40 * MIB];
    held.read_exact_at(&mut all, 0).expect("the open descriptor still reads");
    assert!(all == data::content(1, 40 * MIB), "exact bytes from the evicted file");
}

#[test]
fn the_cache_leaves_a_twentieth_of_its_filesystem_free() {
    let server = TestServer::with_bucket(BUCKET);
    put(&server, "f.bin", 6, 64 * MIB);
    let cache = CacheDir::new();
    let _tmpfs = Tmpfs::mount(&cache, "40m");
    let metrics = MetricsPort::free();
    {
        // A cap above the filesystem's size: only the floor keeps it from filling.
        let mounted = mount(&server, &cache, &metrics, &["--disk-cache-size", "64"]);
        read_and_check(&mounted.path("f.bin"), 6, 64 * MIB);
        let deadline = Instant::now() + Duration::from_secs(30);
        while metrics.value("fetchfs_disk_cache_written_bytes_total") < 30 * MIB as u64 {
            assert!(
                Instant::now() < deadline,
                "the cache filled what it may: {} bytes written, {} blocks skipped, {} stalls",
                metrics.value("fetchfs_disk_cache_written_bytes_total"),
                metrics.value("fetchfs_disk_cache_fills_skipped_total"),
                metrics.value("fetchfs_disk_cache_stalls_total"),
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        mounted.unmount_and_wait();
    }
    let out = ok(Command::new("stat").args(["-f", "-c", "%a %b"]).arg(cache.arg()).output().unwrap(), "stat -f");
    let out = String::from_utf8_lossy(&out);
    let (free, total) = out.trim().split_once(' ').expect("two numbers");
    let (free, total): (u64, u64) = (free.parse().unwrap(), total.parse().unwrap());
    assert!(free * 20 >= total, "{free} of {total} blocks free");
}

#[test]
fn a_file_opened_on_a_frozen_disk_is_read_from_the_network() {
    // fsfreeze blocks every write to the cache's filesystem, creating files included: an open
    // must not wait for the disk, and reads go on.
    let server = TestServer::with_bucket(BUCKET);
    put(&server, "f.bin", 4, 8 * MIB);
    let image = fresh_dir("frozen-disk").join("disk.img");
    let cache = CacheDir::new();
    let _disk = LoopExt4::mount(&image, &cache);
    let metrics = MetricsPort::free();
    let mounted = mount(&server, &cache, &metrics, &[]);
    ok(Command::new("fsfreeze").args(["-f", cache.arg()]).output().unwrap(), "fsfreeze -f");
    let (done, finished) = std::sync::mpsc::channel();
    let path = mounted.path("f.bin");
    std::thread::spawn(move || {
        read_and_check(&path, 4, 8 * MIB);
        let _ = done.send(());
    });
    let read = finished.recv_timeout(Duration::from_secs(20));
    let _ = Command::new("fsfreeze").args(["-u", cache.arg()]).status();
    assert!(read.is_ok(), "the read finished while the disk was frozen");
    mounted.unmount_and_wait();
    let _ = std::fs::remove_dir_all(image.parent().unwrap());
}

#[test]
fn a_disk_whose_writes_fail_for_want_of_space_never_fails_a_read() {
    // The cache's ext4 says it has room, but its loop device's image lives on a tmpfs too small
    // for it: writes of fills fail underneath (ENOSPC, EIO at writeback), past every space check.
    let server = TestServer::with_bucket(BUCKET);
    put(&server, "f.bin", 9, 64 * MIB);
    let backing = CacheDir::new();
    let _tmpfs = Tmpfs::mount(&backing, "24m");
    let cache = CacheDir::new();
    let _disk = LoopExt4::mount(&backing.0.join("disk.img"), &cache);
    std::fs::set_permissions(&cache.0, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // A second mount reads what the first left on disk: only blocks recorded as written.
    for pass in 0..2 {
        let metrics = MetricsPort::free();
        let mounted = mount(&server, &cache, &metrics, &[]);
        read_and_check(&mounted.path("f.bin"), 9, 64 * MIB);
        read_and_check(&mounted.path("f.bin"), 9, 64 * MIB);
        if pass == 0 {
            let deadline = Instant::now() + Duration::from_secs(30);
            while metrics.value("fetchfs_disk_cache_fills_skipped_total") == 0 {
                assert!(Instant::now() < deadline, "fills failed and were skipped");
                std::thread::sleep(Duration::from_millis(50));
            }
            let said = std::fs::read_to_string(&mounted.log).unwrap_or_default();
            assert!(said.contains("reads go on from S3"), "the log says the disk failed and reads went on: {said}");
        }
        mounted.unmount_and_wait();
    }
}

/// A mount made by an unprivileged user (nobody), who may not register passthrough backing files.
/// /dev/fuse here is root's alone (0600), and changing it would touch the whole machine; so the
/// daemon runs in a mount namespace of its own where a 0666 node of the same device stands over
/// /dev/fuse, and mounts through the setuid `fusermount3` as any user would. Its mount is seen
/// only inside that namespace, where the reads go too.
struct UnprivilegedMount {
    daemon: u32,
    dir: PathBuf,
    log: PathBuf,
}

const NOBODY: &str = "65534";

/// A node of the FUSE device anyone may open, in a root-owned temp directory; removed at the end.
struct FuseNode(PathBuf);

impl FuseNode {
    fn new() -> Self {
        let node = fresh_dir("fuse-node").join("fuse");
        ok(Command::new("mknod").arg(&node).args(["c", "10", "229"]).output().unwrap(), "mknod");
        std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        Self(node)
    }
}

impl Drop for FuseNode {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs `command` as nobody.
fn as_nobody(command: &mut Command) -> &mut Command {
    command.args(["setpriv", "--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
}

impl UnprivilegedMount {
    /// `home` is nobody's: the mount point, the log and the cache all live in it.
    fn new(server: &TestServer, device: &FuseNode, home: &Path, cache: &Path, metrics: &MetricsPort) -> Self {
        let dir = home.join("mnt");
        let log = home.join("fetchfs.log");
        let credentials = server.credentials().cloned().unwrap_or_default();
        let mut command = Command::new("unshare");
        command.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mount --bind "$0" /dev/fuse && exec "$@""#,
        ]);
        command.arg(&device.0);
        as_nobody(&mut command)
            .arg(mount_tests::mount::fetchfs_binary())
            .arg("mount")
            .arg(BUCKET)
            .arg(&dir)
            .args(["--endpoint-url", &server.endpoint_url(), "--force-path-style", "--debug", "--log-file"])
            .arg(&log)
            .args(["--disk-cache", cache.to_str().unwrap(), "--metrics-addr", &metrics.addr()])
            .env("HOME", home)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", &credentials.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &credentials.secret_key)
            .stdin(std::process::Stdio::null());
        ok(command.output().unwrap(), "an unprivileged fetchfs mount");
        let daemon = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let dir = dir.to_str()?.as_bytes();
                cmdline.split(|&b| b == 0).any(|a| a == dir).then_some(pid)
            })
            .expect("the daemon runs");
        Self { daemon, dir, log }
    }

    /// The bytes of `relative`, read by `cat` as nobody inside the daemon's namespace.
    fn cat(&self, relative: &str) -> Vec<u8> {
        let mut command = Command::new("nsenter");
        command.args(["--target", &self.daemon.to_string(), "--mount"]);
        ok(as_nobody(&mut command).arg("cat").arg(self.dir.join(relative)).output().unwrap(), "cat")
    }

    /// SIGTERM, as systemd stops a mount, and wait for the daemon to leave.
    fn stop(&self) {
        // SAFETY: kill sends a signal and touches no memory.
        unsafe { libc::kill(self.daemon as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(40);
        while Path::new(&format!("/proc/{}", self.daemon)).exists() {
            assert!(Instant::now() < deadline, "the daemon left after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for UnprivilegedMount {
    fn drop(&mut self) {
        if Path::new(&format!("/proc/{}", self.daemon)).exists() {
            // SAFETY: as in stop.
            unsafe { libc::kill(self.daemon as i32, libc::SIGKILL) };
        }
    }
}

#[test]
fn without_passthrough_the_daemon_serves_the_disk_cache_itself() {
    let server = TestServer::with_bucket(BUCKET);
    put(&server, "a.bin", 9, 12 * MIB);
    let home = fresh_dir("unprivileged");
    std::fs::create_dir(home.join("mnt")).unwrap();
    let cache = home.join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    ok(Command::new("chown").args(["-R", &format!("{NOBODY}:{NOBODY}")]).arg(&home).output().unwrap(), "chown");

    let device = FuseNode::new();
    let metrics = MetricsPort::free();
    let first = UnprivilegedMount::new(&server, &device, &home, &cache, &metrics);
    assert!(first.cat("a.bin") == data::content(9, 12 * MIB), "exact bytes from S3");
    wait_written(&metrics, 12 * MIB);
    first.stop();

    let metrics = MetricsPort::free();
    let second = UnprivilegedMount::new(&server, &device, &home, &cache, &metrics);
    let before = gets(&server);
    assert!(second.cat("a.bin") == data::content(9, 12 * MIB), "exact bytes from the disk cache");
    assert_eq!(gets(&server), before, "no GET: the daemon read the disk cache");
    assert_eq!(metrics.value("fetchfs_disk_cache_passthrough_opens_total"), 0);
    assert!(metrics.value("fetchfs_disk_cache_read_bytes_total") >= 12 * MIB as u64, "the daemon read the disk");
    let log = std::fs::read_to_string(&second.log).unwrap();
    assert!(log.contains("served by the daemon (FUSE passthrough needs root)"), "{log}");
    second.stop();
    let _ = std::fs::remove_dir_all(&home);
}
