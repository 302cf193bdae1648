//! The checked mount configuration: everything wrong with the arguments or the mount directory is
//! found here, before anything is mounted, and reported as one line naming the problem.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fuser::{MountOption, SessionACL};

use crate::cache::disk::DiskCacheConfig;
pub use crate::cache::shared::SharedCacheSettings;
use crate::cli::{MountArgs, S3Args, SharedCacheArgs};
use crate::fetch::FetchConfig;
use crate::fs::{FsOptions, User, WriteMode};
use crate::memory_budget;
use crate::memory_target::{Budget, MemoryTarget};
use crate::store::s3::S3Settings;
use crate::upload::UploadConfig;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The filesystem type a mount shows (`fuse.fetchfs`), and its subtype.
const SUBTYPE: &str = "fetchfs";
const FSTYPE: &str = "fuse.fetchfs";

fn error(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

#[derive(Debug)]
pub struct MountConfig {
    pub s3: S3Settings,
    pub prefix: String,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub acl: SessionACL,
    pub fs: FsOptions,
    pub fetch: FetchConfig,
    pub log_level: String,
    pub log_file: Option<PathBuf>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Why the memory budget is smaller than its default, when the memory target made it so.
    pub budget_chosen: Option<String>,
    pub disk_cache: Option<DiskCacheConfig>,
    pub shared_cache: Option<SharedCacheSettings>,
    pub upload: UploadConfig,
}

/// The shortest `--shared-cache-key-file` secret.
const SHORTEST_KEY: usize = 16;

impl MountConfig {
    pub fn from_args(args: MountArgs) -> Result<Self, ConfigError> {
        let (bucket, url_prefix) = parse_source(&args.source)?;
        let writes = WriteMode {
            read_only: args.read_only,
            allow_overwrite: args.allow_overwrite,
            allow_delete: args.allow_delete,
            rename_dir_limit: args.rename_dir_limit,
        };
        const MIB: u64 = 1024 * 1024;
        let target_flag = match args.memory_target {
            Some(mib) => Some(within(mib, 1..=memory_mib(), "--memory-target", "MiB")? * MIB),
            None => None,
        };
        let target = MemoryTarget::choose(target_flag, memory_mib() * MIB);
        let budget = match args.cache_size {
            Some(_) => None,
            None => Some(Budget::under(&target, FetchConfig::default().cache_bytes, writes.read_only)),
        };
        let default_budget = budget.as_ref().map_or(FetchConfig::default().cache_bytes, |b| b.bytes);
        let (fetch, upload) = split_budget(fetch_config(&args, default_budget)?, upload_config(&args)?, writes)?;
        let prefix = match (url_prefix, args.prefix) {
            (Some(_), Some(_)) => {
                return Err(error("a prefix was given both in the s3:// URL and with --prefix; give it once"));
            }
            (Some(p), None) | (None, Some(p)) => normalize_prefix(&p)?,
            (None, None) => String::new(),
        };
        let metadata_ttl = parse_ttl(&args.metadata_ttl, "--metadata-ttl")?;
        let read_timeout = within(args.read_timeout, READ_TIMEOUT_SECS, "--read-timeout", "seconds")?;
        let negative_metadata_ttl = parse_ttl(&args.negative_metadata_ttl, "--negative-metadata-ttl")?;
        check_mountpoint(&args.mountpoint)?;
        if !Path::new("/dev/fuse").exists() {
            return Err(error("/dev/fuse does not exist: load the fuse kernel module (modprobe fuse)"));
        }
        check_fuse_device_access()?;
        let acl = match (args.allow_other, args.allow_root) {
            (true, _) => SessionACL::All,
            (false, true) => SessionACL::RootAndOwner,
            (false, false) => SessionACL::Owner,
        };
        // SAFETY: geteuid and getegid cannot fail and touch no memory.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let fs = FsOptions {
            root_prefix: prefix.clone(),
            uid: args.uid.unwrap_or(euid),
            gid: args.gid.unwrap_or(egid),
            file_mode: parse_mode(&args.file_mode, "--file-mode")?,
            dir_mode: parse_mode(&args.dir_mode, "--dir-mode")?,
            metadata_ttl,
            negative_metadata_ttl,
            read_timeout: Duration::from_secs(read_timeout),
            writes,
            mountpoint: std::fs::canonicalize(&args.mountpoint).unwrap_or_else(|_| args.mountpoint.clone()),
            owner: User { uid: euid, gid: egid },
            shared: args.allow_other,
        };
        let s3 = s3_settings(bucket, &args.s3)?;
        let shared_cache = match &args.shared_cache {
            Some(url) => Some(shared_cache_settings(url, &args.shared, &s3, &prefix)?),
            None => None,
        };
        let disk_cache = disk_cache_config(args.disk_cache, args.disk_cache_size)?;
        let log_level = if args.debug { "debug".to_owned() } else { args.log_level };
        Ok(Self {
            s3,
            prefix,
            mountpoint: args.mountpoint,
            foreground: args.foreground,
            acl,
            fs,
            fetch,
            log_level,
            log_file: args.log_file,
            metrics_addr: args.metrics_addr,
            budget_chosen: budget.and_then(|b| b.chosen),
            disk_cache,
            shared_cache,
            upload,
        })
    }

    pub fn mount_options(&self) -> Vec<MountOption> {
        // Not the kernel's `ro` on a read-only mount: the daemon answers every change with EROFS
        // itself, and the control files (`.fetchfs/prefetch`) stay writable.
        // The source as an fstab entry gives it, so mount(8) (`mount -a`) sees the entry mounted.
        vec![
            MountOption::FSName(format!("s3://{}/{}", self.s3.bucket, self.prefix)),
            // As a kernel option, not fuser's Subtype (which reaches only fusermount3): the type
            // is then `fuse.fetchfs` in /proc/mounts whoever mounts, as the fstab entry says.
            MountOption::CUSTOM(format!("subtype={SUBTYPE}")),
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::DefaultPermissions,
        ]
    }
}

