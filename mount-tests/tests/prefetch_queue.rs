//! The prefetch queue on real mounts: a job writes its shuffled order to `.fetchfs/prefetch` and
//! its workers find every file fetched before they open it; `fetchfs prefetch --wait` loads a
//! directory onto the disk cache so the loader after it sends no GET; the control file works on a
//! read-only mount, is not listed, and is the owner's unless other users may use the mount.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mount_tests::data;
use mount_tests::mount::{Mount, fetchfs_binary, fresh_dir};
use mount_tests::server::{StoredObject, TestServer};

const BUCKET: &str = "queue";
const FILES: u64 = 300;
const SIZE: usize = 100 * 1024;

fn gets(server: &TestServer) -> u64 {
    server.knobs().counters().snapshot().requests_of("GetObject")
}

/// A shuffled order of the files (a fixed permutation, different from the listing's).
fn shuffled() -> Vec<u64> {
    let mut order: Vec<u64> = (0..FILES).collect();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for i in (1..order.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

fn state(mount: &Mount) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(mount.path(".fetchfs/prefetch")).expect("read the queue's state");
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, value)| (name.to_owned(), value.parse().expect("a number")))
        .collect()
}

/// Reads the files in `order` on `workers` threads, each taking the next file in turn, and checks
/// every byte.
fn read_in_order(mount: &Mount, order: &[u64], workers: usize) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&i) = order.get(at) else { return };
                    let bytes = std::fs::read(mount.path(&format!("d/f{i:05}"))).expect("read a file");
                    assert!(bytes == data::content(i, SIZE), "exact bytes of f{i:05}");
                }
            });
        }
    });
}

#[test]
fn a_shuffled_epoch_finds_its_files_fetched_when_the_order_is_written_first() {
    let server = TestServer::with_files(BUCKET, "d", FILES, SIZE);
    server.knobs().set_first_byte_delay(Duration::from_millis(10));
    let mount = Mount::of(&server, BUCKET, &["--read-only"]);
    let order = shuffled();
    let mut control = std::fs::OpenOptions::new().append(true).open(mount.path(".fetchfs/prefetch")).unwrap();
    for i in &order {
        writeln!(control, "{}", mount.path(&format!("d/f{i:05}")).display()).unwrap();
    }
    drop(control);
    let started = Instant::now();
    read_in_order(&mount, &order, 8);
    let seconds = started.elapsed().as_secs_f64();
    let now = state(&mount);
    assert_eq!(now["queued"], FILES, "{now:?}");
    // Without the queue no file is fetched before its open. With it, eight workers on a loaded
    // machine can still pass the queue's fetches now and then (those files are skipped and read
    // as usual): most, not all, are hits.
    assert!(now["hit"] >= FILES / 2, "files were fetched before their open: {now:?}");
    assert_eq!(gets(&server), FILES, "one GET per file, none twice: {now:?}");
    // Each of 300 opens waiting its own 10 ms round trip on 8 workers takes at least 0.375 s.
    eprintln!("300 shuffled files on 8 workers: {seconds:.2} s, {now:?}");
    assert!(
        std::fs::write(mount.path("d/new"), b"x").is_err_and(|e| e.raw_os_error() == Some(libc::EROFS)),
        "the mount stays read-only for data"
    );
}

#[test]
fn fetchfs_prefetch_wait_loads_a_directory_onto_disk_and_the_loader_sends_no_get() {
    let server = TestServer::with_files(BUCKET, "d", FILES, SIZE);
    let cache = fresh_dir("queue-disk-cache");
    let mount = Mount::of(&server, BUCKET, &["--disk-cache", cache.to_str().unwrap()]);
    let out = Command::new(fetchfs_binary()).arg("prefetch").arg("--wait").arg(mount.path("d")).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("{FILES} files ready")) && said.contains(&format!("fetched {FILES} (")), "{said}");
    let loaded = gets(&server);
    assert_eq!(loaded, FILES);
    // Asked again, everything is on disk: said so, with no rate of nothing fetched.
    let out = Command::new(fetchfs_binary()).arg("prefetch").arg("--wait").arg(mount.path("d")).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("{FILES} files ready")) && said.contains(&format!("{FILES} held already")),
        "{said}"
    );
    assert!(!said.contains("MB/s"), "{said}");
    assert_eq!(gets(&server), loaded);
    read_in_order(&mount, &shuffled(), 8);
    assert_eq!(gets(&server), loaded, "every file came from disk");
    drop(mount);
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn the_control_directory_is_hidden_and_bad_lines_are_counted() {
    let server = TestServer::with_files(BUCKET, "d", 3, 10);
    server.storage().put(BUCKET, ".fetchfs/planted", StoredObject::new(bytes::Bytes::from_static(b"x"), None)).unwrap();
    let mount = Mount::of(&server, BUCKET, &[]);
    let root: Vec<String> =
        std::fs::read_dir(mount.path("")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(root, ["d"], "neither the control directory nor the bucket's keys under it are listed");
    assert!(!mount.path(".fetchfs/planted").exists());
    std::fs::write(mount.path(".fetchfs/prefetch"), "/etc/passwd\nd\nd/absent\nd/f00001\n").expect("never an error");
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&mount)["fetched"] < 1 || state(&mount)["bad"] < 3 {
        assert!(Instant::now() < deadline, "{:?}", state(&mount));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new(fetchfs_binary()).arg("prefetch").arg("/etc").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in a fetchfs mount"), "{out:?}");
    // A list of absolute paths, run from outside the mount: the mount is the one they are in.
    let list = fresh_dir("queue-list").join("files.txt");
    std::fs::write(&list, format!("{}\n", mount.path("d/f00002").display())).unwrap();
    let out = Command::new(fetchfs_binary())
        .args(["prefetch", "--wait", "--from"])
        .arg(&list)
        .current_dir("/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 file ready"), "{out:?}");
    let _ = std::fs::remove_dir_all(list.parent().unwrap());
}

#[test]
fn only_the_owner_queues_unless_others_may_use_the_mount() {
    let server = TestServer::with_files(BUCKET, "d", 3, 10);
    let as_nobody = |mount: &Mount| {
        let script = format!("echo d/f00000 >> {}", mount.path(".fetchfs/prefetch").display());
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", &script])
            .output()
            .expect("run setpriv")
    };
    let private = Mount::of(&server, BUCKET, &[]);
    assert!(!as_nobody(&private).status.success(), "another user cannot reach the mount");
    drop(private);
    let shared = Mount::of(&server, BUCKET, &["--allow-other", "--file-mode", "0600"]);
    let out = as_nobody(&shared);
    assert!(out.status.success(), "with --allow-other anyone may write the control file: {out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&shared)["bad"] < 1 {
        assert!(Instant::now() < deadline, "{:?}", state(&shared));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(state(&shared)["queued"], 0, "but not a file the modes keep from them");
    assert_eq!(gets(&server), 0);
    assert!(Path::new(&shared.path(".fetchfs")).is_dir());
}
