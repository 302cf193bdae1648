//! `fetchfs bench` against the test server, on the loopback and s3-like profiles: the table, the
//! JSON and the plot are produced, and on the s3-like profile it recommends more than one
//! connection. With `--mount`, it also reads through a real mount.

use std::process::Command;

use mount_tests::data;
use mount_tests::mount::{Mount, fetchfs_command, fresh_dir};
use mount_tests::profile::Profile;
use mount_tests::server::{ServerConfig, StoredObject, TestServer};

const BUCKET: &str = "bench";
const SIZE: usize = 256 * 1024 * 1024;

fn bench(server: &TestServer, extra: &[&str], out: &std::path::Path) -> (String, serde_json::Value) {
    let credentials = server.credentials().cloned().unwrap_or_default();
    let json = out.join("bench.json");
    let plot = out.join("bench.svg");
    let output = fetchfs_command(Some(&credentials))
        .args(["bench", &format!("s3://{BUCKET}/big.bin"), "--endpoint-url", &server.endpoint_url()])
        .args(["--force-path-style", "--duration", "0.5", "--connections", "1,4,16", "--part-sizes", "4,8"])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&plot)
        .args(extra)
        .output()
        .expect("run fetchfs bench");
    let table = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "fetchfs bench failed: {}{table}", String::from_utf8_lossy(&output.stderr));
    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    assert!(svg.contains("<svg") && svg.contains("MB/s") && svg.contains("8 MiB parts"), "an SVG plot");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON was written")).expect("valid JSON");
    (table, json)
}

#[test]
fn bench_measures_both_profiles_and_recommends_parallel_gets_on_the_s3_like_one() {
    let server = TestServer::start(ServerConfig::default()).expect("start server");
    server.storage().create_bucket(BUCKET).unwrap();
    server.storage().put(BUCKET, "big.bin", StoredObject::new(data::content(1, SIZE), None)).unwrap();
    let out = fresh_dir("bench-out");

    let (table, json) = bench(&server, &[], &out);
    for row in ["one GET stream", "first byte, warm connection", "TCP connect", "16 GETs x 8 MiB parts", "recommended"]
    {
        assert!(table.contains(row), "{row} missing from:\n{table}");
    }
    assert_eq!(json["size"], SIZE as u64);
    assert_eq!(json["parallel"].as_array().map(Vec::len), Some(6));
    assert!(json["probe_stream"]["rcvbuf_8_mib"]["mb_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{json}");

    Profile::S3Like.apply(server.knobs());
    let mount = Mount::of(&server, BUCKET, &[]);
    let mount_dir = mount.dir.to_string_lossy().into_owned();
    let (table, json) = bench(&server, &["--mount", &mount_dir], &out);
    let recommended = json["recommended"]["max_connections"].as_u64().unwrap_or(0);
    assert!(recommended > 1, "on the s3-like profile more than one connection wins: {table}");
    let single = json["single_stream_mb_s"].as_f64().unwrap_or(0.0);
    assert!(single > 0.0 && single < 200.0, "one stream is capped near 80 MB/s: {single}");
    assert!(json["mount"]["mb_s"].as_f64().unwrap_or(0.0) > 0.0, "{table}");
    assert!(table.contains("read through the mount"));
    server.knobs().clear();
    drop(mount);
    let _ = Command::new("rm").arg("-rf").arg(&out).status();
}

#[test]
fn bench_refuses_a_source_without_a_key() {
    let out = fetchfs_command(None).args(["bench", "s3://some-bucket"]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("names no object"), "{out:?}");
}
