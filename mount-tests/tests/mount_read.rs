//! Real kernel mounts of the built fetchfs against a real S3-compatible server, read with standard
//! tools; every byte compared with what was uploaded.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mount_tests::data;
use mount_tests::mount::{Mount, fetchfs_command, fresh_dir, is_mounted};
use mount_tests::server::{BodyFault, ServerConfig, StoredObject, TestServer};

const BUCKET: &str = "dataset";
const MIB: usize = 1024 * 1024;

/// The sample bucket: (key, seed, size). Sizes probe block (1 MiB) and default part (4 MiB) edges.
fn layout() -> Vec<(String, u64, usize)> {
    let mut objects: Vec<(String, u64, usize)> = vec![
        ("empty".into(), 1, 0),
        ("one-byte".into(), 2, 1),
        ("nested/deeper/deepest/leaf.bin".into(), 3, 5000),
        ("nested/sibling.txt".into(), 4, 123),
        ("block-exact".into(), 5, MIB),
        ("block-plus-one".into(), 6, MIB + 1),
        ("part-exact".into(), 7, 4 * MIB),
        ("part-plus-one".into(), 8, 4 * MIB + 1),
        ("two-parts-plus-one".into(), 16, 8 * MIB + 1),
        ("with space.txt".into(), 10, 77),
        ("ünïcødé 文件.txt".into(), 11, 88),
        ("plus+sign".into(), 12, 99),
        ("percent%25literal".into(), 13, 111),
        ("both".into(), 14, 10),
        ("both/inside".into(), 15, 20),
    ];
    // More than one listing page (1000 keys), so readdir follows continuation tokens.
    for i in 0..1200 {
        objects.push((format!("small/f{i:04}.json"), 2000 + i, 100 + (i as usize % 50)));
    }
    objects
}

fn server_with_layout() -> TestServer {
    let server = TestServer::start(ServerConfig::default()).expect("start server");
    let storage = server.storage();
    storage.create_bucket(BUCKET).unwrap();
    for (key, seed, size) in layout() {
        storage.put(BUCKET, &key, StoredObject::new(data::content(seed, size), None)).unwrap();
    }
    // A directory marker, as S3 consoles make them: an empty directory.
    storage.put(BUCKET, "marker-dir/", StoredObject::new(Bytes::new(), None)).unwrap();
    // Keys that cannot be file names are skipped, never fatal.
    for odd in ["bad//double-slash", "dots/../escape", "dots/./here"] {
        storage.put(BUCKET, odd, StoredObject::new(Bytes::from_static(b"x"), None)).unwrap();
    }
    server
}

/// The 1 GiB object, added only where a test reads it (generating it costs seconds).
const LARGE: (&str, u64, usize) = ("large.bin", 9, 1024 * MIB);

fn add_large(server: &TestServer) {
    let (key, seed, size) = LARGE;
    server.storage().put(BUCKET, key, StoredObject::new(data::content(seed, size), None)).unwrap();
}

