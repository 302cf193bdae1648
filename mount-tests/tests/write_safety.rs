//! How the write path fails, through real mounts and ordinary programs: many files open for
//! writing at once never block, a child's close does not complete its parent's file, a file
//! rewritten after a shell's early close keeps its guard, a reader of the replaced version keeps
//! reading it, a stalled server fails a close within the write deadline, sizes and writes the
//! mount refuses leave no object, and uploads a killed daemon left are aborted by the next mount.

use std::io::{Read, Seek, SeekFrom};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mount_tests::data;
use mount_tests::mount::{Mount, fresh_dir};
use mount_tests::server::{StoredObject, TestServer};

const BUCKET: &str = "write-safety";
const MIB: usize = 1024 * 1024;

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stored(server: &TestServer, key: &str) -> Option<Bytes> {
    server.storage().get(BUCKET, key).expect("storage").map(|o| o.data)
}

fn python(script: &str, args: &[&std::path::Path]) -> std::process::Output {
    // A writer that hangs fails the test instead of the suite.
    Command::new("timeout").args(["300", "python3", "-c", script]).args(args).output().expect("run python3")
}

#[test]
fn forty_files_written_round_robin_by_one_thread_are_exact() {
    // Each file holds part of a part while the others are written: before, the budget ran out
    // with no part full and the writer blocked forever.
    let server = TestServer::with_bucket(BUCKET);
    let mount = Mount::of(&server, BUCKET, &[]);
    const WRITER: &str = "import os, sys\nfiles = [open(os.path.join(sys.argv[1], f'f{i:02}.bin'), 'wb', buffering=0) for i in range(40)]\nfor r in range(16):\n    for i, f in enumerate(files):\n        f.write(bytes([(i * 16 + r) % 251]) * 1048576)\nfor f in files:\n    f.close()\n";
    ok(python(WRITER, &[&mount.dir]), "40 files round-robin");
    for i in 0..40 {
        let object = stored(&server, &format!("f{i:02}.bin")).unwrap_or_else(|| panic!("f{i:02}.bin exists"));
        assert_eq!(object.len(), 16 * MIB);
        for (r, chunk) in object.chunks(MIB).enumerate() {
            let expected = ((i * 16 + r) % 251) as u8;
            assert!(chunk.iter().all(|&b| b == expected), "f{i:02}.bin, MiB {r}");
        }
    }
}

#[test]
fn seventeen_files_each_holding_a_byte_do_not_block_a_small_budget() {
    let server = TestServer::with_bucket(BUCKET);
    let mount = Mount::of(&server, BUCKET, &["--cache-size", "64"]);
    const WRITER: &str = "import os, sys\nfiles = [open(os.path.join(sys.argv[1], f'log{i}'), 'wb', buffering=0) for i in range(17)]\nfor f in files:\n    f.write(b'x')\nfor f in files:\n    f.close()\n";
    ok(python(WRITER, &[&mount.dir]), "17 files with a byte each");
    for i in 0..17 {
        assert_eq!(stored(&server, &format!("log{i}")), Some(Bytes::from_static(b"x")));
    }
}

#[test]
fn a_child_s_close_does_not_complete_its_parent_s_file() {
    let server = TestServer::with_bucket(BUCKET);
    let mount = Mount::of(&server, BUCKET, &[]);
    ok(mount.sh("{ echo first; echo second; } > group.txt"), "a shell group");
    assert_eq!(stored(&server, "group.txt"), Some(Bytes::from_static(b"first\nsecond\n")));
    ok(mount.sh("{ echo one; /bin/echo two; echo three; } > mixed.txt"), "builtins and a program");
    assert_eq!(stored(&server, "mixed.txt"), Some(Bytes::from_static(b"one\ntwo\nthree\n")));
    const FORKS: &str = "import os, subprocess, sys\nf = open(sys.argv[1], 'wb')\nf.write(b'a' * 1000000)\nf.flush()\nsubprocess.run(['true'])\nif os.fork() == 0:\n    os._exit(0)\nos.wait()\nf.write(b'b' * 1000000)\nf.close()\n";
    ok(python(FORKS, &[&mount.path("forked.bin")]), "a writer that runs children");
    let object = stored(&server, "forked.bin").expect("forked.bin exists");
    assert_eq!(object.len(), 2_000_000, "whole, not cut at the child's close");
    assert!(object[..1_000_000].iter().all(|&b| b == b'a') && object[1_000_000..].iter().all(|&b| b == b'b'));
}

