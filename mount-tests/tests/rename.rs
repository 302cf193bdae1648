//! Renames and appends on real mounts: the write-then-rename of checkpoint libraries on a default
//! mount (files and directories), what the flags let `mv` and `>>` do with objects the mount did
//! not write, and what a change by another client or a failing server leaves.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use mount_tests::data;
use mount_tests::mount::Mount;
use mount_tests::server::{FaultStatus, FaultTrigger, StoredObject, TestServer};

const MIB: usize = 1024 * 1024;

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

fn put(server: &TestServer, key: &str, bytes: Vec<u8>) {
    server.storage().put(BUCKET, key, StoredObject::new(bytes.into(), None)).expect("put");
}

fn requests(server: &TestServer, operation: &str) -> u64 {
    server.knobs().counters().snapshot().requests_of(operation)
}

fn python(script: &str) -> String {
    let out = Command::new("python3").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `renameat2(from, to, flags)`: the errno, or 0.
fn renameat2(from: &Path, to: &Path, flags: u32) -> i32 {
    let (from, to) =
        (CString::new(from.as_os_str().as_bytes()).unwrap(), CString::new(to.as_os_str().as_bytes()).unwrap());
    // SAFETY: both paths are NUL-terminated and live across the call.
    let done = unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) };
    if done == 0 { 0 } else { std::io::Error::last_os_error().raw_os_error().unwrap_or(-1) }
}

#[test]
fn files_and_a_directory_written_under_temporary_names_are_renamed_on_a_default_mount() {
    let server = server();
    let mount = Mount::of(&server, BUCKET, &[]);
    // Each file written, fsynced and renamed while still open, then the step's directory renamed
    // when complete, as checkpoint savers do.
    let script = format!(
        r#"
import os
root = '{root}'
def save(path, data):
    with open(path + '.tmp', 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        os.replace(path + '.tmp', path)
save(root + '/data/small.bin', bytes(range(256)) * 400)
save(root + '/data/large.bin', bytes(range(256)) * (256 * 1024))
os.mkdir(root + '/step-7.tmp')
for i in range(3):
    with open(root + f'/step-7.tmp/shard-{{i}}', 'wb') as f:
        f.write(bytes([i]) * (1000 + i))
os.rename(root + '/step-7.tmp', root + '/step-7')
print(sorted(os.listdir(root + '/step-7')), os.path.exists(root + '/step-7.tmp'))
"#,
        root = mount.dir.display()
    );
    assert_eq!(python(&script), "['shard-0', 'shard-1', 'shard-2'] False");
    let pattern: Vec<u8> = (0..=255).collect();
    assert_eq!(stored(&server, "data/small.bin"), Some(pattern.repeat(400)));
    assert_eq!(stored(&server, "data/large.bin"), Some(pattern.repeat(256 * 1024)), "64 MiB");
    for i in 0..3u8 {
        assert_eq!(stored(&server, &format!("step-7/shard-{i}")), Some(vec![i; 1000 + i as usize]));
        assert_eq!(stored(&server, &format!("step-7.tmp/shard-{i}")), None);
    }
    for gone in ["data/small.bin.tmp", "data/large.bin.tmp"] {
        assert_eq!(stored(&server, gone), None, "{gone}");
    }
}

#[test]
fn renaming_onto_a_name_follows_allow_overwrite_and_noreplace() {
    let server = server();
    put(&server, "data/target.bin", b"old".to_vec());
    let mount = Mount::of(&server, BUCKET, &[]);
    std::fs::write(mount.path("data/new.bin"), b"new").unwrap();
    let refused = std::fs::rename(mount.path("data/new.bin"), mount.path("data/target.bin")).unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EPERM), "replacing needs --allow-overwrite");
    drop(mount);

    let mount = Mount::of(&server, BUCKET, &["--allow-overwrite"]);
    std::fs::write(mount.path("data/new.bin"), b"new").unwrap();
    let (new, target) = (mount.path("data/new.bin"), mount.path("data/target.bin"));
    assert_eq!(renameat2(&new, &target, libc::RENAME_NOREPLACE), libc::EEXIST);
    assert_eq!(renameat2(&new, &target, libc::RENAME_EXCHANGE), libc::EINVAL);
    assert_eq!(stored(&server, "data/target.bin"), Some(b"old".to_vec()), "untouched by refused renames");
    std::fs::rename(&new, &target).unwrap();
    assert_eq!(stored(&server, "data/target.bin"), Some(b"new".to_vec()));
    assert_eq!(stored(&server, "data/new.bin"), None);
}

#[test]
fn a_source_replaced_before_the_copy_is_never_copied_as_the_version_listed() {
    let server = server();
    let mount = Mount::of(&server, BUCKET, &["--allow-delete"]);
    // Listed, so the name stands for the version listed until --metadata-ttl passes.
    assert_eq!(std::fs::read_dir(mount.path("data")).unwrap().count(), 1);
    put(&server, "data/existing.bin", b"replaced by another client".to_vec());
    // The copy pinned to the listed version fails (ESTALE); the kernel then looks the name up
    // again, as it does after ESTALE, and the rename moves the version there now.
    std::fs::rename(mount.path("data/existing.bin"), mount.path("data/moved.bin")).unwrap();
    assert_eq!(requests(&server, "CopyObject"), 2, "the pinned copy was refused once");
    assert_eq!(stored(&server, "data/moved.bin"), Some(b"replaced by another client".to_vec()));
    assert_eq!(stored(&server, "data/existing.bin"), None);
    let log = std::fs::read_to_string(&mount.log).unwrap();
    assert!(log.contains("rename existing.bin: the object changed"), "{log}");
}

