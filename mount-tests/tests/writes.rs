//! Writing new files through real mounts, with ordinary tools, the bytes compared with what the
//! test server stored: cp, dd, tar -x, Python (a 3 GiB file, and a checkpoint saved with fsync),
//! many small files from 8 processes, faults during the upload, and the rules (writes only at the
//! end, overwrite and delete behind their flags, --read-only).

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use mount_tests::data;
use mount_tests::mount::{Mount, fresh_dir};
use mount_tests::server::{FaultStatus, FaultTrigger, ServerConfig, Storage, StoredObject, TestServer};

const BUCKET: &str = "writes";
const MIB: usize = 1024 * 1024;

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stored(server: &TestServer, key: &str) -> Option<Bytes> {
    server.storage().get(BUCKET, key).expect("storage").map(|o| o.data)
}

fn local_file(name: &str, content: &[u8]) -> std::path::PathBuf {
    let path = fresh_dir("write-src").join(name);
    std::fs::write(&path, content).expect("write a local file");
    path
}

#[test]
fn cp_dd_and_shell_redirection_store_exact_bytes() {
    let server = TestServer::with_bucket(BUCKET);
    let mount = Mount::of(&server, BUCKET, &[]);
    let source = data::content(1, 50 * MIB + 123);
    let local = local_file("src.bin", &source);
    ok(Command::new("cp").arg(&local).arg(mount.path("copy.bin")).output().unwrap(), "cp");
    assert!(stored(&server, "copy.bin") == Some(source.clone()), "cp: the object is the file");
    ok(mount.sh("dd if=/dev/zero of=zeros.bin bs=1M count=40 conv=fsync status=none"), "dd");
    assert_eq!(stored(&server, "zeros.bin"), Some(Bytes::from(vec![0u8; 40 * MIB])));
    ok(mount.sh("echo hello > greeting.txt && touch empty.txt"), "echo and touch");
    assert_eq!(stored(&server, "greeting.txt"), Some(Bytes::from_static(b"hello\n")));
    assert_eq!(stored(&server, "empty.txt"), Some(Bytes::new()));
    // Read back through the mount, and listed with their sizes.
    assert!(std::fs::read(mount.path("copy.bin")).unwrap() == source);
    let listing = ok(mount.sh("ls -l"), "ls -l");
    assert!(listing.lines().any(|l| l.contains(&(50 * MIB + 123).to_string()) && l.ends_with("copy.bin")), "{listing}");
}

#[test]
fn tar_extracts_a_tree_into_the_mount() {
    let server = TestServer::with_bucket(BUCKET);
    let mount = Mount::of(&server, BUCKET, &[]);
    let tree = fresh_dir("tar-tree");
    let mut files = Vec::new();
    for (i, path) in ["a/one.txt", "a/b/two.bin", "a/b/c/three.bin", "top.txt"].iter().enumerate() {
        let content = data::content(10 + i as u64, 1000 * (i + 1) * (i + 1) * 300);
        std::fs::create_dir_all(tree.join(path).parent().unwrap()).unwrap();
        std::fs::write(tree.join(path), &content).unwrap();
        files.push((path.to_string(), content));
    }
    let archive = fresh_dir("tar").join("tree.tar");
    ok(Command::new("tar").arg("-C").arg(&tree).arg("-cf").arg(&archive).arg(".").output().unwrap(), "tar -c");
    ok(Command::new("tar").arg("-C").arg(&mount.dir).arg("-xf").arg(&archive).output().unwrap(), "tar -x");
    for (path, content) in &files {
        assert!(stored(&server, path).as_ref() == Some(content), "{path} stored exactly");
    }
    let found = ok(mount.sh("find . -type f | sort"), "find");
    assert_eq!(found.lines().collect::<Vec<_>>(), ["./a/b/c/three.bin", "./a/b/two.bin", "./a/one.txt", "./top.txt"]);
}

