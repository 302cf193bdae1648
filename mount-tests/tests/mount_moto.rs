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

#[test]
fn a_file_rewritten_after_a_shell_s_early_close_never_replaces_another_client_s_object() {
    // `{ ...; } > f`: the shell's own close of f comes first and makes the empty object; the bytes
    // written after replace only that empty object, never what another client put there meanwhile.
    let moto = mount_tests::moto::shared().expect("moto server");
    let credentials = Credentials::default();
    let bucket = format!("guard-{:08x}", fastrand::u32(..));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = s3_client(&moto.endpoint_url, &credentials, Retries::Standard);
    runtime.block_on(async { client.create_bucket().bucket(&bucket).send().await.expect("create bucket") });
    let mount = Mount::new(&moto.endpoint_url, &credentials, &bucket, &[]).unwrap_or_else(|e| panic!("{e}"));
    let mut shell = Command::new("sh")
        .args(["-c", "{ sleep 3; echo fetchfs-bytes; } > raced.txt"])
        .current_dir(&mount.dir)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    runtime.block_on(async {
        while client.head_object().bucket(&bucket).key("raced.txt").send().await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the shell's early close made the empty object");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let other = aws_sdk_s3::primitives::ByteStream::from_static(b"OTHER-CLIENT-DATA");
        client.put_object().bucket(&bucket).key("raced.txt").body(other).send().await.expect("another client's put");
    });
    let _ = shell.wait();
    let kept = runtime.block_on(async {
        let object = client.get_object().bucket(&bucket).key("raced.txt").send().await.expect("get");
        object.body.collect().await.expect("body").into_bytes()
    });
    assert_eq!(kept, Bytes::from_static(b"OTHER-CLIENT-DATA"));
}

/// The object at `key` in moto, if there is one.
fn moto_object(
    runtime: &tokio::runtime::Runtime,
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Option<Bytes> {
    runtime.block_on(async {
        let object = client.get_object().bucket(bucket).key(key).send().await.ok()?;
        Some(object.body.collect().await.expect("body").into_bytes())
    })
}

#[test]
fn checkpoints_are_saved_renamed_and_logs_appended_on_moto() {
    let moto = mount_tests::moto::shared().expect("moto server");
    let credentials = Credentials::default();
    let bucket = format!("ckpt-{:08x}", fastrand::u32(..));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = s3_client(&moto.endpoint_url, &credentials, Retries::Standard);
    let large = data::content(11, 24 * MIB);
    runtime.block_on(async {
        client.create_bucket().bucket(&bucket).send().await.expect("create bucket");
        upload(&client, &bucket, "train.log", Bytes::from_static(b"step 1\n"), 5 * MIB).await.expect("upload");
        upload(&client, &bucket, "big.log", data::content(12, 6 * MIB), 5 * MIB).await.expect("upload");
        upload(&client, &bucket, "dataset.bin", large.clone(), 5 * MIB).await.expect("upload");
    });
    let args = ["--allow-overwrite", "--allow-delete", "--largest-single-copy", "8"];
    let mount = Mount::new(&moto.endpoint_url, &credentials, &bucket, &args).unwrap_or_else(|e| panic!("{e}"));
    // What torch.distributed.checkpoint's file writer does (shards, then its metadata under a
    // temporary name renamed), and Orbax's rename of a finished step's directory.
    let script = format!(
        r#"
import os, pathlib
root = pathlib.Path('{root}')
tmp = root / 'step_10.orbax-checkpoint-tmp-1'
tmp.mkdir(parents=True, exist_ok=True)
for rank in range(2):
    with open(tmp / f'__{{rank}}_0.distcp', 'wb') as f:
        f.write(bytes([rank]) * (6 * 1024 * 1024))
        os.fsync(f.fileno())
with open(tmp / '.metadata.tmp', 'wb') as f:
    f.write(b'metadata' * 100)
    os.fsync(f.fileno())
os.rename(tmp / '.metadata.tmp', tmp / '.metadata')
os.rename(tmp, root / 'step_10')
print(sorted(os.listdir(root / 'step_10')))
"#,
        root = mount.dir.display()
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "['.metadata', '__0_0.distcp', '__1_0.distcp']");
    for rank in 0..2u8 {
        let shard = moto_object(&runtime, &client, &bucket, &format!("step_10/__{rank}_0.distcp"));
        assert!(shard == Some(Bytes::from(vec![rank; 6 * MIB])), "shard {rank}");
    }
    assert_eq!(
        moto_object(&runtime, &client, &bucket, "step_10/.metadata"),
        Some(Bytes::from(b"metadata".repeat(100)))
    );
    assert_eq!(moto_object(&runtime, &client, &bucket, "step_10.orbax-checkpoint-tmp-1/.metadata"), None);

    // Appends: a small log fetched and sent again, a large one copied on the server.
    let out = mount.sh("echo 'step 2' >> train.log && printf tail >> big.log");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(moto_object(&runtime, &client, &bucket, "train.log"), Some(Bytes::from_static(b"step 1\nstep 2\n")));
    let mut big = data::content(12, 6 * MIB).to_vec();
    big.extend_from_slice(b"tail");
    assert!(moto_object(&runtime, &client, &bucket, "big.log") == Some(Bytes::from(big)), "big.log appended");

    // A rename above the single-copy limit, in UploadPartCopy parts.
    std::fs::rename(mount.path("dataset.bin"), mount.path("moved.bin")).unwrap();
    assert!(moto_object(&runtime, &client, &bucket, "moved.bin") == Some(large), "moved.bin");
    assert_eq!(moto_object(&runtime, &client, &bucket, "dataset.bin"), None);
}
