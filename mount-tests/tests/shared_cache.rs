//! The shared cache on real mounts: a far source (round trips and a per-connection cap) and a near
//! cache bucket on another server. What one node fetched, the next reads from the cache; what it
//! reads back is checked, so planted or unkeyed blocks are never served; and a cache that cannot be
//! used is refused at mount in one line.

use std::path::Path;
use std::time::{Duration, Instant};

use mount_tests::data;
use mount_tests::metrics::MetricsPort;
use mount_tests::mount::{Mount, fresh_dir};
use mount_tests::server::{FaultStatus, FaultTrigger, StoredObject, TestServer};

const SOURCE: &str = "dataset";
const CACHE: &str = "near-cache";
const MIB: usize = 1024 * 1024;
const SMALL: usize = 100 * 1024;
const FILES: u64 = 20;

/// A far source with a large file and small ones, and a near server with the cache bucket.
fn far_and_near() -> (TestServer, TestServer) {
    let far = TestServer::with_files(SOURCE, "small", FILES, SMALL);
    far.storage().put(SOURCE, "large.bin", StoredObject::new(data::content(99, 24 * MIB), None)).expect("put");
    far.knobs().set_first_byte_delay(Duration::from_millis(40));
    far.knobs().set_bandwidth(Some(25_000_000));
    let near = TestServer::with_bucket(CACHE);
    (far, near)
}

fn total() -> u64 {
    24 * MIB as u64 + FILES * SMALL as u64
}

/// A fresh node: its own daemon, memory and no disk cache.
fn node(far: &TestServer, near: &TestServer, metrics: &MetricsPort, extra: &[&str]) -> Result<Mount, String> {
    let addr = metrics.addr();
    let endpoint = near.endpoint_url();
    let mut args = vec!["--shared-cache", "s3://near-cache/fleet/", "--shared-cache-endpoint-url", &endpoint];
    args.extend_from_slice(&["--metrics-addr", &addr]);
    args.extend_from_slice(extra);
    let credentials = far.credentials().cloned().unwrap_or_default();
    Mount::new(&far.endpoint_url(), &credentials, SOURCE, &args)
}

/// Reads every file and checks its bytes.
fn read_all(mount: &Mount) {
    let large = std::fs::read(mount.path("large.bin")).unwrap();
    assert!(large == data::content(99, 24 * MIB), "large.bin");
    for i in 0..FILES {
        let small = std::fs::read(mount.path(&format!("small/f{i:05}"))).unwrap();
        assert!(small == data::content(i, SMALL), "small/f{i:05}");
    }
}

/// Node 1 reads everything, its fills go up, and it unmounts.
fn fill_from_a_first_node(far: &TestServer, near: &TestServer) {
    let metrics = MetricsPort::free();
    let first = node(far, near, &metrics, &[]).unwrap();
    read_all(&first);
    // Every block went up, those that came in pieces (a stream's first read, then the rest of its
    // block) as well.
    wait_written(&metrics, total());
    first.unmount_and_wait();
}

