//! The disk cache's rows: each measure as epoch 1 (an empty cache: from the network, filling the
//! disk) and epoch 2 (after a remount: from disk, by the kernel itself for whole files), the page
//! cache dropped before each, against the same reads of the cache's own data file.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mount_tests::metrics::MetricsPort;
use mount_tests::mount::{Mount, fresh_dir};
use mount_tests::server::TestServer;

use super::{BUCKET, Row, SMALL_FILES, cpu_seconds, dd_mb_per_s, mbps, run, timed};

/// Random 256 KiB reads per thread.
const RANDOM_READS: u64 = 200;

/// Drops the kernel's page cache, so the next read comes from the disk (or the network).
fn drop_page_cache() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// `threads` readers, each doing RANDOM_READS preads of 256 KiB at offsets of its own seed, with
/// the kernel's readahead off for the file: MB/s in total. The same job for the mount and for the
/// cache's file.
fn random_reads(path: &Path, size: u64, threads: u64) -> f64 {
    const READ: u64 = 256 * 1024;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            scope.spawn(move || {
                let file = File::open(path).expect("open");
                // SAFETY: advice on a descriptor we own.
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
                let mut rng = fastrand::Rng::with_seed(thread);
                let mut buf = vec![0u8; READ as usize];
                for _ in 0..RANDOM_READS {
                    file.read_exact_at(&mut buf, rng.u64(0..(size - READ) / 4096) * 4096).expect("pread");
                }
            });
        }
    });
    (threads * RANDOM_READS * READ) as f64 / 1e6 / start.elapsed().as_secs_f64()
}

