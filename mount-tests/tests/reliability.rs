//! Faults on real mounts: each read returns the exact bytes or a clear errno within a bound, never
//! mixed bytes, and the daemon lives on. Also: recovery after SIGKILL, and no secret in the logs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mount_tests::data;
use mount_tests::mount::{Mount, fetchfs_command, is_mounted};
use mount_tests::server::{BodyFault, FaultStatus, FaultTrigger, ServerConfig, Storage, StoredObject, TestServer};

const BUCKET: &str = "faults";
const MIB: usize = 1024 * 1024;

fn server() -> TestServer {
    let server = TestServer::start(ServerConfig::default()).expect("start server");
    server.storage().create_bucket(BUCKET).unwrap();
    server
}

fn put(server: &TestServer, key: &str, seed: u64, size: usize) {
    server.storage().put(BUCKET, key, StoredObject::new(data::content(seed, size), None)).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn mount_with_metrics(server: &TestServer, extra: &[&str]) -> (Mount, u16) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["--metrics-addr", addr.as_str()];
    args.extend_from_slice(extra);
    (Mount::of(server, BUCKET, &args), port)
}

/// The sum of the samples of `name` (any labels) at the metrics endpoint.
fn metric(port: u16, name: &str) -> f64 {
    use std::io::Write;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("scrape");
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Reads a whole file and checks every byte against `seed`.
fn read_exact_file(mount: &Mount, key: &str, seed: u64, size: usize) {
    let got = std::fs::read(mount.path(key)).unwrap_or_else(|e| panic!("reading {key}: {e}"));
    assert_eq!(got.len(), size, "{key}");
    assert_eq!(data::first_mismatch(seed, 0, &got), None, "{key}: bytes differ");
}

fn assert_daemon_alive(mount: &Mount) {
    assert!(mount.daemon_pid().is_some(), "the daemon is running");
    assert!(is_mounted(&mount.dir));
    assert!(std::fs::read_dir(&mount.dir).is_ok(), "the mount still answers");
}

#[test]
fn slowdown_on_a_tenth_of_requests_is_retried_to_exact_bytes() {
    let server = server();
    put(&server, "big", 1, 64 * MIB);
    for i in 0..20 {
        put(&server, &format!("small/{i}"), 100 + i, 50_000);
    }
    let (mount, port) = mount_with_metrics(&server, &["--part-size", "1"]);
    server.knobs().set_status_fault(FaultStatus::SlowDown, FaultTrigger::Fraction(0.1));
    let started = Instant::now();
    read_exact_file(&mount, "big", 1, 64 * MIB);
    for i in 0..20 {
        read_exact_file(&mount, &format!("small/{i}"), 100 + i, 50_000);
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(server.knobs().counters().snapshot().injected_faults > 0, "faults were injected");
    assert!(metric(port, "fetchfs_retries_total") > 0.0, "the SDK retried them");
    server.knobs().clear();
    assert_daemon_alive(&mount);
}

#[test]
fn an_internal_error_on_the_nth_request_is_retried() {
    let server = server();
    put(&server, "f", 2, 10 * MIB);
    let mount = Mount::of(&server, BUCKET, &[]);
    server.knobs().set_status_fault(FaultStatus::InternalError, FaultTrigger::Nth(2));
    read_exact_file(&mount, "f", 2, 10 * MIB);
    assert_eq!(server.knobs().counters().snapshot().injected_faults, 1);
    assert_daemon_alive(&mount);
}

#[test]
fn bodies_reset_after_n_bytes_resume_to_exact_bytes() {
    let server = server();
    put(&server, "f", 3, 48 * MIB);
    put(&server, "small", 4, 700_000);
    let (mount, port) = mount_with_metrics(&server, &[]);
    server.knobs().set_body_fault(Some(BodyFault::ResetAfter(1_500_000)));
    let started = Instant::now();
    read_exact_file(&mount, "f", 3, 48 * MIB);
    // Every response is cut after 200 KB: a small object is read in several resumed pieces.
    server.knobs().set_body_fault(Some(BodyFault::ResetAfter(200_000)));
    read_exact_file(&mount, "small", 4, 700_000);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(metric(port, "fetchfs_body_resumes_total") >= 3.0, "bodies were resumed");
    server.knobs().clear();
    assert_daemon_alive(&mount);
}

#[test]
fn a_five_second_stall_delays_a_read_but_returns_exact_bytes() {
    let server = server();
    put(&server, "f", 5, 3 * MIB);
    let mount = Mount::of(&server, BUCKET, &[]);
    server.knobs().set_body_fault(Some(BodyFault::Stall(Duration::from_secs(5))));
    let started = Instant::now();
    read_exact_file(&mount, "f", 5, 3 * MIB);
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(4), "the stall was met ({took:?})");
    assert!(took < Duration::from_secs(30), "and outlived within the read deadline ({took:?})");
    server.knobs().clear();
    assert_daemon_alive(&mount);
}

const READ_TIMEOUT: Duration = Duration::from_secs(4);

/// What a caller waits on a stalled network: about one `--read-timeout`, at most 1.5 times it.
fn assert_failed_within_the_deadline(took: Duration) {
    assert!(took >= READ_TIMEOUT / 2, "failed after {took:?}, before the deadline could pass");
    assert!(took <= READ_TIMEOUT * 3 / 2, "failed after {took:?}, past 1.5 x the {READ_TIMEOUT:?} deadline");
}

#[test]
fn a_stall_longer_than_the_read_deadline_is_eio_within_about_one_deadline() {
    let server = server();
    put(&server, "f", 6, 8 * MIB);
    let timeout = READ_TIMEOUT.as_secs().to_string();
    let mount = Mount::of(&server, BUCKET, &["--read-timeout", &timeout]);
    server.knobs().set_body_fault(Some(BodyFault::Stall(Duration::from_secs(60))));
    let started = Instant::now();
    let err = std::fs::read(mount.path("f")).expect_err("the read cannot finish in time");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_failed_within_the_deadline(started.elapsed());
    server.knobs().clear();
    assert_daemon_alive(&mount);
}

#[test]
fn a_lookup_on_a_stalled_network_is_eio_within_about_one_deadline() {
    let server = server();
    put(&server, "f", 6, 100);
    let timeout = READ_TIMEOUT.as_secs().to_string();
    let mount = Mount::of(&server, BUCKET, &["--read-timeout", &timeout]);
    server.knobs().set_first_byte_delay(Duration::from_secs(60));
    for name in ["unlisted", "f"] {
        let started = Instant::now();
        let err = std::fs::metadata(mount.path(name)).expect_err("the lookup cannot finish in time");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{name}: {err}");
        assert_failed_within_the_deadline(started.elapsed());
    }
    server.knobs().clear();
    assert_daemon_alive(&mount);
}

/// Reads 1 MiB at `offset`: the old bytes, or ESTALE; anything else fails the test.
fn old_bytes_or_estale(file: &mut File, offset: u64, seed: u64) -> Result<(), i32> {
    let mut buf = vec![0u8; MIB];
    file.seek(SeekFrom::Start(offset)).expect("seek");
    match file.read_exact(&mut buf) {
        Ok(()) => {
            assert_eq!(data::first_mismatch(seed, offset, &buf), None, "old bytes at {offset}, never new or mixed");
            Ok(())
        }
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}");
            Err(libc::ESTALE)
        }
    }
}

