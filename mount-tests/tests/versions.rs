//! Never a mix of versions: a process reading a file while the object is replaced and another
//! process opens and reads the new version gets old bytes or `ESTALE`, never new bytes and never
//! bytes past the size it opened. Against our test server and against moto (which honours
//! If-Match), and against a server that ignores If-Match or Range (fetchfs checks what comes back).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use mount_tests::client::{Retries, s3_client, upload};
use mount_tests::mount::Mount;
use mount_tests::server::{Credentials, StoredObject, TestServer};

const BUCKET: &str = "versions";
const MIB: usize = 1024 * 1024;
const OLD: u8 = b'A';
const NEW: u8 = b'B';

/// Where the objects live, and how to replace one.
trait Backend {
    fn put(&self, key: &str, body: Bytes);
    fn mount(&self, extra: &[&str]) -> Mount;
}

impl Backend for TestServer {
    fn put(&self, key: &str, body: Bytes) {
        self.storage().put(BUCKET, key, StoredObject::new(body, None)).expect("put");
    }

    fn mount(&self, extra: &[&str]) -> Mount {
        Mount::of(self, BUCKET, extra)
    }
}

struct Moto {
    endpoint: String,
    bucket: String,
    runtime: tokio::runtime::Runtime,
}

impl Moto {
    fn start() -> Self {
        let moto = mount_tests::moto::shared().expect("moto server");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let bucket = format!("versions-{:08x}", fastrand::u32(..));
        let client = s3_client(&moto.endpoint_url, &Credentials::default(), Retries::Standard);
        runtime.block_on(client.create_bucket().bucket(&bucket).send()).expect("create bucket");
        Self { endpoint: moto.endpoint_url.clone(), bucket, runtime }
    }
}

impl Backend for Moto {
    fn put(&self, key: &str, body: Bytes) {
        let client = s3_client(&self.endpoint, &Credentials::default(), Retries::Standard);
        self.runtime.block_on(upload(&client, &self.bucket, key, body, 16 * MIB)).expect("upload");
    }

    fn mount(&self, extra: &[&str]) -> Mount {
        Mount::new(&self.endpoint, &Credentials::default(), &self.bucket, extra).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn filled(byte: u8, len: usize) -> Bytes {
    Bytes::from(vec![byte; len])
}

/// How much of the new version the second process reads.
#[derive(Clone, Copy, Debug)]
enum SecondReader {
    All,
    FirstMiBs(usize),
}

/// Process 1 (this test) opens the old version and reads 16 MiB; the object is replaced by a
/// version of `new_size`; after the metadata TTL, process 2 opens the file and reads it; then
/// process 1 reads on to its end. Process 1 gets only old bytes, up to the old size, or ESTALE.
fn pinned_reader_never_sees_the_new_version(backend: &impl Backend, new_size: usize, second: SecondReader) {
    let old_size = 64 * MIB;
    backend.put("obj", filled(OLD, old_size));
    let mount = backend.mount(&["--metadata-ttl", "1", "--negative-metadata-ttl", "1"]);

    let mut first = File::open(mount.path("obj")).expect("process 1 opens");
    let mut buf = vec![0u8; MIB];
    for _ in 0..16 {
        first.read_exact(&mut buf).expect("process 1 reads the old version");
        assert!(buf.iter().all(|&b| b == OLD), "process 1 read old bytes before the change");
    }

    backend.put("obj", filled(NEW, new_size));
    std::thread::sleep(Duration::from_millis(1500));
    let script = match second {
        SecondReader::All => "cat obj".to_owned(),
        SecondReader::FirstMiBs(n) => format!("head -c {} obj", n * MIB),
    };
    let out = mount.sh(&script);
    assert!(out.status.success(), "process 2: {}", String::from_utf8_lossy(&out.stderr));
    let want = match second {
        SecondReader::All => new_size,
        SecondReader::FirstMiBs(n) => n * MIB,
    };
    assert_eq!(out.stdout.len(), want, "process 2 read the new version's bytes");
    assert!(out.stdout.iter().all(|&b| b == NEW), "process 2 read only the new version");
    let size_now = std::fs::metadata(mount.path("obj")).expect("stat").len();
    assert_eq!(size_now, new_size as u64, "a new lookup sees the new version");

    assert_eq!(first.metadata().expect("fstat").size(), old_size as u64, "process 1 keeps its version's size");
    let mut offset = 16 * MIB;
    loop {
        match first.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                assert!(buf[..n].iter().all(|&b| b == OLD), "process 1 got new bytes at {offset}");
                offset += n;
                assert!(offset <= old_size, "process 1 read past its version's size");
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "old bytes or ESTALE, got {e}");
                break;
            }
        }
    }
    // Past its version's end, nothing more: neither the new version's tail nor an error.
    first.seek(SeekFrom::Start(old_size as u64)).expect("seek");
    match first.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "no bytes past the old size"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "nothing past the old size, or ESTALE: {e}"),
    }
}