#[test]
fn python_writes_three_gib_in_bounded_memory() {
    // Kept on disk by the server, not in its memory.
    let storage_dir = fresh_dir("write-storage");
    let storage = std::sync::Arc::new(Storage::in_directory(&storage_dir).expect("directory storage"));
    let server = TestServer::start(ServerConfig { storage, ..ServerConfig::default() }).expect("server");
    server.storage().create_bucket(BUCKET).unwrap();
    let mount = Mount::of(&server, BUCKET, &["--cache-size", "256"]);
    const WRITER: &str = "import sys\nwith open(sys.argv[1], 'wb') as f:\n    for i in range(3072):\n        f.write(bytes([i % 251]) * 1048576)\n";
    let pid = mount.daemon_pid().expect("daemon");
    let writer = Command::new("python3").args(["-c", WRITER]).arg(mount.path("big.bin")).spawn().expect("python3");
    let peak = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = 0;
            let status = format!("/proc/{pid}/status");
            while let Ok(text) = std::fs::read_to_string(&status) {
                let rss = text
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
                peak = peak.max(rss.unwrap_or(0));
                if stored(&server, "big.bin").is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        let out = writer.wait_with_output().expect("python3");
        assert!(out.status.success(), "python3 wrote and closed the file");
        sampler.join().expect("sampler")
    });
    let object = stored(&server, "big.bin").expect("the object exists after close()");
    assert_eq!(object.len(), 3072 * MIB);
    for (i, chunk) in object.chunks(MIB).enumerate() {
        assert!(chunk.iter().all(|&b| b == (i % 251) as u8), "MiB {i}");
    }
    let peak_mib = peak / 1024;
    assert!(peak_mib <= 256 + 64, "peak RSS {peak_mib} MiB with --cache-size 256");
    let _ = std::fs::remove_dir_all(&storage_dir);
}

#[test]
fn a_checkpoint_saved_with_fsync_is_in_s3_before_close() {
    let server = TestServer::with_bucket(BUCKET);
    let mount = Mount::of(&server, BUCKET, &[]);
    std::fs::create_dir(mount.path("ckpt")).expect("mkdir");
    // As torch.save to a new name then fsync: the object exists once fsync returns.
    let checkpoint = mount.path("ckpt/step-100.pt");
    let content = data::content(42, 20 * MIB + 7);
    let mut file = std::fs::File::create(&checkpoint).expect("create");
    std::io::Write::write_all(&mut file, &content).expect("write");
    file.sync_all().expect("fsync completes the upload");
    assert!(stored(&server, "ckpt/step-100.pt") == Some(content.clone()), "in S3 before close");
    drop(file);
    assert!(std::fs::read(&checkpoint).unwrap() == content);
}

#[test]
fn eight_processes_write_a_thousand_small_files() {
    let server = TestServer::with_bucket(BUCKET);
    let mount = Mount::of(&server, BUCKET, &[]);
    std::fs::create_dir(mount.path("out")).expect("mkdir");
    const WORKER: &str = "import sys\nroot, k = sys.argv[1], int(sys.argv[2])\nfor i in range(k, 1000, 8):\n    with open(f'{root}/f{i:04}', 'wb') as f:\n        f.write(bytes([i % 256]) * 102400)\n";
    let workers: Vec<_> = (0..8)
        .map(|k| {
            Command::new("python3").args(["-c", WORKER]).arg(mount.path("out")).arg(k.to_string()).spawn().unwrap()
        })
        .collect();
    for worker in workers {
        assert!(worker.wait_with_output().unwrap().status.success(), "a worker failed");
    }
    for i in 0..1000 {
        assert_eq!(
            stored(&server, &format!("out/f{i:04}")),
            Some(Bytes::from(vec![(i % 256) as u8; 102400])),
            "out/f{i:04}"
        );
    }
    assert_eq!(ok(mount.sh("ls out | wc -l"), "ls").trim(), "1000");
}

#[test]
fn transient_faults_are_retried_and_the_bytes_are_exact() {
    let server = TestServer::with_bucket(BUCKET);
    let mount = Mount::of(&server, BUCKET, &["--upload-part-size", "5"]);
    let content = data::content(7, 30 * MIB);
    let local = local_file("faults.bin", &content);
    server.knobs().set_status_fault(FaultStatus::SlowDown, FaultTrigger::Fraction(0.2));
    server.knobs().reset_next_part_uploads(2);
    ok(Command::new("cp").arg(&local).arg(mount.path("faults.bin")).output().unwrap(), "cp under faults");
    server.knobs().clear();
    assert!(stored(&server, "faults.bin") == Some(content));
    assert!(server.knobs().counters().snapshot().injected_faults >= 2, "faults were injected");
}

#[test]
fn a_failed_upload_is_the_close_s_eio_and_leaves_no_object() {
    let server = TestServer::with_bucket(BUCKET);
    let mount = Mount::of(&server, BUCKET, &["--upload-part-size", "5", "--max-attempts", "2"]);
    server.knobs().set_status_fault(FaultStatus::InternalError, FaultTrigger::EveryPartUpload);
    const WRITER: &str = "import os, sys\nf = open(sys.argv[1], 'wb')\ntry:\n    for i in range(20):\n        f.write(b'x' * 1048576)\n    f.close()\n    print('closed')\nexcept OSError as e:\n    print('errno', e.errno)\n";
    let out =
        ok(Command::new("python3").args(["-c", WRITER]).arg(mount.path("doomed.bin")).output().unwrap(), "python3");
    assert_eq!(out.trim(), format!("errno {}", libc::EIO), "the write or the close fails with EIO");
    server.knobs().clear();
    assert_eq!(stored(&server, "doomed.bin"), None, "nothing partial appears");
    let asked = server.knobs().counters().snapshot();
    assert!(asked.requests_of("AbortMultipartUpload") >= 1, "the upload was aborted: {asked:?}");
    assert_eq!(asked.requests_of("CompleteMultipartUpload"), 0);
}

