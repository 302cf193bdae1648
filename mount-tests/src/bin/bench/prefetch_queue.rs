//! The prefetch queue's rows: the shuffled data loader when the job writes its order to
//! `.fetchfs/prefetch` first (timed with the reads), `fetchfs prefetch --wait` onto the disk cache
//! and the loader after it, and a queue of 100,000 names of which one epoch is read.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use mount_tests::mount::{fetchfs_binary, fresh_dir};
use mount_tests::server::TestServer;

use super::loader::Started;
use super::{Row, SMALL_FILES, on_fresh_mount, timed};

/// Names in the long queue: a hundred epochs of the small files.
const LONG_QUEUE: u64 = 100_000;

fn gets(server: &TestServer) -> u64 {
    server.knobs().counters().snapshot().requests_of("GetObject")
}

fn files_per_s(count: u64, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64()
}

pub fn rows(server: &TestServer, extra: &[&str], peak_rss: &mut u64, name: &'static str, rows: &mut Vec<Row>) {
    eprintln!("[{name}] 8 data-loader workers, shuffled, order written to .fetchfs/prefetch first ...");
    let took = on_fresh_mount(server, extra, peak_rss, |mount| {
        let order = Started::order_writer(&mount.path("small"), &mount.path(".fetchfs/prefetch"));
        let workers = Started::workers(&mount.path("small"), "shuffled");
        timed(|| {
            order.run();
            workers.run();
        })
    });
    rows.push(Row {
        profile: name,
        measure: format!("8 python3 workers, {SMALL_FILES} x 100 KiB files, shuffled, order written first"),
        value: format!("{:.0} files/s", files_per_s(SMALL_FILES, took)),
        ratio: None,
    });

    eprintln!("[{name}] fetchfs prefetch --wait onto the disk cache, then the shuffled loader ...");
    let cache = fresh_dir("bench-queue-disk-cache");
    let mut with_disk = extra.to_vec();
    with_disk.extend(["--disk-cache", cache.to_str().expect("a UTF-8 temp path")]);
    let (prefetch, loader, loader_gets) = on_fresh_mount(server, &with_disk, peak_rss, |mount| {
        let prefetch = timed(|| {
            let out = Command::new(fetchfs_binary()).args(["prefetch", "--wait"]).arg(mount.path("small")).output();
            assert!(out.as_ref().is_ok_and(|o| o.status.success()), "fetchfs prefetch: {out:?}");
        });
        let before = gets(server);
        let workers = Started::workers(&mount.path("small"), "shuffled");
        let loader = timed(|| workers.run());
        (prefetch, loader, gets(server) - before)
    });
    let _ = std::fs::remove_dir_all(&cache);
    rows.push(Row {
        profile: name,
        measure: format!(
            "fetchfs prefetch --wait of {SMALL_FILES} x 100 KiB to the disk cache / then 8 workers, shuffled"
        ),
        value: format!(
            "{:.0} files/s / {:.0} files/s, {loader_gets} GETs",
            files_per_s(SMALL_FILES, prefetch),
            files_per_s(SMALL_FILES, loader)
        ),
        ratio: None,
    });

    eprintln!("[{name}] a queue of {LONG_QUEUE} names, one epoch read ...");
    let mut rss = 0;
    let (took, fetched) = on_fresh_mount(server, extra, &mut rss, |mount| {
        let before = gets(server);
        let names: Vec<String> = (0..SMALL_FILES).map(|i| format!("small/f{i:05}.jpg\n")).collect();
        let mut control = std::fs::OpenOptions::new().append(true).open(mount.path(".fetchfs/prefetch")).expect("open");
        for epoch in 0..LONG_QUEUE / SMALL_FILES {
            // Each epoch in its own order: a rotation is enough to differ from the listing's.
            let start = (epoch * 37 % SMALL_FILES) as usize;
            let lines: String = names[start..].iter().chain(&names[..start]).map(String::as_str).collect();
            control.write_all(lines.as_bytes()).expect("write the queue");
        }
        drop(control);
        let took = timed(|| {
            let out = Command::new("sh")
                .arg("-c")
                .arg("for f in $(seq -f small/f%05g.jpg 0 999); do cat \"$f\"; done > /dev/null")
                .current_dir(&mount.dir)
                .output()
                .expect("sh");
            assert!(out.status.success(), "{out:?}");
        });
        std::thread::sleep(Duration::from_millis(500));
        (took, gets(server) - before)
    });
    *peak_rss = (*peak_rss).max(rss);
    rows.push(Row {
        profile: name,
        measure: format!("a queue of {LONG_QUEUE} names, {SMALL_FILES} of them read (serial cat)"),
        value: format!(
            "{:.0} files/s, {fetched} GETs, daemon peak RSS {} MiB",
            files_per_s(SMALL_FILES, took),
            rss / 1024
        ),
        ratio: None,
    });
}
