//! Command-line arguments as the user types them (clap derive). `config` checks them and builds
//! the `MountConfig` the rest of the program uses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fetchfs",
    version,
    about = "Mount an S3 bucket as a fast local directory: read objects, write new ones",
    long_about = "fetchfs mounts an S3 bucket (AWS or any S3-compatible endpoint), or a prefix of one, \
as a local directory. Ordinary tools (cat, cp, dd, tar, python) then read objects as files; \
each read becomes ranged GETs pinned to the object's ETag, so an object replaced while open gives \
ESTALE rather than mixed bytes. New files written front to back become objects, uploaded while \
they are written and complete at close or fsync (--read-only refuses every change; replacing and \
appending to objects need --allow-overwrite, deleting them --allow-delete).\n\n\
Renames are server-side copies then deletes, each pinned to the source's ETag: not atomic (both \
names exist between the two; a failure leaves both, never neither) and they copy the bytes inside \
S3. A file or directory this mount wrote may be renamed into a free name on a default mount; other \
objects need --allow-delete, replacing a name --allow-overwrite, and a directory of more than \
--rename-dir-limit objects gives EXDEV (mv then copies). An append rewrites the object as old bytes \
plus new at close, only if no other client changed it meanwhile (else the close fails with EIO).\n\n\
Credentials come from the AWS default chain: environment (AWS_ACCESS_KEY_ID, \
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), the shared config and credentials files (--profile), \
web identity, and instance metadata. Secrets are never taken on the command line."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount a bucket (or a prefix of one) at a directory.
    Mount(Box<MountArgs>),
    /// Measure, on this network, the download techniques fetchfs chooses between, and recommend
    /// --part-size and --max-connections.
    Bench(Box<BenchArgs>),
    /// Fetch files of a mount before they are read, in the order given (through the mount's
    /// `.fetchfs/prefetch`): with --disk-cache they go to disk, else into memory, as far as the
    /// cache holds.
    Prefetch(PrefetchArgs),
    /// Print a manual page (roff) on standard output, for packaging: fetchfs(8), or with `mount`,
    /// fetchfs-mount(8).
    #[command(hide = true)]
    Manpage { subcommand: Option<String> },
}

/// Where the shared cache is, beyond its bucket.
#[derive(Args, Debug, Clone, Default)]
pub struct SharedCacheArgs {
    /// The shared cache's endpoint, when it is not the source's.
    #[arg(long, value_name = "URL", requires = "shared_cache")]
    pub shared_cache_endpoint_url: Option<String>,
    /// The shared cache's region, when it is not the source's.
    #[arg(long, value_name = "REGION", requires = "shared_cache")]
    pub shared_cache_region: Option<String>,
    /// A secret every node holds (at least 16 bytes): cached blocks carry a MAC under it, so a
    /// client without it cannot make the nodes serve its bytes.
    #[arg(long, value_name = "FILE", requires = "shared_cache")]
    pub shared_cache_key_file: Option<PathBuf>,
}

