//! Reads one object with N parallel ranged GETs straight from an S3 endpoint and prints MB/s: the
//! ceiling fetchfs is measured against (with `--upload`, also the ceiling of writing). With `--local SIZE` it starts its own test server holding
//! one generated object of that size, under the chosen profile.

use clap::Parser;
use mount_tests::ceiling;
use mount_tests::profile::Profile;
use mount_tests::server::{Credentials, ServerConfig, StoredObject, TestServer};

#[derive(Parser)]
#[command(about = "Measure parallel ranged GET throughput straight from an S3 endpoint")]
struct Args {
    /// Endpoint to read from (ignored with --local).
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    endpoint_url: String,
    #[arg(long, default_value = "bench")]
    bucket: String,
    #[arg(long, default_value = "ceiling.bin")]
    key: String,
    /// Comma-separated numbers of parallel connections to try.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    connections: Vec<usize>,
    /// Bytes per ranged GET.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    part_size: u64,
    /// Start an in-process test server with one object of this many MiB, instead of --endpoint-url.
    #[arg(long, value_name = "MIB")]
    local: Option<u64>,
    /// Network profile of the --local server.
    #[arg(long, value_enum, default_value = "loopback")]
    profile: Profile,
    /// Access key (defaults to the test server's).
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Also write an object of this many MiB as a multipart upload (parts of --part-size), with
    /// each number of --connections parts in flight: the ceiling of writing.
    #[arg(long, value_name = "MIB")]
    upload: Option<u64>,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("raw-ceiling: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let mut credentials = Credentials::default();
    if let (Some(a), Some(s)) = (&args.access_key, &args.secret_key) {
        credentials = Credentials { access_key: a.clone(), secret_key: s.clone() };
    }
    let server = match args.local {
        Some(mib) => {
            let server =
                TestServer::start(ServerConfig { credentials: Some(credentials.clone()), ..Default::default() })
                    .map_err(|e| format!("starting the test server: {e}"))?;
            server.storage().create_bucket(&args.bucket).map_err(|e| e.to_string())?;
            let data = mount_tests::data::content(1, (mib * 1024 * 1024) as usize);
            server.storage().put(&args.bucket, &args.key, StoredObject::new(data, None)).map_err(|e| e.to_string())?;
            args.profile.apply(server.knobs());
            Some(server)
        }
        None => None,
    };
    let endpoint = server.as_ref().map_or(args.endpoint_url.clone(), TestServer::endpoint_url);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let store = mount_tests::client::fetchfs_store(&endpoint, &credentials, &args.bucket).await?;
        println!("object {}/{}, part size {} bytes", args.bucket, args.key, args.part_size);
        for &n in &args.connections {
            let run = ceiling::read_all(&store, &args.key, n, args.part_size).await?;
            println!("connections {n:>3}: {:>8.1} MB/s ({:.2} s)", run.mb_per_s(), run.elapsed.as_secs_f64());
        }
        if let Some(mib) = args.upload {
            let data = mount_tests::data::content(2, (mib * 1024 * 1024) as usize);
            println!("upload of {mib} MiB, part size {} bytes", args.part_size);
            for &n in &args.connections {
                let mb_per_s =
                    ceiling::upload_all(&store, "ceiling-upload.bin", data.clone(), n, args.part_size as usize).await?;
                println!("connections {n:>3}: {mb_per_s:>8.1} MB/s");
            }
        }
        Ok(())
    })
}