fn expected(key: &str) -> Bytes {
    if key == LARGE.0 {
        return data::content(LARGE.1, LARGE.2);
    }
    let (_, seed, size) = layout().into_iter().find(|(k, ..)| k == key).expect("key in layout");
    data::content(seed, size)
}

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn standard_tools_read_exact_bytes() {
    let server = server_with_layout();
    add_large(&server);
    let mount = Mount::of(&server, BUCKET, &[]);

    // ls -la: names, sizes, kinds; the dual name shows the directory.
    let listing = ok(mount.sh("ls -la"), "ls -la");
    for name in ["empty", "nested", "with space.txt", "ünïcødé 文件.txt", "plus+sign", "percent%25literal", "small"]
    {
        assert!(listing.contains(name), "ls -la lacks {name:?}:\n{listing}");
    }
    assert!(listing.lines().any(|l| l.starts_with('d') && l.ends_with(" both")), "both is a directory:\n{listing}");
    assert!(listing.lines().any(|l| l.starts_with('d') && l.ends_with(" marker-dir")));
    // Keys that cannot be file names live one level down; their directories list nothing.
    for dir in ["bad", "dots"] {
        assert!(listing.lines().any(|l| l.starts_with('d') && l.ends_with(&format!(" {dir}"))), "{dir}:\n{listing}");
        assert_eq!(
            ok(mount.sh(&format!("ls -A {dir}")), "ls of a directory of unusable keys"),
            "",
            "{dir} lists nothing"
        );
    }
    assert_eq!(ok(mount.sh("ls -A marker-dir"), "ls marker-dir"), "", "a marker is an empty directory");

    // find and stat agree with the layout.
    let found = ok(mount.sh("find . -type f | wc -l"), "find");
    let files = layout().iter().filter(|(k, ..)| k != "both").count() + 1; // + large.bin
    assert_eq!(found.trim(), files.to_string(), "find sees every file (the file shadowed by a directory excepted)");
    for (key, _, size) in layout().iter().filter(|(k, ..)| !k.starts_with("small/") && k != "both") {
        let meta = std::fs::metadata(mount.path(key)).unwrap_or_else(|e| panic!("stat {key}: {e}"));
        assert_eq!(meta.len(), *size as u64, "size of {key}");
    }

    // cat and python reads give exact bytes.
    for key in [
        "empty",
        "one-byte",
        "block-exact",
        "block-plus-one",
        "part-plus-one",
        "with space.txt",
        "ünïcødé 文件.txt",
        "both/inside",
    ] {
        let out = Command::new("cat").arg(mount.path(key)).output().unwrap();
        assert!(out.status.success());
        assert!(out.stdout == expected(key), "cat {key} differs");
    }

    // dd and sha256sum over the large file, compared with a local copy.
    let local = fresh_dir("expected");
    std::fs::write(local.join("large.bin"), expected("large.bin")).unwrap();
    let dd = mount.sh(&format!("dd if=large.bin of={}/dd.bin bs=1M status=none", local.display()));
    ok(dd, "dd");
    assert!(std::fs::read(local.join("dd.bin")).unwrap() == expected("large.bin"), "dd copy differs");
    let theirs = ok(mount.sh("sha256sum large.bin part-exact"), "sha256sum mount");
    std::fs::write(local.join("part-exact"), expected("part-exact")).unwrap();
    let ours = ok(
        Command::new("sh").arg("-c").arg("sha256sum large.bin part-exact").current_dir(&local).output().unwrap(),
        "sha256sum local",
    );
    assert_eq!(theirs, ours);

    // cp -r and tar round trips of a directory tree.
    ok(mount.sh(&format!("cp -r nested small {}/", local.display())), "cp -r");
    assert!(
        std::fs::read(local.join("nested/deeper/deepest/leaf.bin")).unwrap()
            == expected("nested/deeper/deepest/leaf.bin")
    );
    for i in [0usize, 499, 999, 1000, 1199] {
        let key = format!("small/f{i:04}.json");
        assert!(std::fs::read(local.join(&key)).unwrap() == expected(&key), "{key}");
    }
    ok(mount.sh(&format!("tar cf {}/t.tar nested", local.display())), "tar c");
    let untar = local.join("untar");
    std::fs::create_dir(&untar).unwrap();
    ok(Command::new("tar").arg("xf").arg(local.join("t.tar")).current_dir(&untar).output().unwrap(), "tar x");
    assert!(std::fs::read(untar.join("nested/sibling.txt")).unwrap() == expected("nested/sibling.txt"));

    // python3 seek/read and mmap of the large file.
    let script = r#"
import mmap, sys
path, offsets = sys.argv[1], [int(o) for o in sys.argv[2:]]
with open(path, 'rb') as f:
    out = []
    for o in offsets:
        f.seek(o)
        out.append(f.read(16).hex())
    with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        out.extend(m[o:o + 16].hex() for o in offsets)
        out.append(str(len(m)))
print(' '.join(out))
"#;
    let offsets = [0usize, 1, 4095, 1048575, 8388608, 100000003, 1073741800];
    let mut python = Command::new("python3");
    python.arg("-c").arg(script).arg(mount.path("large.bin")).args(offsets.map(|o| o.to_string()));
    let py = ok(python.output().unwrap(), "python3");
    let large = expected("large.bin");
    let slice_hex = |o: usize| hex::encode(&large[o..(o + 16).min(large.len())]);
    let want: Vec<String> = offsets
        .iter()
        .map(|&o| slice_hex(o))
        .chain(offsets.iter().map(|&o| slice_hex(o)))
        .chain([large.len().to_string()])
        .collect();
    assert_eq!(py.split_whitespace().collect::<Vec<_>>(), want);
    std::fs::remove_dir_all(&local).unwrap();
}