#[test]
fn an_object_overwritten_or_deleted_mid_read_gives_old_bytes_or_estale() {
    let server = server();
    put(&server, "over", 7, 256 * MIB);
    put(&server, "gone", 8, 256 * MIB);
    let mount = Mount::of(&server, BUCKET, &["--metadata-ttl", "1", "--negative-metadata-ttl", "1"]);

    let mut file = File::open(mount.path("over")).expect("open");
    old_bytes_or_estale(&mut file, 0, 7).expect("the first MiB before the change");
    put(&server, "over", 70, 256 * MIB);
    assert_eq!(old_bytes_or_estale(&mut file, 200 * MIB as u64, 7), Err(libc::ESTALE), "far past what was fetched");
    // A new open after the metadata TTL reads the new object.
    std::thread::sleep(Duration::from_millis(1500));
    let mut fresh = File::open(mount.path("over")).expect("reopen");
    let mut buf = vec![0u8; MIB];
    fresh.seek(SeekFrom::Start(100 * MIB as u64)).unwrap();
    fresh.read_exact(&mut buf).expect("read the new version");
    assert_eq!(data::first_mismatch(70, 100 * MIB as u64, &buf), None);

    let mut file = File::open(mount.path("gone")).expect("open");
    old_bytes_or_estale(&mut file, 0, 8).expect("the first MiB before the delete");
    server.storage().delete(BUCKET, "gone").unwrap();
    assert_eq!(old_bytes_or_estale(&mut file, 200 * MIB as u64, 8), Err(libc::ESTALE));
    std::thread::sleep(Duration::from_millis(1500));
    let err = File::open(mount.path("gone")).expect_err("deleted");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert_daemon_alive(&mount);
}

