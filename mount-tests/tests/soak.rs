//! The soak test: many concurrent readers (sequential and random, small and large files) on one
//! mount while the server's faults switch on and off. Every byte read must be right, or the read
//! must fail with EIO; the daemon must be alive at the end with its RSS under the budget plus slack.
//! 60 s by default; FETCHFS_SOAK_SECS sets another length.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mount_tests::data;
use mount_tests::mount::Mount;
use mount_tests::server::{BodyFault, FaultStatus, FaultTrigger, ServerConfig, StoredObject, TestServer};

const BUCKET: &str = "soak";
const MIB: u64 = 1024 * 1024;
const LARGE: u64 = 128 * MIB;
const LARGE_FILES: u64 = 4;
const SMALL_FILES: u64 = 200;
/// Well below the data set, so readers keep going to the server (where the faults are).
const CACHE_MIB: u64 = 128;
/// Allocator and runtime overhead allowed above the cache budget.
const SLACK_MIB: u64 = 128;

fn small_size(i: u64) -> usize {
    10_000 + (i as usize * 7919) % 200_000
}

#[derive(Default)]
struct Tally {
    reads: AtomicU64,
    bytes: AtomicU64,
    errors: Mutex<BTreeMap<i32, u64>>,
}

impl Tally {
    /// Counts a read's outcome; a wrong byte or an unexpected error fails the test.
    fn record(&self, what: &str, outcome: std::io::Result<usize>) {
        match outcome {
            Ok(n) => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(0);
                assert_eq!(errno, libc::EIO, "{what}: only EIO is expected under these faults, got {e}");
                *self.errors.lock().unwrap_or_else(|p| p.into_inner()).entry(errno).or_default() += 1;
            }
        }
    }
}

/// Drops the kernel's cached pages of a file, so reads reach the daemon (and the server) again.
fn forget_pages(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: advice on a descriptor we own; failure only means pages stay cached.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

fn check(seed: u64, offset: u64, bytes: &[u8], what: &str) -> usize {
    assert_eq!(data::first_mismatch(seed, offset, bytes), None, "{what}: wrong bytes at {offset}");
    bytes.len()
}

fn sequential_reader(mount: &Mount, stop: &AtomicBool, tally: &Tally, first: u64) {
    let mut i = first;
    let mut buf = vec![0u8; MIB as usize];
    while !stop.load(Ordering::Relaxed) {
        let seed = i % LARGE_FILES;
        let what = format!("sequential large/{seed}");
        let outcome = File::open(mount.path(&format!("large/{seed}"))).and_then(|mut f| {
            forget_pages(&f);
            let mut offset = 0;
            while offset < LARGE && !stop.load(Ordering::Relaxed) {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                check(seed, offset, &buf[..n], &what);
                offset += n as u64;
            }
            Ok(offset as usize)
        });
        tally.record(&what, outcome);
        i += 1;
    }
}

fn random_reader(mount: &Mount, stop: &AtomicBool, tally: &Tally, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let files: Vec<File> =
        (0..LARGE_FILES).map(|i| File::open(mount.path(&format!("large/{i}"))).expect("open")).collect();
    while !stop.load(Ordering::Relaxed) {
        let i = rng.u64(0..LARGE_FILES);
        let len = rng.usize(4096..=256 * 1024);
        let offset = rng.u64(0..LARGE - len as u64);
        let mut buf = vec![0u8; len];
        let what = format!("random large/{i} at {offset}");
        forget_pages(&files[i as usize]);
        let outcome = files[i as usize].read_exact_at(&mut buf, offset).map(|()| check(i, offset, &buf, &what));
        tally.record(&what, outcome);
    }
}

fn small_reader(mount: &Mount, stop: &AtomicBool, tally: &Tally, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::Relaxed) {
        let i = rng.u64(0..SMALL_FILES);
        let what = format!("small/{i}");
        let outcome = File::open(mount.path(&what)).and_then(|mut f| {
            forget_pages(&f);
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            Ok(bytes)
        });
        let outcome = outcome.map(|bytes| {
            assert_eq!(bytes.len(), small_size(i), "{what}: size");
            check(1000 + i, 0, &bytes, &what)
        });
        tally.record(&what, outcome);
    }
}

