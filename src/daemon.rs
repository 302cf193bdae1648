//! Running a mount: in the foreground, or forked into the background before any runtime or SDK
//! starts, with the parent waiting on a pipe for "ready" or the reason it failed, so its exit
//! status says whether the mount worked. SIGINT/SIGTERM unmount cleanly; an external `umount`
//! ends the daemon.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::disk::DiskCache;
use crate::cache::shared;
use crate::cache::tier::BlockTier;
use crate::config::MountConfig;
use crate::fetch::Tiers;
use crate::fs::Fs;
use crate::metrics::Metrics;
use crate::store::counted::Counted;
use crate::store::s3::S3Store;
use crate::store::{ObjectStore, StoreError};
use crate::upload::dangling::{self, Journal};

/// How long the startup check may take before the endpoint counts as unreachable.
const REACHABILITY_TIMEOUT: Duration = Duration::from_secs(15);
const READY: &[u8] = b"ready\n";
/// Connections opened at mount time, ahead of the first reads.
const WARM_CONNECTIONS: usize = 8;

/// Mounts as configured; returns when the mount has ended (foreground) or is ready (background).
pub fn run(config: MountConfig) -> Result<(), String> {
    if config.foreground {
        return serve(config, &mut Readiness(None));
    }
    let (read_end, write_end) = pipe().map_err(|e| format!("creating a pipe: {e}"))?;
    // SAFETY: no threads exist yet (no runtime, no SDK), so the child may continue normally.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork failed: {}", std::io::Error::last_os_error())),
        0 => {
            drop(read_end);
            // SAFETY: setsid has no memory effects; it detaches the daemon from the terminal.
            unsafe { libc::setsid() };
            let mut readiness = Readiness(Some(File::from(write_end)));
            let code = match serve(config, &mut readiness) {
                Ok(()) => 0,
                Err(message) => {
                    readiness.failed(&message);
                    1
                }
            };
            std::process::exit(code);
        }
        _child => {
            drop(write_end);
            let mut answer = Vec::new();
            let _ = File::from(read_end).read_to_end(&mut answer);
            if answer.starts_with(READY) {
                Ok(())
            } else if answer.is_empty() {
                Err("the daemon exited before the mount was ready".into())
            } else {
                Err(String::from_utf8_lossy(&answer).trim().to_owned())
            }
        }
    }
}

/// The daemon's side of the readiness pipe: one report, "ready" or why not, then closed so the
/// waiting parent sees the end of it.
struct Readiness(Option<File>);

impl Readiness {
    fn ready(&mut self) -> Result<(), String> {
        match self.0.take() {
            Some(mut pipe) => pipe.write_all(READY).map_err(|e| format!("reporting readiness: {e}")),
            None => Ok(()),
        }
    }

    fn failed(&mut self, message: &str) {
        if let Some(mut pipe) = self.0.take() {
            let _ = pipe.write_all(message.as_bytes());
        }
    }

    fn is_background(&self) -> bool {
        self.0.is_some()
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A warning for whoever ran `fetchfs mount`, on stderr as one plain line, and in the log file
/// when there is one (without one, the log is stderr already).
fn warn_user(config: &MountConfig, warning: &str) {
    if config.log_file.is_some() {
        tracing::warn!("{warning}");
    }
    eprintln!("fetchfs: warning: {warning}");
}

fn init_logging(config: &MountConfig) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("error,fetchfs={}", config.log_level))
        .map_err(|e| format!("--log-level {:?}: {e}", config.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &config.log_file {
        Some(path) => {
            let file = open_log_file(path).map_err(|e| format!("log file {}: {e}", path.display()))?;
            builder.with_ansi(false).with_writer(std::sync::Mutex::new(file)).init();
        }
        // Colours only for a person at a terminal, not for a file or a pipe stderr goes to.
        None => builder.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).init(),
    }
    crate::panics::install_hook();
    Ok(())
}

/// Opens the log for appending, never through a symbolic link and never one another user owns:
/// in a shared directory (/tmp) another user could plant either to make a daemon running as root
/// write where they choose.
fn open_log_file(path: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => "it is a symbolic link: give the log's own path".to_owned(),
            _ => e.to_string(),
        })?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!("it belongs to user {}, not to the user running fetchfs ({me}): refused", meta.uid()));
    }
    Ok(file)
}

