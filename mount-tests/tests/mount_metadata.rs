//! Metadata at scale, counted at the test server: what a listing saves, negative answers, and
//! next-file prefetch, on real kernel mounts read with standard tools.

use std::time::{Duration, Instant};

use mount_tests::data;
use mount_tests::mount::Mount;
use mount_tests::server::{StoredObject, TestServer};

const BUCKET: &str = "meta";

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ls_of_ten_thousand_files_costs_ten_list_pages_and_cat_after_it_no_head() {
    let server = TestServer::with_files(BUCKET, "many", 10_000, 64);
    let mount = Mount::of(&server, BUCKET, &["--metadata-ttl", "300"]);
    let counters = server.knobs().counters();
    counters.reset();
    let listing = ok(mount.sh("ls -l many"), "ls -l");
    assert_eq!(listing.lines().filter(|l| l.starts_with('-')).count(), 10_000);
    assert!(listing.lines().filter(|l| l.starts_with('-')).all(|l| l.split_whitespace().nth(4) == Some("64")));
    let after_ls = counters.snapshot();
    // The directory's own lookup is a HEAD and a one-key LIST; the listing is 10 pages of 1000.
    assert!(after_ls.requests_of("ListObjectsV2") <= 11, "{after_ls:?}");
    assert!(after_ls.requests_of("HeadObject") <= 1, "{after_ls:?}");
    assert_eq!(after_ls.requests_of("GetObject"), 0);

    counters.reset();
    let out = mount.sh("for i in $(seq -f %05g 0 999); do cat many/f$i; done");
    assert!(out.status.success(), "cat of 1000 files: {}", String::from_utf8_lossy(&out.stderr));
    let expected: Vec<u8> = (0..1000).flat_map(|i| data::content(i, 64)).collect();
    assert!(out.stdout == expected, "the 1000 files' bytes, in order");
    let after_cat = counters.snapshot();
    assert_eq!(after_cat.requests_of("HeadObject"), 0, "{after_cat:?}");
    assert_eq!(after_cat.requests_of("ListObjectsV2"), 0, "{after_cat:?}");
    // At most one GET per file read, plus the files after the thousandth that were fetched ahead
    // (next-file prefetch reaches at most 128 files past the last one opened, after a long run).
    assert!(after_cat.requests_of("GetObject") <= 1000 + 128, "{after_cat:?}");
}

#[test]
fn files_opened_by_name_from_a_list_cost_their_get_once_a_few_were_looked_up() {
    let server = TestServer::with_files(BUCKET, "chunks", 1000, 64);
    let mount = Mount::of(&server, BUCKET, &["--metadata-ttl", "300"]);
    let list = std::env::temp_dir().join(format!("fetchfs-named-{}", std::process::id()));
    // The order a file of paths gives (here backwards), the directory never listed by the reader.
    let names: String = (0..1000).rev().map(|i| format!("chunks/f{i:05}\n")).collect();
    std::fs::write(&list, names).expect("write the list");
    let counters = server.knobs().counters();
    counters.reset();
    let out = mount.sh(&format!("xargs -a {} cat", list.display()));
    let _ = std::fs::remove_file(&list);
    assert!(out.status.success(), "xargs cat: {}", String::from_utf8_lossy(&out.stderr));
    let expected: Vec<u8> = (0..1000).rev().flat_map(|i| data::content(i, 64)).collect();
    assert!(out.stdout == expected, "the 1000 files' bytes, in the list's order");
    let asked = counters.snapshot();
    // A few lookups ask S3 by name (a HEAD and a LIST each) while the directory's listing (one
    // page) is made; every later name is answered by it.
    assert!(asked.requests_of("HeadObject") < 100, "{asked:?}");
    assert!(asked.requests_of("ListObjectsV2") < 100, "{asked:?}");
    assert!(asked.requests_of("GetObject") <= 1000 + 128, "{asked:?}");
}

#[test]
fn files_read_in_listing_order_are_fetched_before_they_are_opened() {
    let server = TestServer::with_files(BUCKET, "seq", 200, 100 * 1024);
    let mount = Mount::of(&server, BUCKET, &[]);
    ok(mount.sh("ls seq > /dev/null"), "ls");
    let counters = server.knobs().counters();
    counters.reset();
    ok(mount.sh("for i in $(seq -f %05g 0 9); do cat seq/f$i > /dev/null; done"), "cat of the first 10");
    // The next files are fetched in the background: wait for more GETs than files read.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters.snapshot().requests_of("GetObject") <= 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let ahead = counters.snapshot().requests_of("GetObject");
    assert!(ahead > 10, "files after the tenth were fetched ahead ({ahead} GETs)");
    // The rest read in order: still one GET per file, and the bytes are right.
    for i in 10..200u64 {
        let got = std::fs::read(mount.path(&format!("seq/f{i:05}"))).expect("read");
        assert_eq!(data::first_mismatch(i, 0, &got), None, "file {i}");
        assert_eq!(got.len(), 100 * 1024);
    }
    assert!(counters.snapshot().requests_of("GetObject") <= 200, "{:?}", counters.snapshot());
}

#[test]
fn missing_names_are_remembered_for_the_negative_ttl_only() {
    let server = TestServer::with_files(BUCKET, "d", 1, 10);
    let mount = Mount::of(&server, BUCKET, &["--negative-metadata-ttl", "3"]);
    let counters = server.knobs().counters();
    counters.reset();
    let late = mount.path("late-arrival");
    assert!(!late.exists());
    assert!(!late.exists());
    assert_eq!(counters.snapshot().requests_of("HeadObject"), 1, "the second stat was answered from the cache");
    server.storage().put(BUCKET, "late-arrival", StoredObject::new(data::content(5, 10), None)).unwrap();
    let asked_at = Instant::now();
    assert!(!late.exists(), "still missing within the negative TTL");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !late.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(late.exists(), "found once the negative TTL passed");
    assert!(asked_at.elapsed() >= Duration::from_secs(1));
}

#[test]
fn a_metadata_ttl_is_seconds_or_indefinite() {
    let server = TestServer::with_files(BUCKET, "d", 3, 10);
    let kept = Mount::of(&server, BUCKET, &["--metadata-ttl", "indefinite"]);
    let refreshed = Mount::of(&server, BUCKET, &["--metadata-ttl", "1"]);
    assert_eq!(ok(kept.sh("ls d"), "ls").lines().count(), 3);
    assert_eq!(ok(refreshed.sh("ls d"), "ls").lines().count(), 3);
    server.storage().put(BUCKET, "d/added", StoredObject::new(data::content(5, 10), None)).unwrap();
    // Past the default TTL (5 s) and the short one, a listing is taken again unless it is kept.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(ok(refreshed.sh("ls d"), "ls").lines().count(), 4, "a 1 s TTL lists again");
    assert_eq!(ok(kept.sh("ls d"), "ls").lines().count(), 3, "an indefinite TTL keeps the first listing");
    let out = mount_tests::mount::fetchfs_command(None)
        .args(["mount", "b-u-c-k-e-t", "/nonexistent", "--metadata-ttl", "soon"])
        .output()
        .expect("run fetchfs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metadata-ttl \"soon\""), "{out:?}");
}