#[test]
fn a_server_killed_and_restarted_mid_read_gives_exact_bytes_or_eio_and_then_serves_again() {
    let storage = Arc::new(Storage::in_memory());
    let first = TestServer::start(ServerConfig { storage: Arc::clone(&storage), ..ServerConfig::default() }).unwrap();
    storage.create_bucket(BUCKET).unwrap();
    storage.put(BUCKET, "f", StoredObject::new(data::content(9, 128 * MIB), None)).unwrap();
    let port = first.addr().port();
    first.knobs().set_bandwidth(Some(10_000_000));
    let mount = Mount::of(&first, BUCKET, &["--read-timeout", "20"]);
    let path = mount.path("f");
    let reader = std::thread::spawn(move || -> Result<(), i32> {
        let mut file = File::open(&path).map_err(|e| e.raw_os_error().unwrap_or(0))?;
        let mut offset = 0u64;
        let mut buf = vec![0u8; MIB];
        while offset < 128 * MIB as u64 {
            let n = file.read(&mut buf).map_err(|e| e.raw_os_error().unwrap_or(0))?;
            if n == 0 {
                return Err(0);
            }
            assert_eq!(data::first_mismatch(9, offset, &buf[..n]), None, "bytes at {offset}");
            offset += n as u64;
        }
        Ok(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    first.stop();
    std::thread::sleep(Duration::from_secs(2));
    let second =
        TestServer::start(ServerConfig { port, storage: Arc::clone(&storage), ..ServerConfig::default() }).unwrap();
    let outcome = reader.join().expect("the reader thread");
    assert!(matches!(outcome, Ok(()) | Err(libc::EIO)), "exact bytes or EIO, got {outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(90));
    read_exact_file(&mount, "f", 9, 128 * MIB);
    assert_daemon_alive(&mount);
    drop(mount);
    second.stop();
}

#[test]
fn after_sigkill_a_new_mount_at_the_same_place_works() {
    let server = server();
    put(&server, "f", 10, 100_000);
    let mount = Mount::of(&server, BUCKET, &[]);
    read_exact_file(&mount, "f", 10, 100_000);
    for recovery in ["fusermount3", "fetchfs"] {
        let pid = mount.daemon_pid().expect("daemon");
        Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        while mount.daemon_pid().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // (stat may still be answered from the kernel's attribute cache; listing needs the daemon)
        let err = std::fs::read_dir(&mount.dir).expect_err("a dead mount");
        assert!(matches!(err.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)), "{err}");
        if recovery == "fusermount3" {
            let status = Command::new("fusermount3").arg("-u").arg(&mount.dir).status().expect("fusermount3");
            assert!(status.success());
        }
        // `fetchfs mount` clears a dead mount by itself.
        let credentials = server.credentials().cloned().unwrap_or_default();
        let out = fetchfs_command(Some(&credentials))
            .args(["mount", BUCKET])
            .arg(&mount.dir)
            .args(["--endpoint-url", &server.endpoint_url(), "--force-path-style"])
            .output()
            .expect("run fetchfs");
        assert!(out.status.success(), "remount after {recovery}: {}", String::from_utf8_lossy(&out.stderr));
        read_exact_file(&mount, "f", 10, 100_000);
    }
}

#[test]
fn debug_logs_and_the_command_line_hold_no_secret() {
    let server = server();
    put(&server, "f", 11, 2 * MIB);
    let mount = Mount::of(&server, BUCKET, &["--log-level", "trace"]);
    read_exact_file(&mount, "f", 11, 2 * MIB);
    assert!(std::fs::metadata(mount.path("absent")).is_err());
    let _ = std::fs::write(mount.path("f"), b"x");
    let credentials = server.credentials().cloned().unwrap_or_default();
    let log = std::fs::read_to_string(&mount.log).expect("the debug log");
    assert!(log.contains("DEBUG") && log.contains("mounted"), "debug logging was on:\n{log}");
    let pid = mount.daemon_pid().expect("daemon");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline);
    for secret in [&credentials.access_key, &credentials.secret_key] {
        assert!(!log.contains(secret.as_str()), "a key is in the log");
        assert!(!cmdline.contains(secret.as_str()), "a key is on the command line");
    }
}

#[test]
fn expiring_credentials_are_refreshed_while_mounted() {
    let server = server();
    put(&server, "a", 12, 1000);
    put(&server, "b", 13, 1000);
    let credentials = server.credentials().cloned().unwrap_or_default();
    let dir = mount_tests::mount::fresh_dir("creds");
    // A credential process, as SSO and other brokers are: each answer expires 15 s later.
    let script = dir.join("credentials.sh");
    let calls = dir.join("calls");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho call >> {calls}\nexpires=$(date -u -d '+15 seconds' +%Y-%m-%dT%H:%M:%SZ)\n\
             printf '{{\"Version\":1,\"AccessKeyId\":\"{}\",\"SecretAccessKey\":\"{}\",\"SessionToken\":\"t\",\"Expiration\":\"%s\"}}' \"$expires\"\n",
            credentials.access_key,
            credentials.secret_key,
            calls = calls.display()
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&script).status().unwrap();
    let config = dir.join("config");
    std::fs::write(&config, format!("[profile broker]\ncredential_process = {}\n", script.display())).unwrap();
    let mnt = mount_tests::mount::fresh_dir("creds-mnt");
    let out = fetchfs_command(None)
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .args(["mount", BUCKET])
        .arg(&mnt)
        .args(["--endpoint-url", &server.endpoint_url(), "--force-path-style", "--profile", "broker"])
        .args(["--metadata-ttl", "0", "--negative-metadata-ttl", "0"])
        .output()
        .expect("run fetchfs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |key: &str, seed| {
        let got = std::fs::read(mnt.join(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(data::first_mismatch(seed, 0, &got), None);
    };
    read("a", 12);
    let count = || std::fs::read_to_string(&calls).unwrap_or_default().lines().count();
    let before = count();
    assert!(before >= 1, "the credential process gave the first credentials");
    std::thread::sleep(Duration::from_secs(16));
    read("b", 13);
    assert!(count() > before, "the expired credentials were fetched again ({} calls)", count());
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = std::fs::remove_dir(&mnt);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keys_that_cannot_be_names_never_escape_or_break_a_listing() {
    let server = server();
    for key in ["odd/ok", "odd/a\u{0}b", "odd/../../etc/passwd", "odd/./x", "odd//y", "odd/.", "odd/.."] {
        put(&server, key, 14, 10);
    }
    let mount = Mount::of(&server, BUCKET, &[]);
    let names: Vec<String> = std::fs::read_dir(mount.path("odd"))
        .expect("the listing survives odd keys")
        .map(|e| {
            let log = std::fs::read_to_string(&mount.log).unwrap_or_default();
            e.unwrap_or_else(|err| panic!("{err}: {log}")).file_name().to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(names, ["ok"]);
    read_exact_file(&mount, "odd/ok", 14, 10);
    assert!(std::fs::metadata(mount.path("odd/../../etc/passwd")).is_err());
    assert_daemon_alive(&mount);
}

#[test]
fn an_archived_object_is_eacces_and_the_log_names_the_cause() {
    let server = server();
    put(&server, "cold", 15, 10_000);
    let mount = Mount::of(&server, BUCKET, &[]);
    assert!(std::fs::metadata(mount.path("cold")).is_ok());
    server.knobs().set_status_fault(FaultStatus::InvalidObjectState, FaultTrigger::Fraction(1.0));
    let err = std::fs::read(mount.path("cold")).expect_err("archived objects cannot be read");
    server.knobs().clear();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    let log = std::fs::read_to_string(&mount.log).unwrap_or_default();
    assert!(log.contains("archived") && log.contains("restored"), "the log names the cause:\n{log}");
    assert_daemon_alive(&mount);
}