fn wait_written(metrics: &MetricsPort, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics.value("fetchfs_shared_cache_written_bytes_total") < bytes {
        let written = metrics.value("fetchfs_shared_cache_written_bytes_total");
        assert!(Instant::now() < deadline, "{written} of at least {bytes} bytes went up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn far_gets(far: &TestServer) -> u64 {
    far.knobs().counters().snapshot().requests_of("GetObject")
}

/// Flips one byte of every block in the cache bucket.
fn plant(near: &TestServer) {
    let mut blocks = Vec::new();
    near.storage()
        .scan(CACHE, "fleet/", None, |key, object| {
            blocks.push((key.to_owned(), object.data.to_vec()));
            true
        })
        .unwrap();
    for (key, mut bytes) in blocks.into_iter().filter(|(key, _)| !key.ends_with("probe")) {
        if let Some(last) = bytes.last_mut() {
            *last ^= 0x55;
        }
        near.storage().put(CACHE, &key, StoredObject::new(bytes.into(), None)).unwrap();
    }
}

#[test]
fn a_second_node_reads_what_the_first_fetched_from_the_near_cache() {
    let (far, near) = far_and_near();
    fill_from_a_first_node(&far, &near);

    let metrics = MetricsPort::free();
    let second = node(&far, &near, &metrics, &[]).unwrap();
    let before = far_gets(&far);
    read_all(&second);
    let from_source = metrics.value("fetchfs_fetched_bytes_total");
    assert_eq!(from_source, 0, "bytes that came from the far source");
    assert!(metrics.value("fetchfs_shared_cache_read_bytes_total") >= total());
    assert_eq!(far_gets(&far) - before, 0, "GETs of the far source");
}

#[test]
fn a_file_copied_out_of_a_memory_map_in_shuffled_slices_goes_up_whole() {
    let (far, near) = far_and_near();
    let metrics = MetricsPort::free();
    let first = node(&far, &near, &metrics, &[]).unwrap();
    // A loader copying tensors out of a mapped file in shuffled order: the kernel reads around
    // each fault, so most blocks come in two pieces, many slices apart.
    let loader = r#"
import mmap, random, sys
random.seed(7)
with open(sys.argv[1], "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
    starts = list(range(0, len(m), 1 << 18))
    random.shuffle(starts)
    parts = {at: bytes(m[at:at + (1 << 18)]) for at in starts}
sys.stdout.buffer.write(b"".join(parts[at] for at in sorted(parts)))
"#;
    let large = first.path("large.bin");
    let out = std::process::Command::new("python3").args(["-c", loader]).arg(&large).output().unwrap();
    assert!(out.status.success(), "the loader: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == data::content(99, 24 * MIB), "the slices' bytes");
    wait_written(&metrics, 24 * MIB as u64);
    first.unmount_and_wait();

    let metrics = MetricsPort::free();
    let second = node(&far, &near, &metrics, &[]).unwrap();
    let before = far_gets(&far);
    assert!(std::fs::read(second.path("large.bin")).unwrap() == data::content(99, 24 * MIB), "large.bin");
    assert_eq!(far_gets(&far) - before, 0, "GETs of the far source");
}

#[test]
fn planted_or_unkeyed_blocks_are_refused_and_the_bytes_stay_exact() {
    let (far, near) = far_and_near();
    let key = fresh_dir("shared-key").join("key");
    std::fs::write(&key, "a cluster secret of some length\n").unwrap();
    fill_from_a_first_node(&far, &near);

    // Blocks a node without the key wrote: a node with it refuses every one.
    let metrics = MetricsPort::free();
    let keyed = node(&far, &near, &metrics, &["--shared-cache-key-file", key.to_str().unwrap()]).unwrap();
    read_all(&keyed);
    assert_eq!(metrics.value("fetchfs_shared_cache_read_bytes_total"), 0, "nothing unkeyed served");
    assert!(metrics.value("fetchfs_shared_cache_integrity_failures_total") >= 1);
    let log = std::fs::read_to_string(&keyed.log).unwrap();
    assert!(log.contains("a cached block was refused"), "{log}");
    keyed.unmount_and_wait();

    // Bytes changed in the bucket by hand: refused by a node without the key too.
    plant(&near);
    let metrics = MetricsPort::free();
    let plain = node(&far, &near, &metrics, &[]).unwrap();
    read_all(&plain);
    assert_eq!(metrics.value("fetchfs_shared_cache_read_bytes_total"), 0, "nothing planted served");
    assert!(metrics.value("fetchfs_shared_cache_integrity_failures_total") >= 1);
    let _ = std::fs::remove_dir_all(key.parent().unwrap_or(Path::new("/nonexistent")));
}

#[test]
fn a_cache_that_cannot_be_used_is_refused_at_mount_in_one_line() {
    let (far, near) = far_and_near();
    let refused = |extra: &[&str], near: &TestServer| {
        let metrics = MetricsPort::free();
        node(&far, near, &metrics, extra).err().expect("the mount is refused")
    };
    let missing = TestServer::with_bucket("other-bucket");
    let said = refused(&[], &missing);
    assert!(said.contains("the bucket does not exist"), "{said}");

    near.knobs().set_status_fault(FaultStatus::InvalidObjectState, FaultTrigger::EveryPut);
    let said = refused(&[], &near);
    assert!(said.contains("cannot write to it"), "{said}");
    near.knobs().clear();

    let credentials = far.credentials().cloned().unwrap_or_default();
    let inside = ["--shared-cache", "s3://dataset/cache/"];
    let said = Mount::new(&far.endpoint_url(), &credentials, SOURCE, &inside).err().expect("refused");
    assert!(said.contains("inside the mounted bucket"), "{said}");
}

#[test]
fn an_object_replaced_at_the_source_is_never_served_stale() {
    let (far, near) = far_and_near();
    fill_from_a_first_node(&far, &near);
    far.storage().put(SOURCE, "large.bin", StoredObject::new(data::content(7, 24 * MIB), None)).expect("put");

    let metrics = MetricsPort::free();
    let second = node(&far, &near, &metrics, &[]).unwrap();
    assert!(std::fs::read(second.path("large.bin")).unwrap() == data::content(7, 24 * MIB), "the new version");
}

#[test]
fn a_cache_that_stops_answering_leaves_reads_to_the_source_within_their_deadline() {
    let (far, near) = far_and_near();
    fill_from_a_first_node(&far, &near);

    let metrics = MetricsPort::free();
    let second = node(&far, &near, &metrics, &["--read-timeout", "6"]).unwrap();
    near.knobs().set_first_byte_delay(Duration::from_secs(30));
    // Every read must finish within its 6 s deadline, or it would fail with EIO.
    read_all(&second);
    let log = std::fs::read_to_string(&second.log).unwrap();
    assert!(log.contains("reads go to the source"), "{log}");
    near.knobs().clear();
}
