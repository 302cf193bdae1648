//! `fetchfs bench`: measures, against one real object on the user's own network, the download
//! techniques fetchfs chooses between (one GET stream; N parallel ranged GETs of several part
//! sizes; optionally reads through a mount), with connection-level timings, and recommends
//! `--part-size` and `--max-connections`. Each technique runs for a bounded time.

pub mod download;
pub mod probe;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::BenchArgs;
use crate::config::{parse_source, s3_settings};
use crate::object_id::ObjectId;
use crate::store::ObjectStore;
use crate::store::s3::{S3Settings, S3Store};
use download::parallel_ranged_read;

const MIB: u64 = 1024 * 1024;
/// The receive buffer tried against the kernel's autotuning.
const LARGE_RCVBUF: usize = 8 * 1024 * 1024;

#[derive(Debug, Serialize)]
pub struct Results {
    pub object: String,
    pub size: u64,
    pub endpoint: String,
    pub duration_s: f64,
    /// Resolving the endpoint's host and a TCP connect (median of 5), from the probe.
    pub resolve_ms: Option<f64>,
    pub tcp_connect_ms: Option<f64>,
    /// First byte of a 1-byte GET on a new client (connect, TLS, request) and on a warm
    /// connection (request only, median of 5); their difference is the connection setup.
    pub cold_first_byte_ms: f64,
    pub warm_first_byte_ms: f64,
    pub single_stream_mb_s: f64,
    /// One stream through the probe's own socket, with the kernel's receive buffer autotuning and
    /// with a fixed large SO_RCVBUF (plain HTTP endpoints only).
    pub probe_stream: Option<ProbeStreams>,
    pub parallel: Vec<ParallelRun>,
    pub mount: Option<MountRun>,
    pub recommended: Recommendation,
}

#[derive(Debug, Serialize)]
pub struct ProbeStreams {
    pub autotuned: probe::StreamRun,
    pub rcvbuf_8_mib: probe::StreamRun,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct ParallelRun {
    pub connections: usize,
    pub part_size_mib: u64,
    pub mb_s: f64,
}

#[derive(Debug, Serialize)]
pub struct MountRun {
    pub path: PathBuf,
    pub mb_s: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    pub part_size_mib: u64,
    pub max_connections: usize,
}

/// The cheapest setting within 5 % of the fastest: fewest connections, then smallest parts.
pub fn recommend(runs: &[ParallelRun]) -> Option<Recommendation> {
    let best = runs.iter().map(|r| r.mb_s).fold(0.0, f64::max);
    runs.iter()
        .filter(|r| r.mb_s >= 0.95 * best)
        .min_by_key(|r| (r.connections, r.part_size_mib))
        .map(|r| Recommendation { part_size_mib: r.part_size_mib, max_connections: r.connections })
}

pub fn run(args: BenchArgs) -> Result<(), String> {
    let (bucket, key) = parse_source(&args.object).map_err(|e| e.to_string())?;
    let key = key.ok_or_else(|| format!("{:?} names no object: use s3://BUCKET/KEY", args.object))?;
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        return Err("--duration must be between 0 and 3600 seconds".into());
    }
    if args.connections.contains(&0) || args.part_sizes.contains(&0) {
        return Err("--connections and --part-sizes must be at least 1".into());
    }
    let settings = s3_settings(bucket, &args.s3).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("starting the runtime: {e}"))?;
    let results = runtime.block_on(measure(&args, &settings, &key))?;
    print!("{}", report::table(&results));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&results).map_err(|e| format!("encoding JSON: {e}"))?;
        std::fs::write(path, json + "\n").map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        report::plot(&results, path)?;
    }
    Ok(())
}

async fn connect(settings: &S3Settings) -> Result<Arc<S3Store>, String> {
    let store = S3Store::connect(settings, Default::default()).await.map_err(|e| e.to_string())?;
    Ok(Arc::new(store))
}

