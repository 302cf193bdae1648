//! The test S3 server as a standalone process, for the benchmark and the README's demo. Prints the
//! endpoint URL on its first line of output and serves until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mount_tests::server::{Credentials, Knobs, ServerConfig, Storage, TestServer};

#[derive(Parser)]
#[command(about = "A local S3-compatible server for testing fetchfs")]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// Keep objects in this directory, so a restarted server has them again (default: memory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Create this bucket at startup if it does not exist.
    #[arg(long)]
    bucket: Vec<String>,
    /// Fill the `sample` bucket with the README demo's dataset.
    #[arg(long)]
    sample: bool,
    /// Serve unsigned requests only, with no credentials.
    #[arg(long, conflicts_with_all = ["access_key", "secret_key"])]
    anonymous: bool,
    #[arg(long)]
    access_key: Option<String>,
    #[arg(long, env = "TEST_S3_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Milliseconds before each response's first byte.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Per-connection cap in MB/s (10^6 bytes) on responses (downloads).
    #[arg(long)]
    bandwidth_mbps: Option<u64>,
    /// Per-connection cap in MB/s on request bodies (uploads).
    #[arg(long)]
    upload_bandwidth_mbps: Option<u64>,
    /// ETags of PUTs not MD5 digests, as S3 Express One Zone's directory buckets give them
    /// (cheaper for a cache bucket sharing cores with the client).
    #[arg(long)]
    express_etags: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("test-s3-server: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let storage = match &args.dir {
        Some(dir) => Storage::in_directory(dir).map_err(|e| format!("opening {}: {e}", dir.display()))?,
        None => Storage::in_memory(),
    };
    for bucket in &args.bucket {
        if !storage.bucket_exists(bucket) {
            storage.create_bucket(bucket).map_err(|e| format!("creating bucket {bucket}: {e}"))?;
        }
    }
    if args.sample {
        mount_tests::sample::seed(&storage)?;
    }
    let knobs = Arc::new(Knobs::default());
    knobs.set_first_byte_delay(Duration::from_millis(args.delay_ms));
    knobs.set_bandwidth(args.bandwidth_mbps.map(|m| m * 1_000_000));
    knobs.set_upload_bandwidth(args.upload_bandwidth_mbps.map(|m| m * 1_000_000));
    knobs.set_express_etags(args.express_etags);
    let defaults = Credentials::default();
    let credentials = (!args.anonymous).then(|| Credentials {
        access_key: args.access_key.unwrap_or(defaults.access_key),
        secret_key: args.secret_key.unwrap_or(defaults.secret_key),
    });
    let server =
        TestServer::start(ServerConfig { port: args.port, storage: Arc::new(storage), knobs, credentials, tls: None })
            .map_err(|e| format!("listening on 127.0.0.1:{}: {e}", args.port))?;
    println!("{}", server.endpoint_url());
    wait_for_signal().map_err(|e| format!("waiting for a signal: {e}"))?;
    server.stop();
    Ok(())
}

fn wait_for_signal() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })
}