/// The same `ls` and `cat` of the same files on local disk, the page cache dropped: the reference
/// for a cold cat through the mount.
fn cat_small_files_locally() -> Duration {
    let dir = fresh_dir("bench-local-small");
    std::fs::create_dir(dir.join("small")).expect("mkdir");
    for i in 0..SMALL_FILES {
        std::fs::write(dir.join(format!("small/f{i:05}.jpg")), mount_tests::data::content(100 + i, 100 * 1024))
            .expect("write a local file");
    }
    run(&mut Command::new("sync"));
    drop_page_cache();
    let took = cat_small_files(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    took
}

fn cat_small_files(dir: &Path) -> Duration {
    timed(|| run(Command::new("sh").arg("-c").arg("ls small > /dev/null && cat small/* > /dev/null").current_dir(dir)))
}

/// Waits (at most five minutes) until the daemon has written `bytes` to the disk cache.
fn wait_written(metrics: &MetricsPort, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while metrics.value("fetchfs_disk_cache_written_bytes_total") < bytes && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cache's data file of `size` bytes.
fn data_file(cache: &Path, size: u64) -> Option<PathBuf> {
    std::fs::read_dir(cache.join("v1"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "data") && std::fs::metadata(p).is_ok_and(|m| m.len() == size))
}

struct Epoch {
    dd: f64,
    cat: Option<Duration>,
    random: [f64; 2],
}

fn epoch(mount: &Mount, large: u64, small_files: bool) -> Epoch {
    drop_page_cache();
    let dd = dd_mb_per_s(mount, "large.bin", large as usize, "1M");
    drop_page_cache();
    let cat = small_files.then(|| cat_small_files(&mount.dir));
    let random = [1, 4].map(|threads| {
        drop_page_cache();
        random_reads(&mount.path("large.bin"), large, threads)
    });
    Epoch { dd, cat, random }
}

pub fn rows(
    server: &TestServer,
    extra: &[&str],
    name: &'static str,
    large: u64,
    small_files: bool,
    peak_rss: &mut u64,
    rows: &mut Vec<Row>,
) {
    let cache = fresh_dir("bench-disk-cache");
    let mount_args = |metrics: &MetricsPort| -> Vec<String> {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend(["--disk-cache".into(), cache.display().to_string(), "--metrics-addr".into(), metrics.addr()]);
        args
    };
    eprintln!("[{name}] disk cache, epoch 1 ...");
    let first = {
        let metrics = MetricsPort::free();
        let args = mount_args(&metrics);
        let mount = Mount::of(server, BUCKET, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let first = epoch(&mount, large, small_files);
        let small_bytes = if small_files { SMALL_FILES * 100 * 1024 } else { 0 };
        wait_written(&metrics, large + small_bytes);
        *peak_rss = (*peak_rss).max(mount.peak_rss_kib());
        first
    };
    // On these VMs the first read of blocks just written runs at half the speed of later ones
    // (measured: 1.2 against 2.6 GB/s, whichever path reads first). One untimed read of the
    // cache's file, so epoch 2 and the direct reads after it start alike.
    if let Some(written) = data_file(&cache, large) {
        drop_page_cache();
        run(Command::new("dd").arg(format!("if={}", written.display())).args(["of=/dev/null", "bs=1M"]));
    }
    eprintln!("[{name}] disk cache, epoch 2 (remounted) ...");
    let counters = server.knobs().counters();
    let (second, cpu, gets) = {
        let metrics = MetricsPort::free();
        let args = mount_args(&metrics);
        let mount = Mount::of(server, BUCKET, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let pid = mount.daemon_pid().unwrap_or(0);
        counters.reset();
        drop_page_cache();
        let before = cpu_seconds(pid);
        let dd = dd_mb_per_s(&mount, "large.bin", large as usize, "1M");
        let cpu = cpu_seconds(pid) - before;
        drop_page_cache();
        let cat = small_files.then(|| cat_small_files(&mount.dir));
        let random = [1, 4].map(|threads| {
            drop_page_cache();
            random_reads(&mount.path("large.bin"), large, threads)
        });
        *peak_rss = (*peak_rss).max(mount.peak_rss_kib());
        (Epoch { dd, cat, random }, cpu, counters.snapshot().requests_of("GetObject"))
    };
    let Some(direct) = data_file(&cache, large) else {
        eprintln!("[{name}] disk cache: no whole data file of large.bin was found; no direct reads");
        let _ = std::fs::remove_dir_all(&cache);
        return;
    };
    drop_page_cache();
    let start = Instant::now();
    run(Command::new("dd").arg(format!("if={}", direct.display())).args(["of=/dev/null", "bs=1M"]));
    let direct_dd = large as f64 / 1e6 / start.elapsed().as_secs_f64();
    let direct_random = [1, 4].map(|threads| {
        drop_page_cache();
        random_reads(&direct, large, threads)
    });
    let _ = std::fs::remove_dir_all(&cache);

    rows.push(Row {
        profile: name,
        measure: format!(
            "disk cache: dd bs=1M of {} MiB, epoch 1 / epoch 2 / the cache file directly (epoch 2: {:.2} of direct, daemon CPU {cpu:.2} s)",
            large / (1024 * 1024),
            second.dd / direct_dd
        ),
        value: format!("{} / {} / {}", mbps(first.dd), mbps(second.dd), mbps(direct_dd)),
        ratio: None,
    });
    if let (Some(cold), Some(warm)) = (first.cat, second.cat) {
        let local = cat_small_files_locally();
        let files_per_s = |d: Duration| SMALL_FILES as f64 / d.as_secs_f64();
        rows.push(Row {
            profile: name,
            measure: format!(
                "disk cache: ls + cat of {SMALL_FILES} x 100 KiB, epoch 1 / epoch 2 / local disk, cold (epoch 1: {:.2}, epoch 2: {:.2} of local disk; GETs in epoch 2, whole run: {gets})",
                local.as_secs_f64() / cold.as_secs_f64(),
                local.as_secs_f64() / warm.as_secs_f64()
            ),
            value: format!(
                "{:.0} / {:.0} / {:.0} files/s",
                files_per_s(cold),
                files_per_s(warm),
                files_per_s(local)
            ),
            ratio: None,
        });
    }
    for (i, threads) in [1, 4].iter().enumerate() {
        rows.push(Row {
            profile: name,
            measure: format!(
                "disk cache: 256 KiB random reads, {threads} thread(s), epoch 1 / epoch 2 / the cache file directly (epoch 2: {:.2} of direct)",
                second.random[i] / direct_random[i]
            ),
            value: format!("{} / {} / {}", mbps(first.random[i]), mbps(second.random[i]), mbps(direct_random[i])),
            ratio: None,
        });
    }
    if small_files {
        shuffled_loader_row(server, extra, name, peak_rss, rows);
    }
}

/// The shuffled data loader that says nothing of its order (PyTorch's `shuffle=True`), on a fresh
/// mount without and with a cold disk cache: files per second, and bytes fetched per byte read
/// (what fetching the rest of the directory to disk cost).
fn shuffled_loader_row(
    server: &TestServer,
    extra: &[&str],
    name: &'static str,
    peak_rss: &mut u64,
    rows: &mut Vec<Row>,
) {
    eprintln!("[{name}] 8 data-loader workers, shuffled, no order given: without and with a cold disk cache ...");
    let counters = server.knobs().counters();
    let mut epoch = |args: &[&str]| {
        let mount = Mount::of(server, BUCKET, args);
        let workers = super::loader::Started::workers(&mount.path("small"), "shuffled");
        counters.reset();
        let took = timed(|| workers.run());
        let fetched = counters.snapshot().body_bytes_sent as f64 / (SMALL_FILES * 100 * 1024) as f64;
        *peak_rss = (*peak_rss).max(mount.peak_rss_kib());
        (SMALL_FILES as f64 / took.as_secs_f64(), fetched)
    };
    let plain = epoch(extra);
    let cache = fresh_dir("bench-epoch-cache");
    let mut args = extra.to_vec();
    let dir = cache.display().to_string();
    args.extend(["--disk-cache", &dir]);
    let cached = epoch(&args);
    let _ = std::fs::remove_dir_all(&cache);
    rows.push(Row {
        profile: name,
        measure: format!(
            "8 python3 workers, {SMALL_FILES} x 100 KiB shuffled, no order given: no disk cache / a cold disk cache ({:.2}x; bytes fetched per byte read {:.2} / {:.2})",
            cached.0 / plain.0,
            plain.1,
            cached.1
        ),
        value: format!("{:.0} / {:.0} files/s", plain.0, cached.0),
        ratio: None,
    });
}