async fn measure(args: &BenchArgs, settings: &S3Settings, key: &str) -> Result<Results, String> {
    let limit = Duration::from_secs_f64(args.duration);
    let steps = 4 + args.connections.len() * args.part_sizes.len() + usize::from(args.mount.is_some());
    let progress = ProgressBar::new(steps as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let step = |message: String| {
        progress.set_message(message);
        progress.inc(1);
    };

    progress.set_message("HEAD");
    let store = connect(settings).await?;
    let meta = store.head(key).await.map_err(|e| format!("{key}: {e}"))?;
    let object = Arc::new(ObjectId { key: key.to_owned(), etag: meta.etag.clone() });
    let size = meta.size;
    if size == 0 {
        return Err(format!("{key} is empty: give a large object"));
    }
    let endpoint = settings.endpoint_url.clone().unwrap_or_else(|| "AWS S3".into());

    step("time to first byte".into());
    let fresh = connect(settings).await?;
    let cold = first_byte(&fresh, &object).await?;
    let mut warm = Vec::new();
    for _ in 0..5 {
        warm.push(first_byte(&fresh, &object).await?);
    }
    warm.sort();

    step("probe: connect and one stream".into());
    let presigned = store.presign_get(key).await.map_err(|e| e.to_string())?;
    let probe_url = presigned.url.clone();
    let connect_times =
        tokio::task::spawn_blocking(move || probe::connect_times(&probe_url, 5)).await.ok().and_then(Result::ok);
    let probe_stream = {
        let (request, end) = (presigned.clone(), size);
        tokio::task::spawn_blocking(move || -> std::io::Result<ProbeStreams> {
            Ok(ProbeStreams {
                autotuned: probe::stream(&request, end, None, limit)?,
                rcvbuf_8_mib: probe::stream(&request, end, Some(LARGE_RCVBUF), limit)?,
            })
        })
        .await
        .ok()
        .and_then(Result::ok)
    };

    step("one GET stream".into());
    let single = parallel_ranged_read(&store, &object, size, 1, size, Some(limit)).await.map_err(|e| e.to_string())?;

    let mut parallel = Vec::new();
    for &part_mib in &args.part_sizes {
        for &connections in &args.connections {
            step(format!("{connections} GETs of {part_mib} MiB"));
            let run = parallel_ranged_read(&store, &object, size, connections, part_mib * MIB, Some(limit))
                .await
                .map_err(|e| e.to_string())?;
            parallel.push(ParallelRun { connections, part_size_mib: part_mib, mb_s: run.mb_per_s() });
        }
    }

    let mount = match &args.mount {
        Some(dir) => {
            step("through the mount".into());
            let path = dir.join(key);
            let (read_path, run_limit) = (path.clone(), limit);
            let mb_s = tokio::task::spawn_blocking(move || read_through_mount(&read_path, run_limit))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            Some(MountRun { path, mb_s })
        }
        None => None,
    };
    progress.finish_and_clear();

    let recommended = recommend(&parallel).ok_or("no parallel run")?;
    Ok(Results {
        object: format!("s3://{}/{key}", settings.bucket),
        size,
        endpoint,
        duration_s: args.duration,
        resolve_ms: connect_times.map(|(r, _)| ms(r)),
        tcp_connect_ms: connect_times.map(|(_, c)| ms(c)),
        cold_first_byte_ms: ms(cold),
        warm_first_byte_ms: ms(warm[warm.len() / 2]),
        single_stream_mb_s: single.mb_per_s(),
        probe_stream,
        parallel,
        mount,
        recommended,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// From sending a 1-byte GET to its first body byte.
async fn first_byte(store: &Arc<S3Store>, object: &ObjectId) -> Result<Duration, String> {
    let started = Instant::now();
    let mut body = store.get_range(&object.key, 0..1, &object.etag).await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    while body.next().await.is_some() {}
    Ok(elapsed)
}

/// Reads the file from its start in 1 MiB reads for at most `limit`, its cached pages dropped
/// first, and gives MB/s.
fn read_through_mount(path: &Path, limit: Duration) -> std::io::Result<f64> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut file = std::fs::File::open(path)?;
    // SAFETY: advice on a descriptor we own; failure only leaves pages cached.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut buf = vec![0u8; MIB as usize];
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed() < limit {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
    }
    Ok(bytes as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(connections: usize, part_size_mib: u64, mb_s: f64) -> ParallelRun {
        ParallelRun { connections, part_size_mib, mb_s }
    }

    #[test]
    fn the_recommendation_is_the_cheapest_setting_near_the_fastest() {
        let runs = [run(1, 8, 80.0), run(4, 8, 300.0), run(16, 4, 990.0), run(16, 8, 1000.0), run(32, 8, 1010.0)];
        assert_eq!(recommend(&runs), Some(Recommendation { part_size_mib: 4, max_connections: 16 }));
        assert_eq!(recommend(&[]), None);
    }
}
