//! Readers that make several streams of one file (issue 20): a model loader copying mapped
//! tensors out, threads sharing a descriptor, a reader going backwards. Each against `dd bs=1M` of
//! the same object on a fresh mount in the same run.

use std::process::Command;
use std::time::Instant;

use mount_tests::mount::Mount;
use mount_tests::server::Counters;

use super::{MIB, Row, mbps};

/// Copies the mapped file out in `sys.argv[2]`-byte slices, as numpy, torch and safetensors copy
/// tensors (one `memcpy` each).
const MAPPED_SLICES: &str = "import mmap, sys\nwith open(sys.argv[1], 'rb') as f:\n    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n    s, n = int(sys.argv[2]), 0\n    while n < len(m):\n        n += len(bytes(m[n:n + s]))\n    print(n)\n";

/// Four threads `pread`ing their quarter of one descriptor in 1 MiB reads.
const THREADS: &str = "import os, sys, threading\nfd = os.open(sys.argv[1], os.O_RDONLY)\nq = os.fstat(fd).st_size // 4\ndef part(t):\n    for o in range(t * q, (t + 1) * q, 1 << 20):\n        os.pread(fd, min(1 << 20, (t + 1) * q - o), o)\nts = [threading.Thread(target=part, args=(t,)) for t in range(4)]\n[t.start() for t in ts]\n[t.join() for t in ts]\nprint(4 * q)\n";

/// One of four processes, each `pread`ing its quarter (`sys.argv[2]`) in 1 MiB reads, as ranks
/// loading their part of one checkpoint.
const QUARTER: &str = "import os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\nq = os.fstat(fd).st_size // 4\nt = int(sys.argv[2])\nfor o in range(t * q, (t + 1) * q, 1 << 20):\n    os.pread(fd, min(1 << 20, (t + 1) * q - o), o)\nprint(q)\n";

/// 1 MiB `pread`s from the end of the file to its start.
const BACKWARDS: &str = "import os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\nn = os.fstat(fd).st_size\no = n\nwhile o > 0:\n    s = max(0, o - (1 << 20))\n    os.pread(fd, o - s, s)\n    o = s\nprint(n)\n";

/// MB/s of a python3 `script` given the mounted file and `args`; it prints the bytes it read.
fn python_mb_per_s(mount: &Mount, key: &str, script: &str, args: &[&str]) -> f64 {
    let start = Instant::now();
    let out = Command::new("python3").args(["-c", script]).arg(mount.path(key)).args(args).output().expect("python3");
    assert!(out.status.success(), "python3 reader: {}", String::from_utf8_lossy(&out.stderr));
    let bytes: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("bytes read");
    bytes / 1e6 / start.elapsed().as_secs_f64()
}

/// MB/s of four processes reading their quarter each at once, and bytes fetched per byte read.
fn four_processes(mount: &Mount, key: &str, counters: &Counters) -> (f64, f64) {
    counters.reset();
    let start = Instant::now();
    let ranks: Vec<_> = (0..4)
        .map(|t| {
            Command::new("python3")
                .args(["-c", QUARTER])
                .arg(mount.path(key))
                .arg(t.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python3")
        })
        .collect();
    let mut bytes = 0.0;
    for rank in ranks {
        let out = rank.wait_with_output().expect("python3");
        assert!(out.status.success(), "a rank failed");
        bytes += String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().expect("bytes read");
    }
    let speed = bytes / 1e6 / start.elapsed().as_secs_f64();
    (speed, counters.snapshot().body_bytes_sent as f64 / bytes)
}

/// Runs a measurement (MB/s) on a fresh mount and gives its result.
pub type OnFreshMount<'a> = dyn FnMut(&dyn Fn(&Mount) -> f64) -> f64 + 'a;

/// The rows, each measured on a fresh mount by `fresh`, with `dd` (MB/s of `dd bs=1M` on a fresh
/// mount in this run) and the raw `ceiling`.
pub fn rows(
    fresh: &mut OnFreshMount,
    profile: &'static str,
    large_mib: u64,
    dd: f64,
    ceiling: f64,
    counters: &Counters,
    rows: &mut Vec<Row>,
) {
    let readers: [(String, &str, Vec<String>); 4] = [
        ("mmap, copied out in 8 MiB slices".into(), MAPPED_SLICES, vec![(8 * MIB).to_string()]),
        ("mmap, copied out in 64 MiB slices".into(), MAPPED_SLICES, vec![(64 * MIB).to_string()]),
        ("4 threads on one descriptor, each a quarter, 1 MiB preads".into(), THREADS, Vec::new()),
        ("1 MiB preads from the end to the start".into(), BACKWARDS, Vec::new()),
    ];
    for (measure, script, args) in readers {
        eprintln!("[{profile}] {measure} ...");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let speed = fresh(&|mount| python_mb_per_s(mount, "large.bin", script, &args));
        rows.push(Row {
            profile,
            measure: format!("{measure}, {large_mib} MiB ({:.2} of dd bs=1M)", speed / dd),
            value: mbps(speed),
            ratio: Some(speed / ceiling),
        });
    }
    eprintln!("[{profile}] 4 processes on quarters ...");
    let fetched = std::cell::Cell::new(0.0);
    let speed = fresh(&|mount| {
        let (speed, per_byte) = four_processes(mount, "large.bin", counters);
        fetched.set(per_byte);
        speed
    });
    rows.push(Row {
        profile,
        measure: format!(
            "4 processes, each a quarter, 1 MiB preads, {large_mib} MiB ({:.2} of dd bs=1M; {:.3} bytes fetched per byte)",
            speed / dd,
            fetched.get()
        ),
        value: mbps(speed),
        ratio: Some(speed / ceiling),
    });
}