#[test]
fn a_reader_of_the_replaced_version_keeps_reading_it() {
    let server = TestServer::with_bucket(BUCKET);
    let (old, new) = (data::content(1, 3 * MIB), data::content(2, 3 * MIB));
    server.storage().put(BUCKET, "model.bin", StoredObject::new(old.clone(), None)).unwrap();
    let mount = Mount::of(&server, BUCKET, &["--allow-overwrite"]);
    let mut reader = std::fs::File::open(mount.path("model.bin")).unwrap();
    let mut first = Vec::new();
    reader.read_to_end(&mut first).unwrap();
    assert!(first == old);
    std::fs::write(mount.path("model.bin"), &new).unwrap();
    let mut other = std::fs::File::open(mount.path("model.bin")).unwrap();
    let mut start = vec![0; 100 * 1024];
    other.read_exact(&mut start).unwrap();
    assert!(start[..] == new[..100 * 1024], "a file opened after the overwrite reads the new version");
    reader.seek(SeekFrom::Start(0)).unwrap();
    let mut again = Vec::new();
    reader.read_to_end(&mut again).unwrap();
    assert_eq!(again.len(), old.len());
    let mixed = again.iter().zip(old.iter()).position(|(a, b)| a != b);
    assert_eq!(mixed, None, "the old file reads only the old version");
    assert!(stored(&server, "model.bin") == Some(new));
}

#[test]
fn a_stalled_server_fails_a_close_within_the_write_deadline() {
    let server = TestServer::with_bucket(BUCKET);
    let mount = Mount::of(&server, BUCKET, &["--write-timeout", "2", "--upload-part-size", "5"]);
    ok(mount.sh("ls"), "ls");
    server.knobs().set_first_byte_delay(Duration::from_secs(600));
    let started = Instant::now();
    let out = mount.sh("echo x > small.txt");
    assert!(!out.status.success(), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "a small file failed after {:?}", started.elapsed());
    let started = Instant::now();
    const WRITER: &str = "import sys\ntry:\n    with open(sys.argv[1], 'wb') as f:\n        for i in range(12):\n            f.write(b'x' * 1048576)\n    print('closed')\nexcept OSError as e:\n    print('errno', e.errno)\n";
    let out = ok(python(WRITER, &[&mount.path("large.bin")]), "python3");
    assert_eq!(out.trim(), format!("errno {}", libc::EIO));
    assert!(started.elapsed() < Duration::from_secs(30), "a multipart file failed after {:?}", started.elapsed());
    server.knobs().clear();
    assert_eq!((stored(&server, "small.txt"), stored(&server, "large.bin")), (None, None));
}

#[test]
fn sizes_and_writes_the_mount_refuses_leave_no_object() {
    let server = TestServer::with_bucket(BUCKET);
    let mount = Mount::of(&server, BUCKET, &[]);
    let out = mount.sh("dd if=/dev/zero of=seek.bin bs=1 count=1 seek=100");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("Invalid argument"), "{said}");
    assert!(!said.contains("Input/output error"), "{said}");
    let out = mount.sh("truncate -s 100 sized.bin");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid argument"), "{out:?}");
    let out = mount.sh("fallocate -l 1M allocated.bin");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not supported"), "{out:?}");
    const SEEKER: &str = "import sys\nf = open(sys.argv[1], 'wb', buffering=0)\nf.write(b'header')\ntry:\n    f.seek(0)\n    f.write(b'HEADER')\n    print('rewrote')\nexcept OSError as e:\n    print('errno', e.errno)\nf.close()\n";
    let out = ok(python(SEEKER, &[&mount.path("rewound.bin")]), "python3");
    assert_eq!(out.trim(), format!("errno {}", libc::EINVAL));
    for key in ["seek.bin", "sized.bin", "allocated.bin", "rewound.bin"] {
        assert_eq!(stored(&server, key), None, "{key}: a file the mount refused is not written");
    }
}

#[test]
fn uploads_a_killed_daemon_left_are_aborted_by_the_next_mount() {
    let server = TestServer::with_bucket(BUCKET);
    let state = fresh_dir("write-state");
    let env = [("XDG_STATE_HOME", state.as_path())];
    let credentials = server.credentials().cloned().unwrap_or_default();
    let mount = |extra: &[&str]| {
        Mount::with_env(&server.endpoint_url(), &credentials, BUCKET, extra, &env).unwrap_or_else(|e| panic!("{e}"))
    };
    let first = mount(&["--upload-part-size", "5"]);
    let mut writer = Command::new("python3")
        .args([
            "-c",
            "import sys, time\nf = open(sys.argv[1], 'wb')\nf.write(b'x' * 12 * 1048576)\nf.flush()\ntime.sleep(600)\n",
        ])
        .arg(first.path("unfinished.bin"))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.knobs().counters().snapshot().requests_of("UploadPart") < 2 {
        assert!(Instant::now() < deadline, "parts went up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let daemon = first.daemon_pid().expect("the daemon runs");
    ok(Command::new("kill").args(["-9", &daemon.to_string()]).output().unwrap(), "kill -9");
    let _ = writer.kill();
    let _ = writer.wait();
    drop(first);
    let asked = server.knobs().counters().snapshot();
    assert_eq!(asked.requests_of("AbortMultipartUpload"), 0, "nothing aborted it yet: {asked:?}");
    let _second = mount(&[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.knobs().counters().snapshot().requests_of("AbortMultipartUpload") < 1 {
        assert!(Instant::now() < deadline, "the next mount aborts the dangling upload");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(stored(&server, "unfinished.bin"), None);
    let _ = std::fs::remove_dir_all(&state);
}
