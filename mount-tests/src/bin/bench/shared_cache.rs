//! The shared cache's rows: the profile's server is the source, a second server with no added
//! latency holds the cache bucket. The same reads (`cat` of the small files, `dd` of the large
//! object) on a mount without a shared cache, on node 1 (a fresh daemon, the cache empty) and on
//! node 2 (another fresh daemon, the cache filled by node 1).

use std::time::{Duration, Instant};

use mount_tests::metrics::MetricsPort;
use mount_tests::mount::Mount;
use mount_tests::server::TestServer;

use super::{Row, SMALL_FILES, dd_mb_per_s, on_fresh_mount, timed};

const CACHE_BUCKET: &str = "near-cache";

/// Files per second of `cat small/*`, and MB/s of `dd` of the large object.
fn read_both(mount: &Mount, large: usize) -> (f64, f64) {
    let took = timed(|| {
        let out = mount.sh("ls small > /dev/null && cat small/* > /dev/null");
        assert!(out.status.success(), "cat small/*: {out:?}");
    });
    (SMALL_FILES as f64 / took.as_secs_f64(), dd_mb_per_s(mount, "large.bin", large, "1M"))
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
    let first = on_fresh_mount(server, &args, peak_rss, |mount| {
        let read = read_both(mount, large);
        settle(&metrics);
        read
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
    let measures = [
        (format!("cat small/* ({SMALL_FILES} x 100 KiB), no shared cache"), small(without.0)),
        (format!("cat small/*, node 1 (cache empty), {:.2}x no cache", first.0 / without.0), small(first.0)),
        (format!("cat small/*, node 2 (cache filled), {:.2}x node 1", second.0 / first.0), small(second.0)),
        (format!("dd bs=1M of {mib} MiB, no shared cache"), mb(without.1)),
        (format!("dd bs=1M, node 1 (cache empty), {:.2}x no cache", first.1 / without.1), mb(first.1)),
        (format!("dd bs=1M, node 2 (cache filled), {:.2}x node 1", second.1 / first.1), mb(second.1)),
        ("node 2: GETs of the source (both reads)".into(), source_gets.to_string()),
    ];
    for (measure, value) in measures {
        rows.push(Row { profile: name, measure: format!("shared cache: {measure}"), value, ratio: None });
    }
}