/// How to reach S3: shared by every command.
#[derive(Args, Debug)]
pub struct S3Args {
    /// S3 endpoint, for S3-compatible services (e.g. http://127.0.0.1:9000).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// AWS region of the bucket (default: from the AWS config chain, else us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// Address buckets as https://endpoint/BUCKET rather than https://BUCKET.endpoint.
    #[arg(long)]
    pub force_path_style: bool,
    /// Named profile from the AWS config and credentials files.
    #[arg(long)]
    pub profile: Option<String>,
    /// Send unsigned requests (public buckets); no credentials are looked up.
    #[arg(long)]
    pub no_sign_request: bool,
    /// Agree to pay for requests to a requester-pays bucket.
    #[arg(long)]
    pub requester_pays: bool,
    /// PEM file of certificate authorities to trust for HTTPS endpoints, in addition to the
    /// system's (default: $AWS_CA_BUNDLE, as the AWS CLI reads it).
    #[arg(long, value_name = "PEM")]
    pub ca_bundle: Option<PathBuf>,
    /// Most attempts of one S3 request (the first and its retries, with exponential backoff and
    /// jitter) before the failure reaches the reader.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_attempts: u32,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// The bucket: `BUCKET` or `s3://BUCKET[/PREFIX/]`.
    pub source: String,
    /// An existing, empty directory to mount at.
    pub mountpoint: PathBuf,
    /// Mount only the keys under this prefix (a trailing `/` is added if missing).
    #[arg(long)]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// Stay in the foreground instead of returning once the mount is ready.
    #[arg(short, long)]
    pub foreground: bool,
    /// Let other users read the mount (needs `user_allow_other` in /etc/fuse.conf unless root).
    #[arg(long, conflicts_with = "allow_root")]
    pub allow_other: bool,
    /// Let root read the mount as well as the mounting user.
    #[arg(long)]
    pub allow_root: bool,
    /// Owner of every file and directory (default: the mounting user).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group of every file and directory (default: the mounting user's group).
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permission bits of files, in octal.
    #[arg(long, default_value = "0644")]
    pub file_mode: String,
    /// Permission bits of directories, in octal.
    #[arg(long, default_value = "0755")]
    pub dir_mode: String,
    /// Mount read-only: every change answers EROFS. (Without it, new files can be written.)
    #[arg(long)]
    pub read_only: bool,
    /// Let a program replace an existing object whole (opening it with O_TRUNC), append to it
    /// (O_APPEND: at close the object becomes its old bytes then the new, only if no other client
    /// changed it meanwhile), or rename a file onto its name.
    #[arg(long)]
    pub allow_overwrite: bool,
    /// Let unlink (rm) delete objects, and rename objects this mount did not write.
    #[arg(long)]
    pub allow_delete: bool,
    /// Most objects renaming a directory may copy; above it, rename answers EXDEV and `mv`
    /// copies file by file.
    #[arg(long, default_value = "1000", value_name = "N")]
    pub rename_dir_limit: usize,
    /// Size of the first parts of a file being written, in MiB (default 8); parts double every
    /// 1000 so that large files fit in S3's 10,000 parts. Files up to it go up in one PUT.
    #[arg(long, value_name = "MIB")]
    pub upload_part_size: Option<u64>,
    /// Objects larger than this many MiB are copied on the server in parts, not in one request
    /// (renames, appends). S3's limit for one is 5 GiB, the default; tests lower it.
    #[arg(long, value_name = "MIB", hide = true)]
    pub largest_single_copy: Option<u64>,
    /// Most parts of one file going up at once (default 8).
    #[arg(long, value_name = "N")]
    pub upload_concurrency: Option<usize>,
    /// Seconds a listing or lookup stays valid before S3 is asked again, or `indefinite` for a
    /// bucket that does not change while mounted.
    #[arg(long, default_value = "5", value_name = "SECONDS|indefinite")]
    pub metadata_ttl: String,
    /// Seconds a name found missing stays missing before S3 is asked again (0: always ask), or
    /// `indefinite`.
    #[arg(long, default_value = "5", value_name = "SECONDS|indefinite")]
    pub negative_metadata_ttl: String,
    /// Memory budget of block data in MiB, for the whole mount: cached blocks, blocks being
    /// received and free buffers (default 512, or what fits under the memory target).
    #[arg(long, value_name = "MIB")]
    pub cache_size: Option<u64>,
    /// Memory the daemon aims to stay under, in MiB (default: three quarters of the container's
    /// memory limit when one is set, else of the machine's memory); `--cache-size` defaults to
    /// what fits under it.
    #[arg(long, value_name = "MIB")]
    pub memory_target: Option<u64>,
    /// Largest readahead window of one sequential reader, in MiB (default 128); the windows of
    /// files read at once share three quarters of the cache.
    #[arg(long, value_name = "MIB")]
    pub max_readahead: Option<u64>,
    /// Size of each ranged GET of readahead, in MiB; objects up to this size are fetched whole
    /// at their first read (default 4).
    #[arg(long, value_name = "MIB")]
    pub part_size: Option<u64>,
    /// Keep object versions on local disk in DIR, under the memory cache: re-reads and later
    /// mounts with the same DIR read from there, and files whole on disk are read by the kernel
    /// itself (FUSE passthrough, as root). DIR must belong to this user and be writable by no one
    /// else (not by its group, not by anyone; fetchfs keeps its files in a 0700 subdirectory), and
    /// be on a local filesystem; several mounts may share it.
    #[arg(long, value_name = "DIR")]
    pub disk_cache: Option<PathBuf>,
    /// Most space the disk cache takes, in MiB (default: the smaller of 100 GiB and half the free
    /// space of its filesystem). It always leaves a twentieth of the filesystem free (at most
    /// 4 GiB).
    #[arg(long, value_name = "MIB", requires = "disk_cache")]
    pub disk_cache_size: Option<u64>,
    /// A bucket near the cluster that every node's mount shares as a cache (S3 Express One Zone,
    /// MinIO, Ceph): blocks one node fetched are read from it by the others. Checked on every
    /// read; fetchfs never deletes from it (give it a lifecycle rule).
    #[arg(long, value_name = "s3://BUCKET/PREFIX/")]
    pub shared_cache: Option<String>,
    #[command(flatten)]
    pub shared: SharedCacheArgs,
    /// Most readahead GETs in flight at once, for the whole mount (default 32).
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Seconds one read may take before it fails with EIO instead of waiting on.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub read_timeout: u64,
    /// Seconds one request of an upload (a part, a small file's PUT) may take before the write,
    /// close or fsync waiting for it fails with EIO and the upload is aborted; the completion of a
    /// large file gets a second more per 32 MiB.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub write_timeout: u64,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "warn")]
    pub log_level: String,
    /// Debug logging (same as --log-level debug).
    #[arg(short, long)]
    pub debug: bool,
    /// Append logs to this file (default: standard error, which a background daemon closes).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PrefetchArgs {
    /// Files and directories (whole, recursively, in name order) in one fetchfs mount.
    #[arg(required_unless_present = "from")]
    pub paths: Vec<PathBuf>,
    /// Also the files listed in FILE, one path a line (`-`: standard input), in that order.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Show progress (files, bytes, rate) and return once the files are fetched.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The object to read: `s3://BUCKET/KEY` (a large one: each technique reads for --duration).
    pub object: String,
    #[command(flatten)]
    pub s3: S3Args,
    /// Seconds each technique runs (bounded, so a huge object is safe).
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    pub duration: f64,
    /// Numbers of parallel ranged GETs to try.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    pub connections: Vec<usize>,
    /// Part sizes (MiB) to try with each number of GETs.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16", value_name = "MIB")]
    pub part_sizes: Vec<u64>,
    /// Also read the object through fetchfs mounted at DIR (at DIR/KEY).
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw MB/s against connections, one line per part size, as SVG to this file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

/// The names mount(8) runs fetchfs under, as the helper for `mount -t fuse.fetchfs` (or `-t fetchfs`).
pub const HELPER_NAMES: [&str; 2] = ["mount.fuse.fetchfs", "mount.fetchfs"];

/// Mount options that say how mount(8) or systemd should treat the line, not how to mount: fetchfs
/// ignores them. (`ro` is not among them: it becomes `--read-only`.)
fn is_generic_option(option: &str) -> bool {
    const GENERIC: [&str; 21] = [
        "defaults",
        "_netdev",
        "nofail",
        "auto",
        "noauto",
        "user",
        "nouser",
        "users",
        "owner",
        "group",
        "rw",
        "dev",
        "nodev",
        "suid",
        "nosuid",
        "exec",
        "noexec",
        "atime",
        "noatime",
        "relatime",
        "nodiratime",
    ];
    GENERIC.contains(&option) || option.starts_with("x-") || option.starts_with("comment=")
}

/// What a mount(8) helper call asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum HelperCall {
    /// `fetchfs mount ...` arguments.
    Mount(Vec<String>),
    /// `-f` (fake): check nothing, mount nothing, succeed.
    Fake,
}