/// The shared cache's bucket (same credentials; its own endpoint and region if given), refused
/// when it is the source's own bucket and prefix.
fn shared_cache_settings(
    url: &str,
    args: &SharedCacheArgs,
    source: &S3Settings,
    source_prefix: &str,
) -> Result<SharedCacheSettings, ConfigError> {
    if !url.starts_with("s3://") {
        return Err(error(format!("--shared-cache {url:?}: give it as s3://BUCKET/PREFIX/")));
    }
    let (bucket, prefix) = parse_source(url)?;
    let prefix = normalize_prefix(prefix.as_deref().unwrap_or(""))?;
    if let Some(url) = &args.shared_cache_endpoint_url {
        check_endpoint_url("--shared-cache-endpoint-url", url)?;
    }
    let endpoint_url = args.shared_cache_endpoint_url.clone().or_else(|| source.endpoint_url.clone());
    if bucket == source.bucket && endpoint_url == source.endpoint_url {
        let overlaps = prefix.starts_with(source_prefix) || source_prefix.starts_with(&prefix);
        if overlaps {
            return Err(error(format!(
                "--shared-cache {url} is inside the mounted bucket and prefix: its blocks would show in the mount; use another bucket or a prefix outside it"
            )));
        }
    }
    let key = match &args.shared_cache_key_file {
        Some(path) => {
            let key = std::fs::read(path)
                .map_err(|e| error(format!("reading --shared-cache-key-file {}: {e}", path.display())))?;
            let key = key.trim_ascii().to_vec();
            if key.len() < SHORTEST_KEY {
                return Err(error(format!(
                    "--shared-cache-key-file {} holds {} bytes: a key needs at least {SHORTEST_KEY}",
                    path.display(),
                    key.len()
                )));
            }
            Some(key)
        }
        None => None,
    };
    let s3 = S3Settings {
        bucket,
        endpoint_url,
        region: args.shared_cache_region.clone().or_else(|| source.region.clone()),
        requester_pays: false,
        ..source.clone()
    };
    Ok(SharedCacheSettings { s3, prefix, key })
}

/// How to reach the bucket, from the flags every command shares.
pub fn s3_settings(bucket: String, args: &S3Args) -> Result<S3Settings, ConfigError> {
    let max_attempts = within(args.max_attempts, MAX_ATTEMPTS, "--max-attempts", "attempts")?;
    if let Some(url) = &args.endpoint_url {
        check_endpoint_url("--endpoint-url", url)?;
    }
    Ok(S3Settings {
        bucket,
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
        force_path_style: args.force_path_style,
        profile: args.profile.clone(),
        no_sign_request: args.no_sign_request,
        requester_pays: args.requester_pays,
        max_attempts,
        // Read here rather than by clap, whose usage line after a mistake would show the variable
        // as if it had been passed.
        ca_bundle_pem: args
            .ca_bundle
            .clone()
            .or_else(|| std::env::var_os("AWS_CA_BUNDLE").filter(|v| !v.is_empty()).map(PathBuf::from))
            .as_deref()
            .map(read_ca_bundle)
            .transpose()?,
    })
}

