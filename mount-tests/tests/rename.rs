//! Renames on real mounts: the write-then-rename of checkpoint libraries on a default mount, and
//! what the flags let `mv` do with objects the mount did not write.

use mount_tests::data;
use mount_tests::mount::Mount;
use mount_tests::server::{StoredObject, TestServer};

const BUCKET: &str = "renames";

fn server() -> TestServer {
    let server = TestServer::with_bucket(BUCKET);
    let object = StoredObject::new(data::content(1, 3000), None);
    server.storage().put(BUCKET, "data/existing.bin", object).expect("put");
    server
}

fn stored(server: &TestServer, key: &str) -> Option<Vec<u8>> {
    server.storage().get(BUCKET, key).ok().flatten().map(|o| o.data.to_vec())
}

#[test]
fn a_checkpoint_written_under_a_temporary_name_is_renamed_on_a_default_mount() {
    let server = server();
    let mount = Mount::of(&server, BUCKET, &[]);
    // As torch.distributed.checkpoint saves its metadata, and os.replace-based savers.
    let script = format!(
        "import os\nwith open('{0}/data/.metadata.tmp', 'wb') as f:\n    f.write(b'step 100' * 1000)\nos.replace('{0}/data/.metadata.tmp', '{0}/data/.metadata')\nprint(open('{0}/data/.metadata', 'rb').read() == b'step 100' * 1000)",
        mount.path("").display()
    );
    let out = std::process::Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "True");
    assert_eq!(stored(&server, "data/.metadata"), Some(b"step 100".repeat(1000)));
    assert_eq!(stored(&server, "data/.metadata.tmp"), None, "the temporary name is gone");
    let names: Vec<String> =
        std::fs::read_dir(mount.path("data")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.contains(&".metadata".to_owned()) && !names.contains(&".metadata.tmp".to_owned()), "{names:?}");
}

#[test]
fn moving_an_object_the_mount_did_not_write_needs_allow_delete() {
    let server = server();
    let mount = Mount::of(&server, BUCKET, &[]);
    let out = mount.sh("mv data/existing.bin data/moved.bin");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"), "{out:?}");
    assert_eq!(stored(&server, "data/existing.bin"), Some(data::content(1, 3000).to_vec()), "left as it was");
    assert_eq!(stored(&server, "data/moved.bin"), None, "nothing copied");
    assert_eq!(server.knobs().counters().snapshot().requests_of("CopyObject"), 0);
    drop(mount);

    let mount = Mount::of(&server, BUCKET, &["--allow-delete"]);
    let out = mount.sh("mv data/existing.bin data/moved.bin && cat data/moved.bin | wc -c");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3000");
    assert_eq!(stored(&server, "data/moved.bin"), Some(data::content(1, 3000).to_vec()));
    assert_eq!(stored(&server, "data/existing.bin"), None);
}