#[test]
fn writes_only_at_the_end() {
    let server = TestServer::with_bucket(BUCKET);
    let mount = Mount::of(&server, BUCKET, &[]);
    const SEEKER: &str = "import sys\nf = open(sys.argv[1], 'wb', buffering=0)\nf.write(b'header')\ntry:\n    f.seek(0)\n    f.write(b'HEADER')\n    print('rewrote')\nexcept OSError as e:\n    print('errno', e.errno)\nf.close()\n";
    let out = ok(Command::new("python3").args(["-c", SEEKER]).arg(mount.path("seek.bin")).output().unwrap(), "python3");
    assert_eq!(out.trim(), format!("errno {}", libc::EINVAL));
    assert_eq!(stored(&server, "seek.bin"), None, "a file that would not hold what was written is not written");
}

#[test]
fn overwrite_and_delete_need_their_flags() {
    let server = TestServer::with_bucket(BUCKET);
    server.storage().put(BUCKET, "model.bin", StoredObject::new(Bytes::from_static(b"v1"), None)).unwrap();
    {
        let mount = Mount::of(&server, BUCKET, &[]);
        let out = mount.sh("echo v2 > model.bin");
        assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"), "{out:?}");
        let out = mount.sh("rm model.bin");
        assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"), "{out:?}");
        assert_eq!(stored(&server, "model.bin"), Some(Bytes::from_static(b"v1")));
    }
    let mount = Mount::of(&server, BUCKET, &["--allow-overwrite", "--allow-delete", "--metadata-ttl", "0"]);
    ok(mount.sh("echo v2 > model.bin"), "overwrite");
    assert_eq!(stored(&server, "model.bin"), Some(Bytes::from_static(b"v2\n")));
    assert_eq!(std::fs::read(mount.path("model.bin")).unwrap(), b"v2\n");
    ok(mount.sh("echo more >> model.bin"), "append");
    assert_eq!(stored(&server, "model.bin"), Some(Bytes::from_static(b"v2\nmore\n")));
    ok(mount.sh("rm model.bin"), "delete");
    assert_eq!(stored(&server, "model.bin"), None);
}

#[test]
fn a_file_open_in_passthrough_cannot_be_opened_for_writing() {
    let server = TestServer::with_bucket(BUCKET);
    server.storage().put(BUCKET, "weights.bin", StoredObject::new(data::content(3, 100 * 1024), None)).unwrap();
    let cache = fresh_dir("write-disk-cache");
    let metrics = mount_tests::metrics::MetricsPort::free();
    let mount = Mount::of(
        &server,
        BUCKET,
        &["--disk-cache", cache.to_str().unwrap(), "--metrics-addr", &metrics.addr(), "--allow-overwrite"],
    );
    assert!(std::fs::read(mount.path("weights.bin")).unwrap() == data::content(3, 100 * 1024));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metrics.value("fetchfs_disk_cache_written_bytes_total") < 100 * 1024 {
        assert!(std::time::Instant::now() < deadline, "the file reached the disk cache");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Whole on disk: the next open is served by the kernel from the cache file, once the daemon
    // has heard of the last close (the kernel sends it after `close` returns; until then a new
    // open joins the one the daemon serves).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let reader = loop {
        let reader = std::fs::File::open(mount.path("weights.bin")).unwrap();
        if metrics.value("fetchfs_disk_cache_passthrough_opens_total") >= 1 {
            break reader;
        }
        assert!(std::time::Instant::now() < deadline, "an open of the file whole on disk is passed through");
        drop(reader);
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = mount.sh("echo new > weights.bin");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Text file busy"), "{out:?}");
    drop(reader);
    // The kernel tells the daemon of the close just after it returns.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !mount.sh("echo new > weights.bin").status.success() {
        assert!(std::time::Instant::now() < deadline, "replacing it once nothing reads it");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(stored(&server, "weights.bin"), Some(Bytes::from_static(b"new\n")));
    let _ = std::fs::remove_dir_all(&cache);
}
