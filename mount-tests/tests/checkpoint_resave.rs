//! Checkpoints saved again into the same place, as training jobs do (`latest/`, the same
//! `model.pt` each epoch), with the call sequences of torch.distributed.checkpoint's file writer,
//! `torch.save` and `datasets`' `save_to_disk` replayed by Python on real mounts, against our
//! server and moto. A mount replaces and deletes what it wrote itself without flags, pinned to the
//! ETag it gave; another mount's, or another client's change since, is refused before anything
//! of the save is changed, never leaving new shards beside an old index.

use std::path::Path;
use std::process::{Command, Output};

use bytes::Bytes;
use mount_tests::client::{Retries, s3_client};
use mount_tests::mount::Mount;
use mount_tests::server::{Credentials, StoredObject, TestServer};

const BUCKET: &str = "resave";

/// Saves "step" `step` three ways under the mount at `root`: DCP's shards, temporary index, index
/// deleted, renamed into place (in `dcp/`); `torch.save` over one file; `save_to_disk`'s files
/// written over (in `ds/`). Prints what it read back.
fn save(root: &Path, step: u8) -> Output {
    let script = format!(
        r#"
import os, pathlib, json
root = pathlib.Path('{root}')
step = {step}
dcp = root / 'dcp'
dcp.mkdir(exist_ok=True)
for rank in range(2):
    with open(dcp / f'__{{rank}}_0.distcp', 'wb') as f:
        f.write(bytes([step * 10 + rank]) * (300 * 1024))
        os.fsync(f.fileno())
with open(dcp / '.metadata.tmp', 'wb') as f:
    f.write(json.dumps({{'step': step}}).encode())
    os.fsync(f.fileno())
if os.path.exists(dcp / '.metadata'):
    os.remove(dcp / '.metadata')
os.rename(dcp / '.metadata.tmp', dcp / '.metadata')
with open(root / 'model.pt', 'wb') as f:
    f.write(bytes([step]) * 5000)
ds = root / 'ds'
ds.mkdir(exist_ok=True)
with open(ds / 'data-00000-of-00001.arrow', 'wb') as f:
    f.write(bytes([step]) * 70000)
for name in ['dataset_info.json', 'state.json']:
    with open(ds / name, 'w') as f:
        json.dump({{'step': step}}, f)
print(json.load(open(dcp / '.metadata'))['step'], sorted(os.listdir(dcp)))
"#,
        root = root.display()
    );
    Command::new("python3").args(["-c", &script]).output().expect("run python3")
}

fn saved(out: &Output) -> String {
    assert!(out.status.success(), "the save failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What a finished save `step` leaves, key by key.
fn expected(step: u8) -> Vec<(String, Vec<u8>)> {
    let index = format!("{{\"step\": {step}}}").into_bytes();
    vec![
        ("dcp/__0_0.distcp".into(), vec![step * 10; 300 * 1024]),
        ("dcp/__1_0.distcp".into(), vec![step * 10 + 1; 300 * 1024]),
        ("dcp/.metadata".into(), index.clone()),
        ("model.pt".into(), vec![step; 5000]),
        ("ds/data-00000-of-00001.arrow".into(), vec![step; 70000]),
        ("ds/dataset_info.json".into(), index.clone()),
        ("ds/state.json".into(), index),
    ]
}

fn assert_saved(stored: impl Fn(&str) -> Option<Bytes>, step: u8) {
    for (key, bytes) in expected(step) {
        assert!(stored(&key).as_deref() == Some(&bytes[..]), "{key} is step {step}'s");
    }
    assert_eq!(stored("dcp/.metadata.tmp"), None, "no stray temporary index");
}

#[test]
fn a_job_saves_its_checkpoints_again_on_a_default_mount() {
    let server = TestServer::with_bucket(BUCKET);
    let stored = |key: &str| server.storage().get(BUCKET, key).expect("storage").map(|o| o.data);
    let mount = Mount::of(&server, BUCKET, &[]);
    for step in 1..=3 {
        assert_eq!(saved(&save(&mount.dir, step)), format!("{step} ['.metadata', '__0_0.distcp', '__1_0.distcp']"));
        assert_saved(stored, step);
    }
    // Files the job wrote may be deleted by it, as `rm -r latest/` before a save does.
    let out = mount.sh("rm -r ds model.pt");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((stored("model.pt"), stored("ds/state.json")), (None, None));
}

#[test]
fn another_mount_s_checkpoint_is_refused_up_front_without_flags_and_replaced_with_them() {
    let server = TestServer::with_bucket(BUCKET);
    let stored = |key: &str| server.storage().get(BUCKET, key).expect("storage").map(|o| o.data);
    let first = Mount::of(&server, BUCKET, &[]);
    saved(&save(&first.dir, 1));
    drop(first);

    let second = Mount::of(&server, BUCKET, &[]);
    let refused = save(&second.dir, 2);
    assert!(!refused.status.success(), "a default mount does not replace another mount's checkpoint");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("PermissionError") && why.contains("__0_0.distcp"), "refused at the first shard: {why}");
    assert_saved(stored, 1);
    drop(second);

    let third = Mount::of(&server, BUCKET, &["--allow-overwrite", "--allow-delete"]);
    saved(&save(&third.dir, 3));
    assert_saved(stored, 3);
}

#[test]
fn another_client_s_change_between_saves_fails_the_save_and_is_kept() {
    let server = TestServer::with_bucket(BUCKET);
    let stored = |key: &str| server.storage().get(BUCKET, key).expect("storage").map(|o| o.data);
    // The metadata TTL is long enough that the mount still holds its own ETags for every name.
    let mount = Mount::of(&server, BUCKET, &["--metadata-ttl", "600"]);
    saved(&save(&mount.dir, 1));
    let theirs = Bytes::from_static(b"ANOTHER CLIENT'S SHARD");
    server.storage().put(BUCKET, "dcp/__0_0.distcp", StoredObject::new(theirs.clone(), None)).expect("storage");
    let failed = save(&mount.dir, 2);
    assert!(!failed.status.success(), "the save fails");
    let why = String::from_utf8_lossy(&failed.stderr);
    assert!(why.contains("OSError") || why.contains("PermissionError"), "{why}");
    assert_eq!(stored("dcp/__0_0.distcp"), Some(theirs), "the other client's object is kept");
    assert_eq!(stored("dcp/.metadata"), Some(Bytes::from_static(b"{\"step\": 1}")), "the index is untouched");
}

#[test]
fn a_job_saves_its_checkpoints_again_on_moto() {
    let moto = mount_tests::moto::shared().expect("moto server");
    let credentials = Credentials::default();
    let bucket = format!("resave-{:08x}", fastrand::u32(..));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let client = s3_client(&moto.endpoint_url, &credentials, Retries::Standard);
    runtime.block_on(async { client.create_bucket().bucket(&bucket).send().await.expect("create bucket") });
    let stored = |key: &str| {
        runtime.block_on(async {
            let object = client.get_object().bucket(&bucket).key(key).send().await.ok()?;
            Some(object.body.collect().await.expect("body").into_bytes())
        })
    };
    let mount = Mount::new(&moto.endpoint_url, &credentials, &bucket, &[]).unwrap_or_else(|e| panic!("{e}"));
    for step in 1..=2 {
        saved(&save(&mount.dir, step));
        assert_saved(stored, step);
    }
}