#[test]
fn every_write_path_answers_erofs_on_a_read_only_mount() {
    let server = server_with_layout();
    let mount = Mount::of(&server, BUCKET, &["--read-only"]);
    for script in [
        "echo x > one-byte",
        "echo x >> one-byte",
        "touch new-file",
        "mkdir new-dir",
        "rm one-byte",
        "rmdir marker-dir",
        "mv one-byte renamed",
        "chmod 600 one-byte",
        "ln -s one-byte link",
    ] {
        let out = mount.sh(script);
        assert!(!out.status.success(), "{script} succeeded on a read-only mount");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Read-only file system"), "{script}: {stderr}");
    }
    assert!(std::fs::read(mount.path("one-byte")).unwrap() == expected("one-byte"), "nothing changed");
}

/// Runs a mount that must fail: one clear line, exit status 1, quickly, and nothing left mounted.
fn refused(args: &[&str], credentials: Option<&mount_tests::server::Credentials>, dir: &Path) -> String {
    let start = Instant::now();
    let out = fetchfs_command(credentials).arg("mount").args(args).output().expect("run fetchfs");
    assert!(start.elapsed() < Duration::from_secs(20), "{args:?} took {:?}", start.elapsed());
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    assert!(!is_mounted(dir), "{args:?} left a mount behind");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?} printed more than one line:\n{stderr}");
    assert!(lines[0].starts_with("fetchfs: "), "{stderr}");
    stderr
}