/// An error chain from the first link that speaks of credentials, two links long, at most a
/// line's length.
fn first_cause(chain: &str) -> String {
    let links: Vec<&str> = chain.split(": ").collect();
    let from = links.iter().position(|l| l.contains("credential")).unwrap_or(0);
    let first = links[from..].iter().take(2).copied().collect::<Vec<_>>().join(": ");
    match first.char_indices().nth(120) {
        Some((at, _)) => format!("{}...", &first[..at]),
        None => first,
    }
}

/// Says in one line why the bucket cannot be used, naming the bucket and endpoint.
fn reachability_error(config: &MountConfig, e: StoreError) -> String {
    let bucket = &config.s3.bucket;
    let endpoint = config.s3.endpoint_url.as_deref().unwrap_or("AWS S3");
    match e {
        StoreError::NoSuchBucket => format!("bucket {bucket} does not exist at {endpoint}"),
        StoreError::AccessDenied(why) if why.starts_with("SignatureDoesNotMatch") => format!(
            "the secret key was refused at {endpoint} (SignatureDoesNotMatch): check that AWS_SECRET_ACCESS_KEY \
             (or the profile's secret) belongs to the access key"
        ),
        StoreError::AccessDenied(why) if why.starts_with("InvalidAccessKeyId") => format!(
            "the access key is unknown at {endpoint} (InvalidAccessKeyId): check AWS_ACCESS_KEY_ID (or the profile)"
        ),
        StoreError::AccessDenied(why) => {
            format!("access to bucket {bucket} was denied ({why}): check the credentials and their permissions")
        }
        StoreError::WrongRegion(region) => format!("bucket {bucket} is in region {region}: pass --region {region}"),
        // The SDK's chain (environment, profile, instance metadata...) says every place it looked;
        // the advice comes first, and the chain only as far as its first cause.
        StoreError::Unreachable(why) if why.contains("loading credentials") || why.contains("credential provider") => {
            format!(
                "no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, use --profile, or \
             --no-sign-request for a public bucket ({})",
                first_cause(&why)
            )
        }
        StoreError::Unreachable(why) => format!("cannot reach {endpoint}: {why}"),
        other => format!("checking bucket {bucket} at {endpoint} failed: {other}"),
    }
}

