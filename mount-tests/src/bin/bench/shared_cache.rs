//! The shared cache's rows: the profile's server is the source, a second server with no added
//! latency holds the cache bucket. The same reads (`cat` of the small files, `dd` of the large
//! object) on a mount without a shared cache, on node 1 (a fresh daemon, the cache empty) and on
//! node 2 (another fresh daemon, the cache filled by node 1).

use std::time::{Duration, Instant};

use mount_tests::metrics::MetricsPort;
use mount_tests::mount::Mount;
use mount_tests::server::TestServer;

use super::{Row, SMALL_FILES, cpu_seconds, dd_mb_per_s, on_fresh_mount, timed, with_daemon_cpu};

const CACHE_BUCKET: &str = "near-cache";

/// One node's reads: `cat small/*` in files per second, `dd` of the large object in MB/s, and the
/// daemon's CPU seconds over each.
struct Reads {
    files_per_s: f64,
    mb_per_s: f64,
    cat_cpu: f64,
    dd_cpu: f64,
}

fn read_both(mount: &Mount, large: usize) -> Reads {
    let (took, cat_cpu) = with_daemon_cpu(mount, || {
        timed(|| {
            let out = mount.sh("ls small > /dev/null && cat small/* > /dev/null");
            assert!(out.status.success(), "cat small/*: {out:?}");
        })
    });
    let (mb_per_s, dd_cpu) = with_daemon_cpu(mount, || dd_mb_per_s(mount, "large.bin", large, "1M"));
    Reads { files_per_s: SMALL_FILES as f64 / took.as_secs_f64(), mb_per_s, cat_cpu, dd_cpu }
}

/// Waits until the node's fills stop going up (nothing more for three seconds: blocks the queue
/// dropped go up after the readers were quiet for one).
fn settle(metrics: &MetricsPort) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = u64::MAX;
    while Instant::now() < deadline {
        let written = metrics.value("fetchfs_shared_cache_written_bytes_total");
        if written == last {
            return;
        }
        last = written;
        std::thread::sleep(Duration::from_secs(3));
    }
}

pub fn rows(
    server: &TestServer,
    extra: &[&str],
    large: usize,
    name: &'static str,
    peak_rss: &mut u64,
    rows: &mut Vec<Row>,
) {
    let near = TestServer::with_bucket(CACHE_BUCKET);
    // A near bucket is S3 Express One Zone or a cluster's own store, on cores of its own; here it
    // shares two cores with the node, so it spends none of them on MD5 ETags.
    near.knobs().set_express_etags(true);
    let cache = format!("s3://{CACHE_BUCKET}/{name}/");
    let endpoint = near.endpoint_url();
    let node_args = |metrics: &MetricsPort| {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend(["--shared-cache".into(), cache.clone(), "--shared-cache-endpoint-url".into(), endpoint.clone()]);
        args.extend(["--metrics-addr".into(), metrics.addr()]);
        args
    };
    eprintln!("[{name}] shared cache: a mount without one, node 1 (cache empty), node 2 (cache filled) ...");
    let without = on_fresh_mount(server, extra, peak_rss, |mount| read_both(mount, large));
    let metrics = MetricsPort::free();
    let args = node_args(&metrics);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (first, filling_cpu, filled) = on_fresh_mount(server, &args, peak_rss, |mount| {
        let read = read_both(mount, large);
        let pid = mount.daemon_pid().unwrap_or(0);
        let before = cpu_seconds(pid);
        settle(&metrics);
        (read, cpu_seconds(pid) - before, metrics.value("fetchfs_shared_cache_written_bytes_total") as f64)
    });
    let metrics = MetricsPort::free();
    let args = node_args(&metrics);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gets = || server.knobs().counters().snapshot().requests_of("GetObject");
    let before = gets();
    let second = on_fresh_mount(server, &args, peak_rss, |mount| read_both(mount, large));
    let source_gets = gets() - before;
    let mib = large / (1024 * 1024);
    let small = |v: f64| format!("{v:.0} files/s");
    let mb = |v: f64| format!("{v:.0} MB/s");
    let gib = large as f64 / (1024.0 * 1024.0 * 1024.0);
    let cpu = |reads: &Reads| format!("cat {:.2} s, dd {:.2} s per GiB", reads.cat_cpu, reads.dd_cpu / gib);
    let measures = [
        (format!("cat small/* ({SMALL_FILES} x 100 KiB), no shared cache"), small(without.files_per_s)),
        (
            format!("cat small/*, node 1 (cache empty), {:.2}x no cache", first.files_per_s / without.files_per_s),
            small(first.files_per_s),
        ),
        (
            format!("cat small/*, node 2 (cache filled), {:.2}x node 1", second.files_per_s / first.files_per_s),
            small(second.files_per_s),
        ),
        (format!("dd bs=1M of {mib} MiB, no shared cache"), mb(without.mb_per_s)),
        (
            format!("dd bs=1M, node 1 (cache empty), {:.2}x no cache", first.mb_per_s / without.mb_per_s),
            mb(first.mb_per_s),
        ),
        (
            format!("dd bs=1M, node 2 (cache filled), {:.2}x node 1", second.mb_per_s / first.mb_per_s),
            mb(second.mb_per_s),
        ),
        ("daemon CPU, no shared cache".into(), cpu(&without)),
        ("daemon CPU, node 1 reading".into(), cpu(&first)),
        (
            "daemon CPU, node 1 after reading, until its fills settled".into(),
            format!("{filling_cpu:.2} s ({:.0} MiB filled in all)", filled / (1024.0 * 1024.0)),
        ),
        ("daemon CPU, node 2 reading".into(), cpu(&second)),
        ("node 2: GETs of the source (both reads)".into(), source_gets.to_string()),
    ];
    for (measure, value) in measures {
        rows.push(Row { profile: name, measure: format!("shared cache: {measure}"), value, ratio: None });
    }
}