/// An endpoint is a URL with its scheme: without one the SDK only says "relative URL without a
/// base" when the first request goes out.
fn check_endpoint_url(flag: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(());
    }
    Err(error(format!(
        "{flag} {url:?} has no scheme: write http://{url} (a plain-HTTP server such as MinIO on its default \
         port) or https://{url}"
    )))
}

/// A user who may not open /dev/fuse gets a bare "Permission denied" from deep in the mount; say
/// which file and what to do instead.
fn check_fuse_device_access() -> Result<(), ConfigError> {
    // SAFETY: access reads the NUL-terminated path and touches no other memory.
    if unsafe { libc::access(c"/dev/fuse".as_ptr(), libc::R_OK | libc::W_OK) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    Err(error(format!(
        "cannot open /dev/fuse for reading and writing ({e}): its mode or group keeps this user out \
         (`ls -l /dev/fuse`; it is usually crw-rw-rw-); fix its permissions as root, or mount as root"
    )))
}

/// Limits of the numeric flags: beyond them a value is a typo, or would exhaust the machine.
const READ_TIMEOUT_SECS: RangeInclusive<u64> = 1..=3600;
const MAX_ATTEMPTS: RangeInclusive<u32> = 1..=100;
const MAX_CONNECTIONS: RangeInclusive<usize> = 1..=1024;
/// S3 ranged GETs of up to 5 GiB (its largest part) make sense; more does not.
const PART_SIZE_MIB: RangeInclusive<u64> = 1..=5 * 1024;
const MAX_READAHEAD_MIB: RangeInclusive<u64> = 1..=16 * 1024;

/// `value` of `flag` if it is within `limits`, else one line naming them.
fn within<T: PartialOrd + std::fmt::Display>(
    value: T,
    limits: RangeInclusive<T>,
    flag: &str,
    unit: &str,
) -> Result<T, ConfigError> {
    if limits.contains(&value) {
        return Ok(value);
    }
    Err(error(format!("{flag} {value} is out of range: it must be {} to {} {unit}", limits.start(), limits.end())))
}

/// Sizes a disk cache may be given, in MiB.
const DISK_CACHE_MIB: RangeInclusive<u64> = 64..=1 << 30;

fn disk_cache_config(dir: Option<PathBuf>, size: Option<u64>) -> Result<Option<DiskCacheConfig>, ConfigError> {
    let Some(dir) = dir else { return Ok(None) };
    // The daemon leaves the working directory when it goes to the background.
    let dir = std::path::absolute(&dir).map_err(|e| error(format!("--disk-cache {}: {e}", dir.display())))?;
    let cap = match size {
        Some(mib) => Some(within(mib, DISK_CACHE_MIB, "--disk-cache-size", "MiB")? * 1024 * 1024),
        None => None,
    };
    Ok(Some(DiskCacheConfig { dir, cap }))
}

/// The machine's memory in MiB, the most a cache budget may be; a terabyte when it cannot be read.
fn memory_mib() -> u64 {
    // SAFETY: sysconf only reads system configuration.
    let (pages, page_size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    match (u64::try_from(pages), u64::try_from(page_size)) {
        (Ok(pages), Ok(size)) if pages > 0 && size > 0 => pages.saturating_mul(size) / (1024 * 1024),
        _ => 1024 * 1024,
    }
}

/// Sizes of the first upload parts a file may be given, in MiB: S3's smallest part to its largest.
const UPLOAD_PART_MIB: RangeInclusive<u64> = 5..=5 * 1024;
const UPLOAD_CONCURRENCY: RangeInclusive<usize> = 1..=64;
/// S3 copies up to 5 GiB in one request.
const LARGEST_SINGLE_COPY_MIB: RangeInclusive<u64> = 1..=5 * 1024;

fn upload_config(args: &MountArgs) -> Result<UploadConfig, ConfigError> {
    let defaults = UploadConfig::default();
    Ok(UploadConfig {
        first_part_size: match args.upload_part_size {
            Some(mib) => within(mib, UPLOAD_PART_MIB, "--upload-part-size", "MiB")? * 1024 * 1024,
            None => defaults.first_part_size,
        },
        concurrency: match args.upload_concurrency {
            Some(n) => within(n, UPLOAD_CONCURRENCY, "--upload-concurrency", "parts")?,
            None => defaults.concurrency,
        },
        largest_single_copy: match args.largest_single_copy {
            Some(mib) => within(mib, LARGEST_SINGLE_COPY_MIB, "--largest-single-copy", "MiB")? * 1024 * 1024,
            None => defaults.largest_single_copy,
        },
        // Parts spill where the disk cache is, when there is one: a disk meant for this mount.
        spill_dir: args.disk_cache.clone().unwrap_or_else(|| defaults.spill_dir.clone()),
        deadline: Duration::from_secs(within(args.write_timeout, READ_TIMEOUT_SECS, "--write-timeout", "seconds")?),
        ..defaults
    })
}

/// Splits the one memory budget (`--cache-size`) between reading and, unless the mount is
/// read-only, the parts of files being written (see `memory_budget`).
fn split_budget(
    mut fetch: FetchConfig,
    mut upload: UploadConfig,
    writes: WriteMode,
) -> Result<(FetchConfig, UploadConfig), ConfigError> {
    let split = memory_budget::split(fetch.cache_bytes, writes.read_only, upload.first_part_size).map_err(error)?;
    fetch.cache_bytes = split.reads;
    upload.budget = split.uploads;
    Ok((fetch, upload))
}

/// Sizes of the fetch layer from the flags, each within its limits; the budget is
/// `default_budget` unless `--cache-size` gives it.
fn fetch_config(args: &MountArgs, default_budget: u64) -> Result<FetchConfig, ConfigError> {
    const MIB: u64 = 1024 * 1024;
    let defaults = FetchConfig::default();
    let mib = |value: Option<u64>, default: u64, limits: RangeInclusive<u64>, flag: &str| match value {
        None => Ok(default),
        Some(v) => within(v, limits, flag, "MiB").map(|v| v * MIB),
    };
    let memory = memory_mib();
    let config = FetchConfig {
        cache_bytes: mib(args.cache_size, default_budget, 1..=memory, "--cache-size")?,
        max_readahead: mib(args.max_readahead, defaults.max_readahead, MAX_READAHEAD_MIB, "--max-readahead")?,
        part_size: mib(args.part_size, defaults.part_size, PART_SIZE_MIB, "--part-size")?,
        max_connections: match args.max_connections {
            Some(n) => within(n, MAX_CONNECTIONS, "--max-connections", "connections")?,
            None => defaults.max_connections,
        },
        ..defaults
    };
    let config = FetchConfig {
        shared_fill_bytes: if args.shared_cache.is_some() {
            memory_budget::shared_fills(config.cache_bytes)
        } else {
            0
        },
        ..config
    };
    if config.cache_bytes < 4 * config.part_size {
        return Err(error(format!(
            "--cache-size must be at least four parts ({} MiB with --part-size {} MiB)",
            4 * config.part_size / MIB,
            config.part_size / MIB
        )));
    }
    Ok(config)
}

/// `BUCKET` or `s3://BUCKET[/PREFIX]` -> (bucket, prefix if any).
pub fn parse_source(source: &str) -> Result<(String, Option<String>), ConfigError> {
    let (bucket, prefix) = match source.strip_prefix("s3://") {
        Some(rest) => match rest.split_once('/') {
            Some((bucket, prefix)) if !prefix.is_empty() => (bucket, Some(prefix.to_owned())),
            Some((bucket, _)) => (bucket, None),
            None => (rest, None),
        },
        None if source.contains("://") => {
            return Err(error(format!("{source:?} is not a bucket: use BUCKET or s3://BUCKET/PREFIX/")));
        }
        None => (source, None),
    };
    check_bucket_name(bucket)?;
    Ok((bucket.to_owned(), prefix))
}

/// S3's bucket naming rules: 3-63 characters of lowercase letters, digits, `.` and `-`, starting
/// and ending with a letter or digit, no `..`, not an IP address.
fn check_bucket_name(name: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| Err(error(format!("invalid bucket name {name:?}: {why}")));
    if !(3..=63).contains(&name.len()) {
        return bad("must be 3 to 63 characters long");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        return bad("only lowercase letters, digits, '.' and '-' are allowed");
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !edge_ok(name.bytes().next()) || !edge_ok(name.bytes().last()) {
        return bad("must start and end with a letter or digit");
    }
    if name.contains("..") {
        return bad("must not contain '..'");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not be an IP address");
    }
    Ok(())
}

fn normalize_prefix(prefix: &str) -> Result<String, ConfigError> {
    let trimmed = prefix.trim_start_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if trimmed.split('/').filter(|c| !c.is_empty()).any(|c| c == "." || c == "..") {
        return Err(error(format!("invalid prefix {prefix:?}: '.' and '..' cannot be path components")));
    }
    Ok(if trimmed.ends_with('/') { trimmed.to_owned() } else { format!("{trimmed}/") })
}

fn read_ca_bundle(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| error(format!("reading CA bundle {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(error(format!("CA bundle {} holds no PEM certificate", path.display())));
    }
    Ok(pem)
}

fn parse_mode(text: &str, flag: &str) -> Result<u16, ConfigError> {
    u16::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|&m| m <= 0o7777)
        .ok_or_else(|| error(format!("{flag} {text:?} is not an octal mode like 0644")))
}

/// What `indefinite` stands for: longer than any mount lives, and short enough for the kernel's
/// timeout arithmetic.
const INDEFINITE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn parse_ttl(text: &str, flag: &str) -> Result<Duration, ConfigError> {
    if text.eq_ignore_ascii_case("indefinite") {
        return Ok(INDEFINITE);
    }
    text.parse::<u64>()
        .ok()
        .filter(|&s| Duration::from_secs(s) <= INDEFINITE)
        .map(Duration::from_secs)
        .ok_or_else(|| error(format!("{flag} {text:?} is neither a number of seconds nor `indefinite`")))
}

fn check_mountpoint(path: &Path) -> Result<(), ConfigError> {
    let shown = path.display();
    // Listing asks a FUSE daemon even where stat is answered from the kernel's cache.
    let dead = std::fs::read_dir(path)
        .is_err_and(|e| matches!(e.kind(), std::io::ErrorKind::NotConnected | std::io::ErrorKind::ConnectionAborted));
    if dead && detach_dead_mount(path) {
        eprintln!("fetchfs: cleared the dead mount at {shown} left by a daemon that died");
    }
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => error(format!("mount point {shown} does not exist")),
        std::io::ErrorKind::NotConnected => error(format!(
            "mount point {shown} is a dead mount (transport endpoint is not connected): run `fusermount3 -u {shown}` first"
        )),
        _ => error(format!("mount point {shown}: {e}")),
    })?;
    if !meta.is_dir() {
        return Err(error(format!("mount point {shown} is not a directory")));
    }
    if let Some(source) = std::fs::canonicalize(path).ok().and_then(|p| fetchfs_mounted_at(&p)) {
        return Err(error(format!(
            "{shown} is already a fetchfs mount (of {source}): unmount it first (umount {shown}), or mount elsewhere"
        )));
    }
    let mut entries = std::fs::read_dir(path).map_err(|e| error(format!("mount point {shown}: {e}")))?;
    if entries.next().is_some() {
        return Err(error(format!("mount point {shown} is not empty")));
    }
    Ok(())
}

/// Whether `source` (as an fstab entry or a command line gives it) is mounted by fetchfs at
/// `mountpoint` already: mount(8)'s helper then has nothing to do (`mount -a` run again).
pub fn is_mounted_from(source: &str, mountpoint: &Path) -> bool {
    let Ok((bucket, prefix)) = parse_source(source) else { return false };
    let Ok(prefix) = prefix.as_deref().map_or(Ok(String::new()), normalize_prefix) else { return false };
    let mounted = std::fs::canonicalize(mountpoint).ok().and_then(|p| fetchfs_mounted_at(&p));
    mounted.as_deref() == Some(format!("s3://{bucket}/{prefix}").as_str())
}

/// The source of the fetchfs mount at `path`, if one is there (from /proc/self/mountinfo).
fn fetchfs_mounted_at(path: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let target = path.to_str()?;
    mountinfo.lines().rev().find_map(|line| fetchfs_mount_in(line, target))
}

/// The source of `line` of mountinfo, if it is a fetchfs mount at `target`. Mount points with
/// spaces are escaped there (`\040`), as in /proc/mounts.
fn fetchfs_mount_in(line: &str, target: &str) -> Option<String> {
    let (mount, fs) = line.split_once(" - ")?;
    let point = mount.split(' ').nth(4)?.replace("\\040", " ");
    let mut fs = fs.split(' ');
    let (kind, source) = (fs.next()?, fs.next()?);
    // A daemon before the subtype was a kernel option mounted as root with the type `fuse`: a
    // `fuse` mount whose source is an s3:// URL is ours too.
    let ours = kind == FSTYPE || (kind == "fuse" && source.starts_with("s3://"));
    (point == target && ours).then(|| source.to_owned())
}

/// Detaches the dead FUSE mount at `path` (its daemon was killed), so a new daemon can mount
/// there; says whether it worked.
fn detach_dead_mount(path: &Path) -> bool {
    crate::unmount::detach_mount(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_prefixes() {
        assert_eq!(parse_source("my-bucket").unwrap(), ("my-bucket".into(), None));
        assert_eq!(parse_source("s3://my-bucket").unwrap(), ("my-bucket".into(), None));
        assert_eq!(parse_source("s3://my-bucket/").unwrap(), ("my-bucket".into(), None));
        assert_eq!(parse_source("s3://my-bucket/a/b").unwrap(), ("my-bucket".into(), Some("a/b".into())));
        assert_eq!(normalize_prefix("a/b").unwrap(), "a/b/");
        assert_eq!(normalize_prefix("/a/b/").unwrap(), "a/b/");
        assert!(normalize_prefix("a/../b").is_err());
    }

    #[test]
    fn an_endpoint_without_its_scheme_is_refused_with_the_fix() {
        let said = check_endpoint_url("--endpoint-url", "127.0.0.1:42445").err().map(|e| e.to_string());
        let said = said.unwrap_or_default();
        assert!(said.contains("http://127.0.0.1:42445") && said.contains("https://127.0.0.1:42445"), "{said}");
        assert!(check_endpoint_url("--endpoint-url", "http://127.0.0.1:9000").is_ok());
        assert!(check_endpoint_url("--endpoint-url", "https://s3.example.com").is_ok());
    }

    #[test]
    fn a_fetchfs_mount_is_found_in_mountinfo() {
        let line = "512 28 0:61 / /mnt/my\\040data rw,nosuid,nodev,relatime shared:270 - fuse.fetchfs s3://sample/ rw,user_id=0";
        assert_eq!(fetchfs_mount_in(line, "/mnt/my data"), Some("s3://sample/".into()));
        assert_eq!(fetchfs_mount_in(line, "/mnt/other"), None);
        let other = "513 28 0:62 / /mnt/x rw - fuse.sshfs host:/ rw";
        assert_eq!(fetchfs_mount_in(other, "/mnt/x"), None);
        let as_root = "514 28 0:63 / /mnt/y rw - fuse s3://sample/imgs/ rw";
        assert_eq!(fetchfs_mount_in(as_root, "/mnt/y"), Some("s3://sample/imgs/".into()));
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        for bad in ["ab", "Upper", "under_score", "-start", "end-", "a..b", "192.168.1.1", "http://x"] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
        for good in ["abc", "my.bucket-1", "0bucket9"] {
            assert!(check_bucket_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn ttls_are_seconds_or_indefinite() {
        assert_eq!(parse_ttl("0", "--metadata-ttl").unwrap(), Duration::ZERO);
        assert_eq!(parse_ttl("30", "--metadata-ttl").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_ttl("indefinite", "--metadata-ttl").unwrap(), INDEFINITE);
        for bad in ["-1", "5s", "", "forever", "99999999999999"] {
            assert!(parse_ttl(bad, "--metadata-ttl").is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_out_of_their_range_are_refused_naming_the_limit() {
        assert_eq!(within(5u64, READ_TIMEOUT_SECS, "--read-timeout", "seconds").unwrap(), 5);
        let e = within(u64::MAX, READ_TIMEOUT_SECS, "--read-timeout", "seconds").unwrap_err().to_string();
        assert_eq!(e, "--read-timeout 18446744073709551615 is out of range: it must be 1 to 3600 seconds");
        assert!(within(0u64, READ_TIMEOUT_SECS, "--read-timeout", "seconds").is_err());
        assert!(within(1_000_000usize, MAX_CONNECTIONS, "--max-connections", "connections").is_err());
        assert!(memory_mib() > 0 && memory_mib() < 99_999_999_999, "95 PiB is more than any machine here has");
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("0644", "--file-mode").unwrap(), 0o644);
        assert_eq!(parse_mode("755", "--dir-mode").unwrap(), 0o755);
        assert!(parse_mode("0999", "--file-mode").is_err());
        assert!(parse_mode("rw-r--r--", "--file-mode").is_err());
    }
}