#[test]
fn a_directory_over_the_limit_is_exdev_and_mv_copies_it() {
    let server = server();
    for i in 0..3 {
        put(&server, &format!("many/f{i}"), vec![i as u8; 10]);
    }
    let mount = Mount::of(&server, BUCKET, &["--allow-delete", "--rename-dir-limit", "2"]);
    let refused = std::fs::rename(mount.path("many"), mount.path("moved")).unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EXDEV));
    assert_eq!(requests(&server, "CopyObject"), 0, "nothing copied");
    let out = mount.sh("mv many moved");
    assert!(out.status.success(), "mv falls back to copying: {out:?}");
    for i in 0..3 {
        assert_eq!(stored(&server, &format!("moved/f{i}")), Some(vec![i as u8; 10]));
        assert_eq!(stored(&server, &format!("many/f{i}")), None);
    }
}

#[test]
fn a_delete_failing_after_the_copy_leaves_both_names_and_the_log_says_so() {
    let server = server();
    let mount = Mount::of(&server, BUCKET, &["--allow-delete", "--max-attempts", "2"]);
    server.knobs().set_status_fault(FaultStatus::InternalError, FaultTrigger::EveryDelete);
    let failed = std::fs::rename(mount.path("data/existing.bin"), mount.path("data/moved.bin")).unwrap_err();
    server.knobs().clear();
    assert_eq!(failed.raw_os_error(), Some(libc::EIO), "{failed}");
    let original = data::content(1, 3000).to_vec();
    assert_eq!(stored(&server, "data/existing.bin"), Some(original.clone()), "never neither");
    assert_eq!(stored(&server, "data/moved.bin"), Some(original));
    let log = std::fs::read_to_string(&mount.log).unwrap();
    assert!(log.contains("both exist"), "{log}");
}

#[test]
fn a_rename_above_the_single_copy_limit_copies_in_parallel_parts() {
    let server = server();
    let bytes = data::content(2, 24 * MIB).to_vec();
    put(&server, "data/large.bin", bytes.clone());
    let mount = Mount::of(&server, BUCKET, &["--allow-delete", "--largest-single-copy", "8"]);
    std::fs::rename(mount.path("data/large.bin"), mount.path("data/renamed.bin")).unwrap();
    assert_eq!((requests(&server, "CopyObject"), requests(&server, "UploadPartCopy")), (0, 3));
    assert!(stored(&server, "data/renamed.bin") == Some(bytes), "exact bytes");
    assert_eq!(stored(&server, "data/large.bin"), None);
}

#[test]
fn appends_need_allow_overwrite_and_keep_every_part() {
    let server = server();
    put(&server, "logs/train.log", b"step 1\n".to_vec());
    let mount = Mount::of(&server, BUCKET, &[]);
    let out = mount.sh("echo 'step 2' >> logs/train.log");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"), "{out:?}");
    drop(mount);

    let mount = Mount::of(&server, BUCKET, &["--allow-overwrite"]);
    let out = mount.sh("echo 'step 2' >> logs/train.log && echo 'step 3' >> logs/train.log && cat logs/train.log");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "step 1\nstep 2\nstep 3\n");
    assert_eq!(stored(&server, "logs/train.log"), Some(b"step 1\nstep 2\nstep 3\n".to_vec()));
    // A logger that reopens its file in append mode.
    let script = format!(
        "import logging\nh = logging.FileHandler('{}', mode='a')\nlog = logging.getLogger('t')\nlog.addHandler(h)\nlog.warning('step 4')\nh.close()",
        mount.path("logs/train.log").display()
    );
    python(&script);
    assert_eq!(stored(&server, "logs/train.log"), Some(b"step 1\nstep 2\nstep 3\nstep 4\n".to_vec()));
}

#[test]
fn an_append_to_a_large_object_copies_it_on_the_server_and_a_race_fails_the_close() {
    let server = server();
    let old = data::content(3, 12 * MIB).to_vec();
    put(&server, "data/big.log", old.clone());
    let mount = Mount::of(&server, BUCKET, &["--allow-overwrite"]);
    let gets = requests(&server, "GetObject");
    let mut file = std::fs::OpenOptions::new().append(true).open(mount.path("data/big.log")).unwrap();
    file.write_all(b"appended").unwrap();
    file.sync_all().unwrap();
    drop(file);
    assert_eq!(requests(&server, "UploadPartCopy"), 1, "the old bytes copied on the server");
    assert_eq!(requests(&server, "GetObject"), gets, "and not fetched");
    let mut expected = old;
    expected.extend_from_slice(b"appended");
    assert!(stored(&server, "data/big.log") == Some(expected), "old bytes then new");

    // Another client writes the object between this append's write and its fsync.
    put(&server, "data/small.log", b"one\n".to_vec());
    let mut file = std::fs::OpenOptions::new().append(true).open(mount.path("data/small.log")).unwrap();
    file.write_all(b"two\n").unwrap();
    put(&server, "data/small.log", b"theirs\n".to_vec());
    let failed = file.sync_all().unwrap_err();
    assert_eq!(failed.raw_os_error(), Some(libc::EIO), "{failed}");
    assert_eq!(stored(&server, "data/small.log"), Some(b"theirs\n".to_vec()), "their write is kept");
}
