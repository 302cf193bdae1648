//! Tests that change machine-wide state (`drop_caches`), in a test binary of their own: cargo runs
//! test binaries one at a time, so no test that counts requests or times something runs beside
//! them (a concurrent `drop_caches` made a request-counting test see 967 HEADs). Keep every test
//! here serial: they share this binary's threads.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use mount_tests::metrics::MetricsPort;
use mount_tests::mount::Mount;
use mount_tests::server::TestServer;

const BUCKET: &str = "meta";

/// Held by every test here, so that they also run one at a time within this binary.
static MACHINE_WIDE: Mutex<()> = Mutex::new(());

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Drops the kernel's dentry and inode caches, which makes it FORGET what it held of a mount.
fn drop_dentries_and_inodes() {
    std::fs::write("/proc/sys/vm/drop_caches", "2").expect("drop caches (as root)");
}

#[test]
fn inodes_the_kernel_forgets_leave_the_daemon() {
    let _serial = MACHINE_WIDE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let server = TestServer::with_files(BUCKET, "many", 3000, 16);
    let metrics = MetricsPort::free();
    let mount = Mount::of(&server, BUCKET, &["--metrics-addr", &metrics.addr()]);
    let inodes = || metrics.value("fetchfs_inodes");
    ok(mount.sh("ls -l many > /dev/null"), "ls -l");
    let held = inodes();
    assert!(held >= 3000, "ls -l made the kernel hold every entry: {held}");
    // Dropping the kernel's dentry and inode caches makes it FORGET them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while inodes() > 100 && Instant::now() < deadline {
        drop_dentries_and_inodes();
        std::thread::sleep(Duration::from_millis(300));
    }
    let left = inodes();
    assert!(left <= 100, "after FORGET the daemon holds {left} inodes (was {held})");
    assert_eq!(ok(mount.sh("ls many | wc -l"), "ls").trim(), "3000", "and still serves the directory");
}

#[test]
fn a_listing_outlives_the_kernel_forgetting_its_directory() {
    let _serial = MACHINE_WIDE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let server = TestServer::with_files(BUCKET, "kept", 2000, 16);
    let metrics = MetricsPort::free();
    let mount = Mount::of(&server, BUCKET, &["--metadata-ttl", "300", "--metrics-addr", &metrics.addr()]);
    ok(mount.sh("ls -l kept > /dev/null"), "ls -l");
    let held = metrics.value("fetchfs_inodes");
    // The kernel really forgot the directory and its entries before the requests are counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.value("fetchfs_inodes") > 10 {
        assert!(Instant::now() < deadline, "the kernel still holds inodes (held {held})");
        drop_dentries_and_inodes();
        std::thread::sleep(Duration::from_millis(200));
    }
    let counters = server.knobs().counters();
    counters.reset();
    for i in 0..2000 {
        let meta = std::fs::metadata(mount.path(&format!("kept/f{i:05}"))).expect("stat");
        assert_eq!(meta.len(), 16);
    }
    let asked = counters.snapshot();
    // The directory's own lookup may cost a HEAD and a one-key LIST; its entries cost nothing.
    assert!(asked.requests_of("HeadObject") <= 1, "{asked:?}");
    assert!(asked.requests_of("ListObjectsV2") <= 1, "{asked:?}");
}

/// A memory control group of its own (v1, as these machines mount it), removed at the end.
struct MemoryGroup(std::path::PathBuf);

impl MemoryGroup {
    fn limited_to(bytes: u64) -> Self {
        let dir = std::path::PathBuf::from(format!("/sys/fs/cgroup/memory/fetchfs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a memory control group (as root)");
        std::fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string()).expect("its limit");
        Self(dir)
    }

    /// How many processes in it the kernel killed for want of memory.
    fn oom_kills(&self) -> u64 {
        let control = std::fs::read_to_string(self.0.join("memory.oom_control")).unwrap_or_default();
        control.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for MemoryGroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_mount_in_a_container_of_128_mib_sizes_itself_to_fit_and_reads_without_an_oom_kill() {
    let _serial = MACHINE_WIDE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    const MIB: usize = 1024 * 1024;
    let server = TestServer::with_files(BUCKET, "small", 300, 100 * 1024);
    let large = mount_tests::data::content(5, 512 * MIB);
    server
        .storage()
        .put(BUCKET, "large.bin", mount_tests::server::StoredObject::new(large.clone(), None))
        .expect("put");
    let group = MemoryGroup::limited_to(128 * MIB as u64);
    let mount = Mount::in_cgroup(&server, BUCKET, &[], &group.0.join("cgroup.procs")).unwrap_or_else(|e| panic!("{e}"));
    let daemon = mount.daemon_pid().expect("the daemon runs");
    assert!(
        mount.said.contains(
            "memory cache 64 MiB (48 for reads, 16 for writes), to fit the container's memory limit of 128 MiB"
        ),
        "the startup line says what it chose and why: {}",
        mount.said
    );
    let small: Vec<u8> = (0..300).flat_map(|i| mount_tests::data::content(i, 100 * 1024)).collect();
    let read_all = |mount: &Mount| {
        let read = std::fs::read(mount.path("large.bin")).expect("read large.bin");
        assert!(read == large, "the large object's bytes");
        let out = mount.sh("ls small > /dev/null && cat small/*");
        assert!(out.status.success() && out.stdout == small, "the small files' bytes");
    };
    read_all(&mount);
    assert_eq!(group.oom_kills(), 0, "nothing in the group was killed for memory");
    assert!(std::path::Path::new(&format!("/proc/{daemon}")).exists(), "the daemon still runs");
    let peak_mib = mount.peak_rss_kib() / 1024;
    assert!(peak_mib < 128, "peak RSS {peak_mib} MiB");
    mount.unmount_and_wait();
    // The same with a disk cache: its files' page cache is the group's too.
    let cache = mount_tests::mount::fresh_dir("container-disk-cache");
    let cache_arg = cache.to_str().expect("a UTF-8 temp path");
    let mount = Mount::in_cgroup(&server, BUCKET, &["--disk-cache", cache_arg], &group.0.join("cgroup.procs"))
        .unwrap_or_else(|e| panic!("{e}"));
    read_all(&mount);
    assert_eq!(group.oom_kills(), 0, "nothing in the group was killed for memory, with a disk cache");
    let peak_mib = mount.peak_rss_kib() / 1024;
    assert!(peak_mib < 128, "peak RSS {peak_mib} MiB with a disk cache");
    mount.unmount_and_wait();
    let _ = std::fs::remove_dir_all(&cache);
}