#[test]
fn a_pinned_reader_gets_old_bytes_or_estale_while_another_process_reads_the_new_version() {
    let server = TestServer::with_bucket(BUCKET);
    pinned_reader_never_sees_the_new_version(&server, 64 * MIB, SecondReader::All);
}

#[test]
fn a_pinned_reader_never_sees_a_new_version_read_in_part() {
    let server = TestServer::with_bucket(BUCKET);
    pinned_reader_never_sees_the_new_version(&server, 64 * MIB, SecondReader::FirstMiBs(40));
}

#[test]
fn a_pinned_reader_never_reads_past_its_size_when_the_new_version_is_larger() {
    let server = TestServer::with_bucket(BUCKET);
    pinned_reader_never_sees_the_new_version(&server, 96 * MIB, SecondReader::All);
}

#[test]
fn against_moto_a_pinned_reader_never_sees_a_mix_of_versions() {
    let moto = Moto::start();
    pinned_reader_never_sees_the_new_version(&moto, 64 * MIB, SecondReader::All);
    pinned_reader_never_sees_the_new_version(&moto, 48 * MIB, SecondReader::FirstMiBs(8));
    pinned_reader_never_sees_the_new_version(&moto, 96 * MIB, SecondReader::All);
}

fn log_of(mount: &Mount) -> String {
    std::fs::read_to_string(&mount.log).unwrap_or_default()
}

#[test]
fn a_server_that_ignores_if_match_gives_estale_never_the_new_bytes() {
    let server = TestServer::with_bucket(BUCKET);
    server.knobs().set_ignore_if_match(true);
    server.put("obj", filled(OLD, 64 * MIB));
    let mount = server.mount(&[]);
    let mut file = File::open(mount.path("obj")).expect("open");
    let mut buf = vec![0u8; MIB];
    file.read_exact(&mut buf).expect("the first MiB");
    server.put("obj", filled(NEW, 64 * MIB));
    file.seek(SeekFrom::Start(48 * MIB as u64)).expect("seek");
    let err = file.read_exact(&mut buf).expect_err("the server sent the new version");
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
    assert!(log_of(&mount).contains("refusing a GET response"), "one log line says why");
}

#[test]
fn a_server_that_ignores_range_gives_eio_never_wrong_bytes() {
    let server = TestServer::with_bucket(BUCKET);
    let body = mount_tests::data::content(3, 16 * MIB);
    server.put("obj", body);
    let mount = server.mount(&[]);
    server.knobs().set_ignore_range(true);
    let out = Command::new("dd")
        .arg(format!("if={}", mount.path("obj").display()))
        .args(["of=/dev/null", "bs=1M", "skip=8", "count=1"])
        .output()
        .expect("dd");
    assert!(!out.status.success(), "the whole object sent for a range is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Input/output error"), "{stderr}");
    assert!(log_of(&mount).contains("ignored Range"), "one log line says why");
}
