//! Command-line arguments as the user types them (clap derive). `config` checks them and builds
//! the `MountConfig` the rest of the program uses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fetchfs",
    version,
    about = "Mount an S3 bucket as a fast, read-only local directory",
    long_about = "fetchfs mounts an S3 bucket (AWS or any S3-compatible endpoint), or a prefix of one, \
as a read-only directory. Ordinary tools (cat, cp, dd, tar, python) then read objects as files; \
each read becomes ranged GETs pinned to the object's ETag, so an object replaced while open gives \
ESTALE rather than mixed bytes.\n\n\
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
    Mount(MountArgs),
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
    /// Mount read-only. This is the only mode for now: every write answers EROFS.
    #[arg(long, default_value_t = true)]
    pub read_only: bool,
    /// Agree to pay for requests to a requester-pays bucket.
    #[arg(long)]
    pub requester_pays: bool,
    /// PEM file of certificate authorities to trust for HTTPS endpoints, in addition to the
    /// system's.
    #[arg(long, env = "AWS_CA_BUNDLE", value_name = "PEM")]
    pub ca_bundle: Option<PathBuf>,
    /// Seconds a listing or lookup stays valid before S3 is asked again, or `indefinite` for a
    /// bucket that does not change while mounted.
    #[arg(long, default_value = "5", value_name = "SECONDS|indefinite")]
    pub metadata_ttl: String,
    /// Seconds a name found missing stays missing before S3 is asked again (0: always ask), or
    /// `indefinite`.
    #[arg(long, default_value = "5", value_name = "SECONDS|indefinite")]
    pub negative_metadata_ttl: String,
    /// Memory budget of the block cache in MiB, for the whole mount (default 512).
    #[arg(long, value_name = "MIB")]
    pub cache_size: Option<u64>,
    /// Largest readahead window of one sequential reader, in MiB (default 128).
    #[arg(long, value_name = "MIB")]
    pub max_readahead: Option<u64>,
    /// Size of each ranged GET of readahead, in MiB; objects up to this size are fetched whole
    /// at their first read (default 4).
    #[arg(long, value_name = "MIB")]
    pub part_size: Option<u64>,
    /// Most readahead GETs in flight at once, for the whole mount (default 32).
    #[arg(long)]
    pub max_connections: Option<usize>,
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