/// Switches to the next fault every three seconds, and to none every other time.
fn fault_switcher(server: &TestServer, stop: &AtomicBool) {
    let knobs = server.knobs();
    let mut rng = fastrand::Rng::with_seed(99);
    let mut step = 0u64;
    while !stop.load(Ordering::Relaxed) {
        knobs.clear();
        if step % 2 == 1 {
            // Each kind of fault in turn.
            match (step / 2) % 5 {
                0 => knobs.set_status_fault(FaultStatus::SlowDown, FaultTrigger::Fraction(0.1)),
                1 => knobs.set_status_fault(FaultStatus::InternalError, FaultTrigger::Nth(rng.u64(1..20))),
                2 => knobs.set_body_fault(Some(BodyFault::ResetAfter(rng.u64(100_000..2_000_000)))),
                3 => knobs.set_body_fault(Some(BodyFault::Stall(Duration::from_secs(2)))),
                _ => {
                    knobs.set_first_byte_delay(Duration::from_millis(10));
                    knobs.set_bandwidth(Some(80_000_000));
                }
            }
        }
        step += 1;
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    knobs.clear();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn metric(port: u16, name: &str) -> f64 {
    use std::io::Write;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return f64::NAN };
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[test]
fn soak_readers_under_switching_faults() {
    let seconds: u64 = std::env::var("FETCHFS_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let server = TestServer::start(ServerConfig::default()).expect("start server");
    let storage = server.storage();
    storage.create_bucket(BUCKET).unwrap();
    for i in 0..LARGE_FILES {
        storage.put(BUCKET, &format!("large/{i}"), StoredObject::new(data::content(i, LARGE as usize), None)).unwrap();
    }
    for i in 0..SMALL_FILES {
        storage
            .put(BUCKET, &format!("small/{i}"), StoredObject::new(data::content(1000 + i, small_size(i)), None))
            .unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let cache = CACHE_MIB.to_string();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mount =
        Mount::of(&server, BUCKET, &["--cache-size", &cache, "--metrics-addr", &metrics_addr, "--log-level", "info"]);
    let pid = mount.daemon_pid().expect("daemon");

    let stop = AtomicBool::new(false);
    let tallies: [Tally; 3] = Default::default();
    let peak_rss = AtomicU64::new(0);
    std::thread::scope(|s| {
        for k in 0..2 {
            let (mount, stop, tally) = (&mount, &stop, &tallies[0]);
            s.spawn(move || sequential_reader(mount, stop, tally, k));
        }
        for k in 0..2 {
            let (mount, stop, tally) = (&mount, &stop, &tallies[1]);
            s.spawn(move || random_reader(mount, stop, tally, 10 + k));
        }
        for k in 0..4 {
            let (mount, stop, tally) = (&mount, &stop, &tallies[2]);
            s.spawn(move || small_reader(mount, stop, tally, 20 + k));
        }
        s.spawn(|| fault_switcher(&server, &stop));
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                peak_rss.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
    });

    let alive = mount.daemon_pid() == Some(pid) && std::fs::read_dir(&mount.dir).is_ok();
    let peak_mib = peak_rss.load(Ordering::Relaxed) / 1024;
    let mut errors = BTreeMap::new();
    for tally in &tallies {
        for (errno, n) in tally.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            *errors.entry(if *errno == libc::EIO { "EIO" } else { "other" }).or_insert(0u64) += n;
        }
    }
    let reads: Vec<u64> = tallies.iter().map(|t| t.reads.load(Ordering::Relaxed)).collect();
    let bytes: u64 = tallies.iter().map(|t| t.bytes.load(Ordering::Relaxed)).sum();
    println!(
        "soak {seconds} s: reads {} (sequential files {}, random {}, small files {}), {} MiB, errors {errors:?}, \
         retries {}, body resumes {}, injected faults {}, peak RSS {peak_mib} MiB (budget {CACHE_MIB} MiB)",
        reads.iter().sum::<u64>(),
        reads[0],
        reads[1],
        reads[2],
        bytes / MIB,
        metric(port, "fetchfs_retries_total"),
        metric(port, "fetchfs_body_resumes_total"),
        server.knobs().counters().snapshot().injected_faults,
    );
    assert!(alive, "the daemon is alive and answering");
    assert!(peak_mib <= CACHE_MIB + SLACK_MIB, "peak RSS {peak_mib} MiB over {CACHE_MIB} MiB + {SLACK_MIB} MiB");
    assert!(reads.iter().all(|&r| r > 0), "every kind of reader made progress: {reads:?}");
}
