//! The mount against moto, an independent S3 implementation: a smaller set of the same checks,
//! so fetchfs is not only proven against the server we wrote ourselves.

use std::process::Command;

use bytes::Bytes;
use mount_tests::client::{Retries, s3_client, upload};
use mount_tests::data;
use mount_tests::mount::Mount;
use mount_tests::server::Credentials;

const MIB: usize = 1024 * 1024;

fn objects() -> Vec<(&'static str, Bytes)> {
    vec![
        ("empty", Bytes::new()),
        ("nested/deeper/leaf.bin", data::content(1, 5000)),
        ("with space.txt", data::content(2, 10)),
        ("ünïcødé.txt", data::content(3, 20)),
        ("plus+sign", data::content(4, 30)),
        ("percent%25literal", data::content(5, 40)),
        ("both", data::content(6, 50)),
        ("both/inside", data::content(7, 60)),
        ("marker-dir/", Bytes::new()),
        ("part-plus-one.bin", data::content(8, 8 * MIB + 1)),
    ]
}

#[test]
fn standard_tools_read_exact_bytes_from_moto() {
    let moto = mount_tests::moto::shared().expect("moto server");
    let credentials = Credentials::default();
    let bucket = format!("mount-{:08x}", fastrand::u32(..));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = s3_client(&moto.endpoint_url, &credentials, Retries::Standard);
        client.create_bucket().bucket(&bucket).send().await.expect("create bucket");
        for (key, body) in objects() {
            upload(&client, &bucket, key, body, 5 * MIB).await.expect("upload");
        }
    });
    let mount = Mount::new(&moto.endpoint_url, &credentials, &bucket, &[]).unwrap_or_else(|e| panic!("{e}"));

    let out = Command::new("ls").arg("-la").arg(&mount.dir).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.lines().any(|l| l.starts_with('d') && l.ends_with(" both")), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with('d') && l.ends_with(" marker-dir")), "{listing}");
    assert_eq!(std::fs::read_dir(mount.path("marker-dir")).unwrap().count(), 0);

    for (key, body) in objects().into_iter().filter(|(k, _)| *k != "both" && !k.ends_with('/')) {
        let read = std::fs::read(mount.path(key)).unwrap_or_else(|e| panic!("read {key}: {e}"));
        assert!(read == body, "{key} differs");
        assert_eq!(std::fs::metadata(mount.path(key)).unwrap().len(), body.len() as u64);
    }
    let found = mount.sh("find . -type f | sort");
    let found = String::from_utf8_lossy(&found.stdout);
    assert_eq!(found.lines().count(), 8, "{found}");
}
