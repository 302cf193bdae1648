//! The seams between capabilities, tried as a careless or hostile user of a shared machine would,
//! one after another on one mount: the daemon keeps serving exact bytes, refuses each with a clear
//! errno and a log line, and never panics (every mount's log is checked for a panic when it drops).

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mount_tests::data;
use mount_tests::mount::{Mount, fetchfs_command, fresh_dir};
use mount_tests::server::{StoredObject, TestServer};

const BUCKET: &str = "seams";

fn put(server: &TestServer, key: &str, data: Bytes) {
    server.storage().put(BUCKET, key, StoredObject::new(data, None)).expect("storage");
}

fn stored(server: &TestServer, key: &str) -> Option<Bytes> {
    server.storage().get(BUCKET, key).expect("storage").map(|o| o.data)
}

/// The queue's state, as `cat .fetchfs/prefetch` shows it.
fn queue_state(mount: &Mount, name: &str) -> u64 {
    let text = std::fs::read_to_string(mount.path(".fetchfs/prefetch")).expect("read the control file");
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok()).unwrap_or(u64::MAX)
}

fn errno_of(result: std::io::Result<()>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

#[test]
fn hostile_and_careless_inputs_are_refused_one_after_another_and_the_mount_serves_on() {
    let server = TestServer::with_bucket(BUCKET);
    let content = data::content(7, 3 << 20);
    put(&server, "data/a.bin", content.clone());
    put(&server, "data/b.bin", data::content(8, 100_000));
    put(&server, "e/nonzero/", Bytes::from_static(b"bytes"));
    put(&server, ".fetchfs", Bytes::from_static(b"an object named like the control directory"));
    put(&server, ".fetchfs/hidden", Bytes::from_static(b"hidden"));
    let mount = Mount::of(&server, BUCKET, &["--allow-delete"]);

    // A line the SDK could not turn into a request, then a good one: the queue moves on.
    let long = format!("q/{}f\ndata/a.bin\n", "a/".repeat(17_000));
    std::fs::write(mount.path(".fetchfs/prefetch"), long).expect("the control file takes any line");
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue_state(&mount, "fetched") != 1 || queue_state(&mount, "in_flight") != 0 {
        assert!(Instant::now() < deadline, "{}", std::fs::read_to_string(mount.path(".fetchfs/prefetch")).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!((queue_state(&mount, "bad"), queue_state(&mount, "pending")), (1, 0));

    // `.fetchfs` at the root is the control directory, whatever the bucket holds.
    let root: Vec<String> =
        std::fs::read_dir(&mount.dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!root.iter().any(|n| n == ".fetchfs"), "not listed: {root:?}");
    assert!(std::fs::metadata(mount.path(".fetchfs")).unwrap().is_dir());
    let away = std::fs::rename(mount.path(".fetchfs"), mount.path("exposed"));
    assert_eq!(errno_of(away), Some(libc::EPERM), "renamed away");
    std::fs::create_dir(mount.path("mine")).unwrap();
    std::fs::write(mount.path("mine/f"), b"x").unwrap();
    let onto = errno_of(std::fs::rename(mount.path("mine"), mount.path(".fetchfs")));
    assert!(matches!(onto, Some(libc::EPERM | libc::EEXIST | libc::ENOTEMPTY)), "{onto:?}");
    let into = std::fs::rename(mount.path("mine/f"), mount.path(".fetchfs/f"));
    assert_eq!(errno_of(into), Some(libc::EPERM), "moved into it");
    let removed = errno_of(std::fs::remove_dir(mount.path(".fetchfs")));
    assert!(matches!(removed, Some(libc::EPERM | libc::ENOTEMPTY)), "{removed:?}");
    assert!(std::fs::metadata(mount.path(".fetchfs/prefetch")).is_ok(), "the control file stays");
    assert_eq!(stored(&server, "mine/f"), Some(Bytes::from_static(b"x")));
    assert_eq!(stored(&server, ".fetchfs/hidden"), Some(Bytes::from_static(b"hidden")));

    // rmdir deletes only a zero-byte marker, never an object with bytes.
    assert_eq!(errno_of(std::fs::remove_dir(mount.path("e/nonzero"))), Some(libc::ENOTEMPTY));
    assert_eq!(stored(&server, "e/nonzero/"), Some(Bytes::from_static(b"bytes")));

    // A key over S3's 1024 bytes is ENAMETOOLONG, before any request.
    let mut deep = mount.dir.clone();
    for level in 0..5 {
        deep.push(format!("{level}{}", "d".repeat(199)));
        std::fs::create_dir(&deep).unwrap_or_else(|e| panic!("level {level}: {e}"));
    }
    let too_long = std::fs::create_dir(deep.join("n".repeat(30)));
    assert_eq!(errno_of(too_long), Some(libc::ENAMETOOLONG));
    assert_eq!(errno_of(std::fs::write(deep.join("n".repeat(30)), b"x")), Some(libc::ENAMETOOLONG));

    // And through all of it, exact bytes.
    assert!(std::fs::read(mount.path("data/a.bin")).unwrap() == content, "data/a.bin");
    let log = std::fs::read_to_string(&mount.log).unwrap();
    assert!(log.contains("is its control directory"), "the refusals are named in the log");
    assert!(log.contains("ENAMETOOLONG") || log.contains("longer than"), "{log}");
}

#[test]
fn a_log_file_planted_as_a_link_is_refused() {
    let server = TestServer::with_bucket(BUCKET);
    let dir = fresh_dir("seams-log");
    let target = dir.join("elsewhere");
    let link = dir.join("fetchfs.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mountpoint = dir.join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let credentials = server.credentials().cloned().unwrap_or_default();
    let out = fetchfs_command(Some(&credentials))
        .arg("mount")
        .arg(BUCKET)
        .arg(&mountpoint)
        .args(["--endpoint-url", &server.endpoint_url(), "--force-path-style", "--log-file"])
        .arg(&link)
        .output()
        .expect("run fetchfs");
    let _ = Command::new("umount").arg(&mountpoint).output();
    assert!(!out.status.success(), "mounted with a planted log link");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("symbolic link"), "{said}");
    assert!(!target.exists(), "nothing written through the link");
    let _ = std::fs::remove_dir_all(&dir);
}