#[test]
fn bad_input_gives_one_clear_line_and_exit_1() {
    let server = server_with_layout();
    let endpoint = server.endpoint_url();
    let keys = server.credentials().cloned().unwrap();
    let dir = fresh_dir("refused");
    let d = dir.to_str().unwrap();
    let common = ["--endpoint-url", endpoint.as_str(), "--force-path-style"];
    fn with<'a>(first: &[&'a str], common: &[&'a str]) -> Vec<&'a str> {
        [first, common].concat()
    }

    let msg = refused(&with(&["Not_A_Bucket", d], &common), Some(&keys), &dir);
    assert!(msg.contains("invalid bucket name"), "{msg}");
    let msg = refused(&with(&["missing-bucket", d], &common), Some(&keys), &dir);
    assert!(msg.contains("missing-bucket does not exist"), "{msg}");
    let wrong = mount_tests::server::Credentials { secret_key: "wrong".into(), ..keys.clone() };
    let msg = refused(&with(&[BUCKET, d], &common), Some(&wrong), &dir);
    assert!(msg.contains("secret key was refused") && msg.contains("AWS_SECRET_ACCESS_KEY"), "{msg}");
    let msg = refused(&with(&[BUCKET, d], &common), None, &dir);
    assert!(msg.starts_with("fetchfs: no usable AWS credentials: set AWS_ACCESS_KEY_ID"), "{msg}");
    assert!(msg.len() < 400, "the advice, and the chain only to its first cause: {msg}");
    let schemeless = endpoint.trim_start_matches("http://").to_owned();
    let msg = refused(&[BUCKET, d, "--endpoint-url", schemeless.as_str()], Some(&keys), &dir);
    assert!(msg.contains("has no scheme") && msg.contains(&format!("http://{schemeless}")), "{msg}");
    let unreachable = ["--endpoint-url", "http://127.0.0.1:9", "--force-path-style"];
    let msg = refused(&[&[BUCKET, d][..], &unreachable[..]].concat(), Some(&keys), &dir);
    assert!(msg.contains("cannot reach http://127.0.0.1:9"), "{msg}");
    let missing = dir.join("does-not-exist");
    let msg = refused(&with(&[BUCKET, missing.to_str().unwrap()], &common), Some(&keys), &missing);
    assert!(msg.contains("does not exist"), "{msg}");
    std::fs::write(dir.join("occupant"), b"x").unwrap();
    let msg = refused(&with(&[BUCKET, d], &common), Some(&keys), &dir);
    assert!(msg.contains("is not empty"), "{msg}");
    std::fs::remove_file(dir.join("occupant")).unwrap();
    // Mounted twice at one place: the second says the first is there.
    let first = Mount::new(&endpoint, &keys, BUCKET, &[]).unwrap_or_else(|e| panic!("{e}"));
    let out = fetchfs_command(Some(&keys)).arg("mount").arg(BUCKET).arg(&first.dir).args(common).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("is already a fetchfs mount (of s3://"), "{said}");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let shown = mounts.lines().find(|l| l.split(' ').nth(1) == first.dir.to_str()).unwrap_or_default();
    assert!(shown.starts_with(&format!("s3://{BUCKET}/ ")), "the source as fstab names it: {shown}");
    drop(first);
    // A mistyped prefix mounts, empty, and says which prefix was likely meant.
    let typo = Mount::new(&endpoint, &keys, &format!("s3://{BUCKET}/nestde/"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let log = std::fs::read_to_string(&typo.log).unwrap();
    assert!(log.contains("holds no objects") && log.contains(&format!("did you mean s3://{BUCKET}/nested/")), "{log}");
    drop(typo);
    let msg = refused(&with(&["s3://dataset/nested/", d, "--prefix", "small"], &common), Some(&keys), &dir);
    assert!(msg.contains("prefix was given both"), "{msg}");
    for (flag, absurd, limit) in [
        ("--cache-size", "99999999999", "it must be 1 to "),
        ("--max-connections", "1000000", "it must be 1 to 1024 connections"),
        ("--read-timeout", "18446744073709551615", "it must be 1 to 3600 seconds"),
        ("--part-size", "0", "it must be 1 to 5120 MiB"),
    ] {
        let msg = refused(&with(&[BUCKET, d, flag, absurd], &common), Some(&keys), &dir);
        assert!(msg.contains(&format!("{flag} {absurd} is out of range: {limit}")), "{msg}");
    }
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn ownership_and_modes_come_from_the_flags() {
    use std::os::unix::fs::MetadataExt;
    let server = server_with_layout();
    let flags = ["--uid", "1234", "--gid", "4321", "--file-mode", "0640", "--dir-mode", "0750"];
    let mount = Mount::of(&server, BUCKET, &flags);
    let file = std::fs::metadata(mount.path("nested/sibling.txt")).unwrap();
    assert_eq!((file.uid(), file.gid(), file.mode() & 0o7777), (1234, 4321, 0o640));
    assert!(file.is_file());
    let dir = std::fs::metadata(mount.path("nested")).unwrap();
    assert_eq!((dir.uid(), dir.gid(), dir.mode() & 0o7777), (1234, 4321, 0o750));
    assert!(dir.is_dir());
}

#[test]
fn prefix_mounts_show_only_that_subtree() {
    let server = server_with_layout();
    let mount = Mount::of(&server, "s3://dataset/nested/", &[]);
    let names = ok(mount.sh("ls -A"), "ls");
    assert_eq!(names.split_whitespace().collect::<Vec<_>>(), ["deeper", "sibling.txt"]);
    assert!(
        std::fs::read(mount.path("deeper/deepest/leaf.bin")).unwrap() == expected("nested/deeper/deepest/leaf.bin")
    );
}

#[test]
fn a_stalled_read_does_not_block_another_reader() {
    let server = server_with_layout();
    let mount = Mount::of(&server, BUCKET, &[]);
    let stall = Duration::from_secs(6);
    let counters = server.knobs().counters();
    counters.reset();
    server.knobs().set_body_fault(Some(BodyFault::Stall(stall)));
    let stalled_path = mount.path("part-exact");
    let start = Instant::now();
    let stalled = std::thread::spawn(move || {
        let bytes = std::fs::read(stalled_path).expect("stalled read completes");
        (bytes, start.elapsed())
    });
    // The stall applies to GETs answered while it is set: clear it once the stalled file's own
    // GET has arrived, however long a loaded machine takes to send it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while counters.snapshot().requests_of("GetObject") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.knobs().set_body_fault(None);
    let other = std::fs::read(mount.path("block-plus-one")).expect("other read");
    let other_done = start.elapsed();
    assert!(other == expected("block-plus-one"));
    let (bytes, stalled_done) = stalled.join().unwrap();
    assert!(bytes == expected("part-exact"));
    // A lower bound with a margin: the stall is timed by the server, from when the GET arrived.
    assert!(stalled_done >= stall * 3 / 4, "the stall lasted {stalled_done:?}");
    assert!(
        other_done < stalled_done,
        "the other reader finished at {other_done:?}, the stalled one at {stalled_done:?}"
    );
}

#[test]
fn the_first_bytes_of_a_large_file_do_not_wait_for_a_whole_block() {
    use std::io::Read;
    let server = server_with_layout();
    let mount = Mount::of(&server, BUCKET, &[]);
    // At 1 MB/s per connection a whole 1 MiB block takes over a second to arrive.
    server.knobs().set_bandwidth(Some(1_000_000));
    let start = Instant::now();
    let mut file = std::fs::File::open(mount.path("two-parts-plus-one")).expect("open");
    let mut first = [0u8; 100];
    file.read_exact(&mut first).expect("first bytes");
    let took = start.elapsed();
    server.knobs().set_bandwidth(None);
    let want = expected("two-parts-plus-one");
    assert!(first[..] == want[..100]);
    assert!(took < Duration::from_millis(500), "the first 100 bytes took {took:?}");
    let mut rest = Vec::new();
    file.read_to_end(&mut rest).expect("the rest");
    assert!(rest[..] == want[100..], "the rest of the file, brought by readahead, is exact");
}

/// A foreground daemon mounted at a fresh directory, once the mount has appeared.
fn foreground_daemon(server: &TestServer) -> (std::process::Child, std::path::PathBuf) {
    let dir = fresh_dir("fg");
    let keys = server.credentials().cloned().unwrap();
    let child = fetchfs_command(Some(&keys))
        .args(["mount", BUCKET])
        .arg(&dir)
        .args(["--endpoint-url", &server.endpoint_url(), "--force-path-style", "--foreground"])
        .spawn()
        .expect("spawn fetchfs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_mounted(&dir) {
        assert!(Instant::now() < deadline, "mount did not appear");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, dir)
}

fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill with a pid we spawned.
    unsafe { libc::kill(child.id() as i32, signal) };
}

/// Waits up to `limit` for the child to exit; its status, if it did.
fn exit_within(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for fetchfs") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_unmounts_and_exits_zero() {
    let server = server_with_layout();
    let (mut child, dir) = foreground_daemon(&server);
    assert!(std::fs::read(dir.join("one-byte")).unwrap() == expected("one-byte"));
    signal(&child, libc::SIGTERM);
    let status = exit_within(&mut child, Duration::from_secs(10)).expect("the daemon exits");
    assert_eq!(status.code(), Some(0));
    assert!(!is_mounted(&dir), "SIGTERM left the mount behind");
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn sigterm_with_a_file_open_unmounts_at_once_and_exits_when_it_is_closed() {
    use std::io::Read;
    let server = server_with_layout();
    let (mut child, dir) = foreground_daemon(&server);
    let mut open = std::fs::File::open(dir.join("two-parts-plus-one")).expect("open");
    let mut first = vec![0u8; MIB];
    open.read_exact(&mut first).expect("read");
    signal(&child, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while is_mounted(&dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_mounted(&dir), "the mount is gone within 2 s of SIGTERM, with a file open");
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).expect("the open file is still served");
    first.extend_from_slice(&rest);
    assert!(first == expected("two-parts-plus-one"), "with exact bytes");
    assert!(child.try_wait().expect("wait").is_none(), "the daemon serves the open file");
    drop(open);
    let status = exit_within(&mut child, Duration::from_secs(2)).expect("the daemon exits within 2 s of the close");
    assert_eq!(status.code(), Some(0));
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn a_second_signal_ends_the_daemon_at_once_while_a_file_is_open() {
    let server = server_with_layout();
    let (mut child, dir) = foreground_daemon(&server);
    let open = std::fs::File::open(dir.join("one-byte")).expect("open");
    signal(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().expect("wait").is_none(), "one signal waits for the open file");
    signal(&child, libc::SIGINT);
    let status = exit_within(&mut child, Duration::from_secs(5)).expect("a second signal ends it");
    assert_eq!(status.code(), Some(0));
    drop(open);
    assert!(!is_mounted(&dir));
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn external_umount_ends_the_daemon() {
    let server = server_with_layout();
    let mount = Mount::of(&server, BUCKET, &[]);
    let pids = |dir: &Path| {
        let out =
            Command::new("pgrep").arg("-f").arg(format!("fetchfs mount {BUCKET} {}", dir.display())).output().unwrap();
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(pids(&mount.dir).len(), 1, "one daemon serves the mount");
    assert!(Command::new("umount").arg(&mount.dir).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids(&mount.dir).is_empty() {
        assert!(Instant::now() < deadline, "daemon still running after umount");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn https_endpoints_work_with_a_custom_ca_bundle() {
    let certs = mount_tests::server::tls::generate().expect("certificates");
    let server = TestServer::start(ServerConfig { tls: Some(certs.server_config), ..Default::default() }).unwrap();
    assert!(server.endpoint_url().starts_with("https://"));
    server.storage().create_bucket(BUCKET).unwrap();
    for (key, seed, size) in [("hello.txt", 1, 13), ("dir/data.bin", 2, 3 * MIB + 7), ("dir/big.bin", 3, 20 * MIB)] {
        server.storage().put(BUCKET, key, StoredObject::new(data::content(seed, size), None)).unwrap();
    }
    let ca_dir = fresh_dir("ca");
    let ca = ca_dir.join("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).unwrap();

    let dir = fresh_dir("untrusted");
    let endpoint = server.endpoint_url();
    let keys = server.credentials().cloned().unwrap();
    let args = [BUCKET, dir.to_str().unwrap(), "--endpoint-url", endpoint.as_str(), "--force-path-style"];
    let msg = refused(&args, Some(&keys), &dir);
    assert!(msg.contains("cannot reach") && msg.contains("certificate"), "{msg}");
    std::fs::remove_dir(&dir).unwrap();

    let mount = Mount::of(&server, BUCKET, &["--ca-bundle", ca.to_str().unwrap()]);
    assert_eq!(std::fs::read(mount.path("hello.txt")).unwrap(), data::content(1, 13));
    assert!(std::fs::read(mount.path("dir/data.bin")).unwrap() == data::content(2, 3 * MIB + 7));
    let dd = mount.sh("dd if=dir/big.bin bs=1M status=none | sha256sum");
    let local = fresh_dir("https-expected");
    std::fs::write(local.join("big.bin"), data::content(3, 20 * MIB)).unwrap();
    let want = Command::new("sh").arg("-c").arg("sha256sum < big.bin").current_dir(&local).output().unwrap();
    assert_eq!(ok(dd, "dd | sha256sum"), ok(want, "sha256sum"));
    drop(mount);
    std::fs::remove_dir_all(&local).unwrap();
    std::fs::remove_dir_all(&ca_dir).unwrap();
}

#[test]
fn connections_are_opened_at_mount_and_reused_by_reads() {
    let server = server_with_layout();
    server.knobs().counters().reset();
    let mount = Mount::of(&server, BUCKET, &[]);
    let at_mount = server.knobs().counters().snapshot();
    assert_eq!(at_mount.requests_of("ListObjectsV2"), 8, "the startup check runs on 8 connections at once");
    // Eight when the probes overlap; on a loaded machine one may end before the next starts and
    // hand it its connection (CI saw 2): never more than the probes need.
    assert!(at_mount.connections_opened <= 8, "{} connections opened at mount", at_mount.connections_opened);
    assert!(std::fs::read(mount.path("nested/sibling.txt")).unwrap() == expected("nested/sibling.txt"));
    let after = server.knobs().counters().snapshot();
    assert!(after.requests_of("GetObject") >= 1);
    assert_eq!(after.connections_opened, at_mount.connections_opened, "the first reads reuse those connections");
}