/// Turns `mount.fuse.fetchfs SOURCE DIR [-sfnv] [-o OPTIONS] [-t TYPE]` into `fetchfs mount`
/// arguments: each `-o` option `name=value` becomes `--name value` and `flag` becomes `--flag` (with
/// `_` read as `-`), so clap checks them as it checks flags typed by hand.
pub fn helper_args(args: &[String]) -> Result<HelperCall, String> {
    let mut positional = Vec::new();
    let mut flags = Vec::new();
    let mut fake = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-o" => {
                let options = rest.next().ok_or("-o needs a list of options")?;
                for option in options.split(',').filter(|o| !o.is_empty() && !is_generic_option(o)) {
                    if option == "ro" {
                        flags.push("--read-only".to_owned());
                        continue;
                    }
                    let (name, value) = match option.split_once('=') {
                        Some((name, value)) => (name, Some(value)),
                        None => (option, None),
                    };
                    flags.push(format!("--{}", name.replace('_', "-")));
                    flags.extend(value.map(str::to_owned));
                }
            }
            "-t" => {
                rest.next();
            }
            "-f" => fake = true,
            "-s" | "-n" | "-v" => {}
            "-N" => return Err("mounting in another namespace (-N) is not supported".into()),
            other if other.starts_with('-') => return Err(format!("unknown mount helper option {other}")),
            other => positional.push(other.to_owned()),
        }
    }
    let [source, dir] = <[String; 2]>::try_from(positional)
        .map_err(|got| format!("expected SOURCE and DIRECTORY, got {} arguments", got.len()))?;
    if fake {
        return Ok(HelperCall::Fake);
    }
    let mut mount = vec!["fetchfs".to_owned(), "mount".to_owned()];
    mount.extend(flags);
    mount.push("--".to_owned());
    mount.extend([source, dir]);
    Ok(HelperCall::Mount(mount))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn helper_options_become_flags() {
        let call = helper_args(&strings(&[
            "s3://b/p/",
            "/mnt/data",
            "-o",
            "rw,_netdev,nofail,x-systemd.automount,allow_other,endpoint_url=http://h:9000,force_path_style,metadata_ttl=60",
            "-t",
            "fuse.fetchfs",
        ]));
        let expected = strings(&[
            "fetchfs",
            "mount",
            "--allow-other",
            "--endpoint-url",
            "http://h:9000",
            "--force-path-style",
            "--metadata-ttl",
            "60",
            "--",
            "s3://b/p/",
            "/mnt/data",
        ]);
        assert_eq!(call, Ok(HelperCall::Mount(expected.clone())));
        let Ok(HelperCall::Mount(args)) = call else { unreachable!() };
        assert!(Cli::try_parse_from(args).is_ok(), "clap accepts the translation");
    }

    #[test]
    fn an_unknown_option_is_refused_by_clap_by_name() {
        let Ok(HelperCall::Mount(args)) = helper_args(&strings(&["b", "/mnt", "-o", "frobnicate=3"])) else {
            panic!("translated")
        };
        let error = Cli::try_parse_from(args).unwrap_err().to_string();
        assert!(error.contains("--frobnicate"), "{error}");
    }

    #[test]
    fn fake_mounts_and_bad_calls() {
        assert_eq!(helper_args(&strings(&["b", "/mnt", "-f", "-o", "ro"])), Ok(HelperCall::Fake));
        let read_only = strings(&["fetchfs", "mount", "--read-only", "--", "b", "/mnt"]);
        assert_eq!(helper_args(&strings(&["b", "/mnt", "-o", "ro,nofail"])), Ok(HelperCall::Mount(read_only)));
        assert!(helper_args(&strings(&["b"])).is_err());
        assert!(helper_args(&strings(&["b", "/mnt", "-o"])).is_err());
        assert!(helper_args(&strings(&["b", "/mnt", "-N", "x"])).is_err());
    }
}