fn serve(config: MountConfig, readiness: &mut Readiness) -> Result<(), String> {
    init_logging(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("fetchfs-io")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let metrics = Arc::new(Metrics::default());
    let store = runtime
        .block_on(S3Store::connect(&config.s3, metrics.retries.clone()))
        .map_err(|e| reachability_error(&config, e))?;
    // The check runs as several requests at once, so it also opens that many connections, which
    // stay in the pool for the first reads (a TCP and TLS handshake each, paid before any reader
    // waits).
    let warm = config.fetch.max_connections.min(WARM_CONNECTIONS);
    let check = runtime.block_on(async {
        let probes = (0..warm).map(|_| store.list_page(&config.prefix, None, Some(1)));
        tokio::time::timeout(REACHABILITY_TIMEOUT, futures::future::join_all(probes)).await
    });
    match check.map(|answers| answers.into_iter().collect::<Result<Vec<_>, _>>()) {
        Ok(Ok(pages)) => {
            let empty = pages.first().is_some_and(|p| p.objects.is_empty() && p.prefixes.is_empty());
            if empty && !config.prefix.is_empty() {
                let parent = parent_prefix(&config.prefix);
                let siblings = runtime.block_on(store.list_page(parent, None, None)).map(|p| p.prefixes);
                let warning = empty_prefix_warning(&config.s3.bucket, &config.prefix, &siblings.unwrap_or_default());
                warn_user(&config, &warning);
            }
        }
        Ok(Err(e)) => return Err(reachability_error(&config, e)),
        Err(_) => {
            return Err(reachability_error(
                &config,
                StoreError::Unreachable(format!("no answer within {} s", REACHABILITY_TIMEOUT.as_secs())),
            ));
        }
    }

    let endpoint = config.s3.endpoint_url.as_deref().unwrap_or("aws");
    // What names the source in every cache: its endpoint and bucket.
    let scope = format!("{endpoint}\n{}", config.s3.bucket);
    let disk = match &config.disk_cache {
        Some(disk) => {
            let scope = scope.clone();
            let fill_queue = config.fetch.disk_fill_bytes();
            Some(DiskCache::open(disk, scope, config.fetch.block_size, fill_queue, metrics.disk.clone())?)
        }
        None => None,
    };
    let shared = match &config.shared_cache {
        Some(settings) => {
            let (block, queue) = (config.fetch.block_size, config.fetch.shared_fill_bytes);
            let retries = metrics.retries.clone();
            let connecting = shared::connect(settings, scope, block, queue, retries, metrics.shared.clone());
            Some(runtime.block_on(connecting)?)
        }
        None => None,
    };
    let store = Arc::new(Counted::new(store, Arc::clone(&metrics)));
    let journal = if config.fs.writes.read_only { None } else { uploads_journal(&config, &store, runtime.handle()) };
    let tiers = Tiers::new(disk, shared.into_iter().map(|s| s as Arc<dyn BlockTier>).collect());
    let fs =
        Fs::new(store, config.fs.clone(), config.fetch, config.upload.clone(), tiers, journal, Arc::clone(&metrics));
    if let Some(addr) = config.metrics_addr {
        let fs = Arc::clone(&fs);
        runtime
            .block_on(crate::metrics::serve(addr, metrics, move || fs.refresh_gauges()))
            .map_err(|e| format!("serving metrics at {addr}: {e}"))?;
    }
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let settling = Arc::clone(&fs);
    let session = crate::fuse::mount(fs, runtime.handle().clone(), &config, ended_tx)
        .map_err(|e| format!("mounting at {}: {e}", config.mountpoint.display()))?;
    tracing::info!(bucket = %config.s3.bucket, prefix = %config.prefix, mountpoint = %config.mountpoint.display(), "mounted");
    // On stderr, as a diagnostic: scripts may read what the mount prints on stdout.
    eprintln!("{}", startup_line(&config));
    if let Some(warning) = half_of_replace(&config.fs.writes) {
        warn_user(&config, warning);
    }

    if readiness.is_background() {
        readiness.ready()?;
        detach_stdio();
    }

    let (ended, stop_began) =
        runtime.block_on(wait_for_end(&config, ended_rx)).map_err(|e| format!("waiting for signals: {e}"))?;
    if ended {
        if let Err(e) = session.join() {
            tracing::warn!("FUSE session ended with: {e}");
        }
        settle_tiers(&runtime, &settling, &config, STOP_GRACE.saturating_sub(stop_began.elapsed()));
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// This daemon's journal of multipart uploads, after starting (in the background) to abort those
/// that stopped daemons left behind for the same bucket. Without a state directory, uploads are
/// not noted, and the README's lifecycle rule is what cleans up after a killed daemon.
fn uploads_journal<S: ObjectStore>(
    config: &MountConfig,
    store: &Arc<S>,
    runtime: &tokio::runtime::Handle,
) -> Option<Arc<Journal>> {
    let Some(dir) = dangling::journal_dir() else {
        tracing::info!(
            "no state directory (HOME, XDG_STATE_HOME or STATE_DIRECTORY): uploads a killed daemon leaves are not noted"
        );
        return None;
    };
    let bucket = format!("{} {}", config.s3.endpoint_url.as_deref().unwrap_or("aws"), config.s3.bucket);
    let journal = match Journal::create(&dir, &bucket) {
        Ok(journal) => Arc::new(journal),
        Err(e) => {
            tracing::warn!("noting uploads in {}: {e}; uploads a killed daemon leaves are not noted", dir.display());
            return None;
        }
    };
    let store = Arc::clone(store);
    runtime.spawn(async move { dangling::abort_left_behind(&*store, &dir, &bucket).await });
    Some(journal)
}

/// One line, at any log level, saying what the mount is and which tiers are on.
fn startup_line(config: &MountConfig) -> String {
    const MIB: u64 = 1024 * 1024;
    // --cache-size is the whole budget: what reads keep, and a quarter for files being written.
    let memory = match config.upload.budget {
        0 => format!("memory cache {} MiB", config.fetch.cache_bytes / MIB),
        writes => format!(
            "memory cache {} MiB ({} for reads, {} for writes)",
            (config.fetch.cache_bytes + writes) / MIB,
            config.fetch.cache_bytes / MIB,
            writes / MIB
        ),
    };
    let memory = match &config.budget_chosen {
        Some(why) => format!("{memory}, {why}"),
        None => memory,
    };
    let disk = match &config.disk_cache {
        // SAFETY: geteuid cannot fail.
        Some(disk) if unsafe { libc::geteuid() } == 0 => {
            format!("disk cache {} (files whole on disk read by the kernel: FUSE passthrough)", disk.dir.display())
        }
        Some(disk) => format!("disk cache {} (served by the daemon: passthrough needs root)", disk.dir.display()),
        None => "no disk cache".into(),
    };
    let writes = &config.fs.writes;
    let writes = if writes.read_only {
        "read-only".to_string()
    } else {
        let mut allowed = vec!["new files"];
        if writes.allow_overwrite {
            allowed.push("overwrite");
        }
        if writes.allow_delete {
            allowed.push("delete");
        }
        format!("writes: {}", allowed.join(", "))
    };
    let shared = match &config.shared_cache {
        Some(shared) => format!("; shared cache s3://{}/{}", shared.s3.bucket, shared.prefix),
        None => String::new(),
    };
    format!(
        "fetchfs: s3://{}/{} mounted at {}; {memory}; {disk}{shared}; {writes}",
        config.s3.bucket,
        config.prefix,
        config.mountpoint.display()
    )
}

/// The prefix holding `prefix` (both end with `/`, or the parent is empty).
fn parent_prefix(prefix: &str) -> &str {
    let trimmed = prefix.trim_end_matches('/');
    trimmed.rfind('/').map_or("", |at| &prefix[..=at])
}

/// What to say when the mounted prefix holds nothing: most often a typo, so the names beside it
/// that are close to it are named.
fn empty_prefix_warning(bucket: &str, prefix: &str, siblings: &[String]) -> String {
    let wanted = prefix.trim_end_matches('/');
    let mut near: Vec<(f64, &str)> = siblings
        .iter()
        .map(|s| (strsim::normalized_damerau_levenshtein(wanted, s.trim_end_matches('/')), s.as_str()))
        .filter(|(likeness, _)| *likeness >= 0.6)
        .collect();
    near.sort_by(|a, b| b.0.total_cmp(&a.0));
    let said = format!("s3://{bucket}/{prefix} holds no objects: the mount is empty");
    match near.as_slice() {
        [] => format!("{said} (check the prefix)"),
        near => {
            let names: Vec<String> = near.iter().take(3).map(|(_, s)| format!("s3://{bucket}/{s}")).collect();
            format!("{said}; did you mean {}?", names.join(" or "))
        }
    }
}

/// What to say of a mount that may replace other clients' objects but not delete them, or the
/// reverse: checkpoint libraries save again by overwriting shards, then deleting and renaming
/// their index, and half of that leaves new shards beside the old index.
fn half_of_replace(writes: &crate::fs::WriteMode) -> Option<&'static str> {
    match (writes.read_only, writes.allow_overwrite, writes.allow_delete) {
        (false, true, false) => Some(
            "--allow-overwrite without --allow-delete: a checkpoint saved again over another mount's (new shards, \
             then the old index deleted) stops midway and leaves a mixed checkpoint; give both flags, or neither",
        ),
        (false, false, true) => Some(
            "--allow-delete without --allow-overwrite: a checkpoint saved again over another mount's stops at its \
             first shard; give both flags, or neither",
        ),
        _ => None,
    }
}

/// A clean unmount (umount, SIGTERM, systemd stop) leaves in the tiers what was read: blocks
/// queued for the disk or the shared cache are written and versions read to their end are
/// completed on disk, within what is left of the stop's grace (a pod restarting after a training
/// run, or the next node, would otherwise fetch it all again).
fn settle_tiers<S: ObjectStore>(runtime: &tokio::runtime::Runtime, fs: &Fs<S>, config: &MountConfig, left: Duration) {
    if config.disk_cache.is_none() && config.shared_cache.is_none() {
        return;
    }
    let left = left.max(Duration::from_secs(1));
    let started = std::time::Instant::now();
    if runtime.block_on(fs.settle(left)) {
        tracing::info!(
            "caches: what was read is in the disk and shared caches ({:.1} s after the unmount)",
            started.elapsed().as_secs_f64()
        );
    } else {
        tracing::warn!(
            "caches: blocks read were still going to the disk or shared cache {} s after the unmount; exiting",
            left.as_secs()
        );
    }
}

/// How long files still open are served after a signal took the mount away. Shorter than the stop
/// timeouts in packaging/ (systemd's TimeoutStopSec, the DaemonSet's grace period: 30 s), so the
/// daemon exits by itself before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Waits for the session to end by an external unmount, or for SIGINT/SIGTERM: then the mount
/// is detached at once, and the daemon waits for the last open file to close, at most
/// `STOP_GRACE`, or for a second signal. True when the session has ended; and when the stop began.
async fn wait_for_end(
    config: &MountConfig,
    mut ended: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<(bool, std::time::Instant)> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = &mut ended => return Ok((true, std::time::Instant::now())),
    }
    let stop_began = std::time::Instant::now();
    let mountpoint = config.mountpoint.display();
    match crate::unmount::detach_mount(&config.mountpoint) {
        Ok(()) => tracing::info!(
            "signal received: {mountpoint} unmounted; serving files still open for up to {} s",
            STOP_GRACE.as_secs()
        ),
        Err(e) => tracing::warn!("signal received, but unmounting {mountpoint} failed: {e}"),
    }
    let ended = tokio::select! {
        _ = &mut ended => true,
        _ = tokio::time::sleep(STOP_GRACE) => {
            tracing::warn!("files were still open {} s after the signal; exiting", STOP_GRACE.as_secs());
            false
        }
        _ = term.recv() => false,
        _ = int.recv() => false,
    };
    Ok((ended, stop_began))
}

/// A background daemon must not hold its caller's terminal or pipes open; its logs go to
/// --log-file (without one, a background daemon logs nowhere).
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors, which this process owns.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_chain_is_cut_to_its_first_cause() {
        let chain = "loading credentials: the credential provider was not enabled: no providers in chain \
                     provided credentials: IMDS: failed to load: dispatch failure: timeout";
        assert_eq!(first_cause(chain), "loading credentials: the credential provider was not enabled");
        let dispatched = "dispatch failure: other: the credential provider was not enabled: no providers in chain \
                          provided credentials";
        assert_eq!(
            first_cause(dispatched),
            "the credential provider was not enabled: no providers in chain provided credentials"
        );
        assert!(first_cause(&"x".repeat(500)).len() <= 124);
    }

    #[test]
    fn an_empty_prefix_names_the_prefixes_close_to_it() {
        assert_eq!(parent_prefix("imgaes/"), "");
        assert_eq!(parent_prefix("a/b/"), "a/");
        let siblings = ["images/".to_owned(), "labels/".to_owned(), "imagenet/".to_owned()];
        let said = empty_prefix_warning("sample", "imgaes/", &siblings);
        assert!(said.starts_with("s3://sample/imgaes/ holds no objects"), "{said}");
        assert!(said.contains("did you mean s3://sample/images/"), "{said}");
        assert!(!said.contains("labels"), "{said}");
        let said = empty_prefix_warning("sample", "zzz/", &siblings);
        assert!(said.ends_with("(check the prefix)"), "{said}");
    }
}
