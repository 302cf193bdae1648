//! The fetch-layer benchmark: in one run, against the test server, under the loopback and s3-like
//! profiles, fetchfs compared with the raw ceiling (16 parallel 8 MiB ranged GETs). Prints one
//! table of figures and ratios; a benchmark, not a test: nothing here passes or fails.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

mod disk_cache;
mod loader;
mod prefetch_queue;
mod shared_cache;
mod streams;
mod tools;
mod writes;

use clap::Parser;
use mount_tests::ceiling;
use mount_tests::data;
use mount_tests::mount::Mount;
use mount_tests::profile::Profile;
use mount_tests::server::{ServerConfig, StoredObject, TestServer};

const BUCKET: &str = "bench";
const MIB: u64 = 1024 * 1024;
/// Readers of the many-readers row, each of its own file (the first four also make the four-readers row).
const MANY_READERS: usize = 8;
/// Processes reading parts of one file at once.
const SHARING_PROCESSES: u64 = 4;

#[derive(Parser)]
#[command(about = "Benchmark fetchfs against the raw ceiling on the test server")]
struct Args {
    /// Size of the large file, in MiB.
    #[arg(long, default_value_t = 1024)]
    large_mib: u64,
    /// Size of each of the files read at once (four, then eight), in MiB.
    #[arg(long, default_value_t = 256)]
    quarter_mib: u64,
    /// Number of random 256 KiB reads.
    #[arg(long, default_value_t = 400)]
    random_reads: u32,
    /// Profiles to run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "loopback,s3-like")]
    profiles: Vec<Profile>,
    /// Skip the many-small-files measures (serial cat, data-loader workers, ls -l, find).
    #[arg(long)]
    no_small_files: bool,
    /// Skip the disk cache's rows.
    #[arg(long)]
    no_disk_cache: bool,
    /// Skip the write rows.
    #[arg(long)]
    no_writes: bool,
    /// Only these sections' rows (and the raw ceiling).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// Extra options for every `fetchfs mount`.
    #[arg(long, allow_hyphen_values = true)]
    mount_option: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// dd at four read sizes, two passes, mmap.
    ReadSizes,
    /// The column reader and 1-byte preads at far-apart offsets.
    Jumping,
    /// Several readers at once, random reads, time to first byte.
    Readers,
    SmallFiles,
    DiskCache,
    Writes,
    /// Readers making several streams of one file: mmap copies, threads, backwards.
    Streams,
    /// The prefetch queue (`.fetchfs/prefetch`, `fetchfs prefetch`) on the small files.
    Queue,
    /// A shared cache on a second, near server: no cache, node 1, node 2.
    SharedCache,
    /// fio's looping sequential job and pyarrow reading one column, where installed.
    Tools,
}

struct Row {
    profile: &'static str,
    measure: String,
    value: String,
    ratio: Option<f64>,
}

fn main() {
    let args = Args::parse();
    let server = TestServer::start(ServerConfig::default()).unwrap_or_else(|e| panic!("starting the test server: {e}"));
    let storage = server.storage();
    storage.create_bucket(BUCKET).expect("bucket");
    eprintln!("generating {} MiB + {MANY_READERS} x {} MiB of data ...", args.large_mib, args.quarter_mib);
    let large = (args.large_mib * MIB) as usize;
    storage.put(BUCKET, "large.bin", StoredObject::new(data::content(1, large), None)).expect("put");
    for i in 0..MANY_READERS as u64 {
        let q = (args.quarter_mib * MIB) as usize;
        storage.put(BUCKET, &format!("q{i}.bin"), StoredObject::new(data::content(10 + i, q), None)).expect("put");
    }
    if !args.no_small_files {
        eprintln!(
            "generating {SMALL_FILES} x 100 KiB, {LS_FILES} and {TREE_DIRS} x {TREE_FILES_PER_DIR} tiny files ..."
        );
        seed_small_files(storage);
    }
    let extra: Vec<&str> = args.mount_option.iter().map(String::as_str).collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let credentials = server.credentials().cloned().unwrap_or_default();
    let store = runtime
        .block_on(mount_tests::client::fetchfs_store(&server.endpoint_url(), &credentials, BUCKET))
        .expect("S3 store");
    // These machines are VMs: the first touch of guest memory never used before is a trip to the
    // hypervisor, and the first pass through the kernel's page cache pays it on every page
    // (measured: 0.9 GB/s for a first dd on loopback, 1.6 GB/s for the next ones). One untimed
    // pass first, so the rows measure fetchfs and not the VM.
    eprintln!("warming up: one untimed read through a mount ...");
    on_fresh_mount(&server, &extra, &mut 0, |mount| dd_mb_per_s(mount, "large.bin", large, "1M"));
    let mut rows = Vec::new();
    for profile in &args.profiles {
        let profile = *profile;
        profile.apply(server.knobs());
        let name = profile.name();
        eprintln!("[{name}] raw ceiling ...");
        let ceiling =
            runtime.block_on(ceiling::read_all(&store, "large.bin", 16, 8 * MIB)).expect("raw ceiling").mb_per_s();
        rows.push(Row {
            profile: name,
            measure: "raw ceiling, 16 x 8 MiB GETs".into(),
            value: mbps(ceiling),
            ratio: Some(1.0),
        });
        let mut peak_rss = 0;
        let wanted = |section| if args.only.is_empty() { true } else { args.only.contains(&section) };
        if wanted(Section::DiskCache) && !args.no_disk_cache {
            disk_cache::rows(&server, &extra, name, large as u64, !args.no_small_files, &mut peak_rss, &mut rows);
        }
        if wanted(Section::Writes) && !args.no_writes {
            let target = writes::Target { server: &server, store: &store, runtime: &runtime };
            writes::rows(target, &extra, name, large as u64, &mut peak_rss, &mut rows);
        }

        if wanted(Section::ReadSizes) {
            eprintln!("[{name}] dd ...");
            let (dd, cpu) = on_fresh_mount(&server, &extra, &mut peak_rss, |mount| {
                with_daemon_cpu(mount, || dd_mb_per_s(mount, "large.bin", large, "1M"))
            });
            let gib = large as f64 / (1024.0 * 1024.0 * 1024.0);
            rows.push(Row {
                profile: name,
                measure: format!("dd bs=1M of {} MiB (daemon CPU {:.2} s per GiB)", args.large_mib, cpu / gib),
                value: mbps(dd),
                ratio: Some(dd / ceiling),
            });
            for bs in ["4K", "64K", "256K"] {
                eprintln!("[{name}] dd bs={bs} ...");
                let small =
                    on_fresh_mount(&server, &extra, &mut peak_rss, |mount| dd_mb_per_s(mount, "large.bin", large, bs));
                rows.push(Row {
                    profile: name,
                    measure: format!("dd bs={bs} of {} MiB ({:.2} of bs=1M)", args.large_mib, small / dd),
                    value: mbps(small),
                    ratio: Some(small / ceiling),
                });
            }

            eprintln!("[{name}] two passes, pages dropped between ...");
            let (first, second) =
                on_fresh_mount(&server, &extra, &mut peak_rss, |mount| two_passes(mount, "large.bin"));
            rows.push(Row {
                profile: name,
                measure: format!(
                    "256 KiB reads, pass 1 / pass 2 after fadvise(DONTNEED) ({:.2} of bs=1M)",
                    second / dd
                ),
                value: format!("{} / {}", mbps(first), mbps(second)),
                ratio: Some(second / ceiling),
            });

            eprintln!("[{name}] mmap ...");
            let mapped = on_fresh_mount(&server, &extra, &mut peak_rss, |mount| mmap_mb_per_s(mount, "large.bin"));
            rows.push(Row {
                profile: name,
                measure: format!("mmap of {} MiB, read front to back (page faults)", args.large_mib),
                value: mbps(mapped),
                ratio: Some(mapped / ceiling),
            });
        }

        if wanted(Section::Streams) {
            eprintln!("[{name}] dd, to hold the streams to ...");
            let dd =
                on_fresh_mount(&server, &extra, &mut peak_rss, |mount| dd_mb_per_s(mount, "large.bin", large, "1M"));
            let mut fresh = |measure: &dyn Fn(&Mount) -> f64| on_fresh_mount(&server, &extra, &mut peak_rss, measure);
            streams::rows(&mut fresh, name, args.large_mib, dd, ceiling, server.knobs().counters(), &mut rows);
        }

        if wanted(Section::Jumping) {
            for (shift, placed) in [(0, "on"), (123_457, "off")] {
                eprintln!("[{name}] jumping reader, chunks {placed} block boundaries ...");
                let (jumping, amplification) = on_fresh_mount(&server, &extra, &mut peak_rss, |mount| {
                    server.knobs().counters().reset();
                    column_chunks(mount, "large.bin", large as u64, shift, server.knobs().counters())
                });
                rows.push(Row {
                    profile: name,
                    measure: format!(
                        "one column: 8 chunks of 4 MiB, 128 MiB apart, {placed} block boundaries, 1 MiB reads"
                    ),
                    value: format!("{} ({amplification:.2} bytes sent per byte read)", mbps(jumping)),
                    ratio: Some(jumping / ceiling),
                });
            }

            eprintln!("[{name}] random first bytes ...");
            let offsets = far_apart_offsets(large as u64);
            let raw =
                runtime.block_on(ceiling::first_byte_median(&store, "large.bin", &offsets)).expect("raw first bytes");
            let first_bytes =
                on_fresh_mount(&server, &extra, &mut peak_rss, |mount| random_first_bytes(mount, &offsets));
            rows.push(Row {
                profile: name,
                measure: "1-byte pread at 10 far-apart offsets of an open file, median (raw 1-byte GET)".into(),
                value: format!("{:.1} ms ({:.1} ms)", ms(first_bytes), ms(raw)),
                ratio: None,
            });
        }

        if wanted(Section::Readers) {
            for readers in [4, MANY_READERS] {
                eprintln!("[{name}] {readers} readers ...");
                let (total, amplification) = on_fresh_mount(&server, &extra, &mut peak_rss, |mount| {
                    server.knobs().counters().reset();
                    concurrent_dd(mount, readers, args.quarter_mib * MIB, server.knobs().counters())
                });
                rows.push(Row {
                    profile: name,
                    measure: format!("{readers} readers x {} MiB, total", args.quarter_mib),
                    value: format!("{} ({amplification:.2} bytes sent per byte read)", mbps(total)),
                    ratio: Some(total / ceiling),
                });
            }

            eprintln!("[{name}] {SHARING_PROCESSES} processes on one file ...");
            let (total, amplification) = on_fresh_mount(&server, &extra, &mut peak_rss, |mount| {
                server.knobs().counters().reset();
                one_file_in_parts(mount, "large.bin", large as u64, SHARING_PROCESSES, server.knobs().counters())
            });
            rows.push(Row {
                profile: name,
                measure: format!(
                    "{SHARING_PROCESSES} processes, each 1/{SHARING_PROCESSES} of one {} MiB file, total",
                    args.large_mib
                ),
                value: format!("{} ({amplification:.2} bytes sent per byte read)", mbps(total)),
                ratio: Some(total / ceiling),
            });

            eprintln!("[{name}] two versions side by side ...");
            let (new_version, old_read, stale) = on_fresh_mount(&server, &extra, &mut peak_rss, |mount| {
                two_versions_side_by_side(mount, &server, (args.quarter_mib * MIB) as usize)
            });
            rows.push(Row {
                profile: name,
                measure: format!(
                    "{} MiB object replaced under an open reader: the new version's reader (the old one's)",
                    args.quarter_mib
                ),
                value: format!(
                    "{} ({} MiB exact, then {})",
                    mbps(new_version),
                    old_read as u64 / MIB,
                    if stale { "ESTALE" } else { "its end" }
                ),
                ratio: Some(new_version / ceiling),
            });

            eprintln!("[{name}] random reads ...");
            let (random, amplification) = on_fresh_mount(&server, &extra, &mut peak_rss, |mount| {
                server.knobs().counters().reset();
                random_reads(mount, large as u64, args.random_reads, server.knobs().counters())
            });
            rows.push(Row {
                profile: name,
                measure: format!("{} random 256 KiB reads", args.random_reads),
                value: format!("{} ({amplification:.2} bytes sent per byte read)", mbps(random)),
                ratio: Some(random / ceiling),
            });

            eprintln!("[{name}] time to first byte ...");
            let ttfb = on_fresh_mount(&server, &extra, &mut peak_rss, |mount| {
                let start = Instant::now();
                let mut file = File::open(mount.path("large.bin")).expect("open");
                let mut byte = [0u8; 1];
                file.read_exact(&mut byte).expect("first byte");
                start.elapsed()
            });
            rows.push(Row {
                profile: name,
                measure: "time to first byte (open + read)".into(),
                value: format!("{:.1} ms", ms(ttfb)),
                ratio: None,
            });
        }
        if wanted(Section::SmallFiles) && !args.no_small_files {
            small_file_rows(&server, &extra, &mut peak_rss, name, &mut rows);
        }
        if wanted(Section::Queue) && !args.no_small_files {
            prefetch_queue::rows(&server, &extra, &mut peak_rss, name, &mut rows);
        }
        if wanted(Section::Tools) {
            let mut fresh =
                |measure: &dyn Fn(&Mount) -> (f64, f64)| on_fresh_mount(&server, &extra, &mut peak_rss, measure);
            tools::rows(&server, &mut fresh, name, ceiling, &mut rows);
        }
        if wanted(Section::SharedCache) && !args.no_small_files {
            shared_cache::rows(&server, &extra, large, name, &mut peak_rss, &mut rows);
        }
        rows.push(peak_rss_row(name, peak_rss));
    }
    server.knobs().clear();

    println!("| profile | measure | result | ratio to raw ceiling |");
    println!("|---|---|---|---|");
    for row in rows {
        let ratio = row.ratio.map_or(String::from("-"), |r| format!("{r:.2}"));
        println!("| {} | {} | {} | {} |", row.profile, row.measure, row.value, ratio);
    }
}

fn peak_rss_row(profile: &'static str, peak_rss_kib: u64) -> Row {
    Row { profile, measure: "daemon peak RSS".into(), value: format!("{} MiB", peak_rss_kib / 1024), ratio: None }
}

const SMALL_FILES: u64 = 1000;
const LS_FILES: u64 = 10_000;
const TREE_DIRS: u64 = 100;
const TREE_FILES_PER_DIR: u64 = 1000;

fn seed_small_files(storage: &mount_tests::server::Storage) {
    for i in 0..SMALL_FILES {
        let object = StoredObject::new(data::content(100 + i, 100 * 1024), None);
        storage.put(BUCKET, &format!("small/f{i:05}.jpg"), object).expect("put");
    }
    let tiny = StoredObject::new(data::content(0, 16), None);
    for i in 0..LS_FILES {
        storage.put(BUCKET, &format!("ten-k/f{i:05}.json"), tiny.clone()).expect("put");
    }
    for d in 0..TREE_DIRS {
        for f in 0..TREE_FILES_PER_DIR {
            storage.put(BUCKET, &format!("tree/d{d:03}/f{f:04}"), tiny.clone()).expect("put");
        }
    }
}

fn small_file_rows(server: &TestServer, extra: &[&str], peak_rss: &mut u64, name: &'static str, rows: &mut Vec<Row>) {
    let files_per_s = |count: u64, took: Duration| format!("{:.0} files/s", count as f64 / took.as_secs_f64());
    let shell_rows = [
        (
            "for f in small/*; do cat \"$f\"; done > /dev/null",
            format!("serial cat of {SMALL_FILES} x 100 KiB files (a shell loop, a cat per file)"),
        ),
        (
            "ls small > /dev/null && cat small/* > /dev/null",
            format!("ls + cat small/* of {SMALL_FILES} x 100 KiB files (one cat)"),
        ),
    ];
    for (script, measure) in shell_rows {
        eprintln!("[{name}] {measure} ...");
        let (took, cpu) = on_fresh_mount(server, extra, peak_rss, |mount| {
            with_daemon_cpu(mount, || timed(|| run(Command::new("sh").arg("-c").arg(script).current_dir(&mount.dir))))
        });
        let measure = format!("{measure}; daemon CPU {:.0} us per file", cpu * 1e6 / SMALL_FILES as f64);
        rows.push(Row { profile: name, measure, value: files_per_s(SMALL_FILES, took), ratio: None });
    }
    eprintln!("[{name}] cat of files named in a list, their directory never listed ...");
    let list = std::env::temp_dir().join(format!("fetchfs-bench-names-{}", std::process::id()));
    let names: String = (0..SMALL_FILES).map(|i| format!("small/f{i:05}.jpg\n")).collect();
    std::fs::write(&list, names).expect("write the list of names");
    let counters = server.knobs().counters();
    let (took, requests) = on_fresh_mount(server, extra, peak_rss, |mount| {
        counters.reset();
        let took = timed(|| {
            run(Command::new("xargs")
                .arg("-a")
                .arg(&list)
                .arg("cat")
                .current_dir(&mount.dir)
                .stdout(std::process::Stdio::null()))
        });
        let snapshot = counters.snapshot();
        (took, ["HeadObject", "ListObjectsV2", "GetObject"].map(|op| snapshot.requests_of(op)))
    });
    let _ = std::fs::remove_file(&list);
    rows.push(Row {
        profile: name,
        measure: format!(
            "cat of {SMALL_FILES} x 100 KiB files by name, directory never listed (xargs cat); HEAD / LIST / GET {} / {} / {}",
            requests[0], requests[1], requests[2]
        ),
        value: files_per_s(SMALL_FILES, took),
        ratio: None,
    });
    for order in ["sorted", "shuffled"] {
        eprintln!("[{name}] 8 data-loader workers, {order} ...");
        let took = on_fresh_mount(server, extra, peak_rss, |mount| {
            let workers = loader::Started::workers(&mount.path("small"), order);
            timed(|| workers.run())
        });
        rows.push(Row {
            profile: name,
            measure: format!("8 python3 workers, {SMALL_FILES} x 100 KiB files, {order}"),
            value: files_per_s(SMALL_FILES, took),
            ratio: None,
        });
    }
    eprintln!("[{name}] lookups of unlisted names, 1 and 8 processes ...");
    let mut lookup_times = Vec::new();
    for processes in [1, 8] {
        let took = on_fresh_mount(server, extra, peak_rss, |mount| unlisted_lookups(mount, processes));
        lookup_times.push(took);
    }
    rows.push(Row {
        profile: name,
        measure: format!("{LOOKUPS} lookups of unlisted names in one directory, 1 / 8 processes"),
        value: format!(
            "{:.2} s / {:.2} s ({:.1}x)",
            lookup_times[0].as_secs_f64(),
            lookup_times[1].as_secs_f64(),
            lookup_times[0].as_secs_f64() / lookup_times[1].as_secs_f64()
        ),
        ratio: None,
    });
    eprintln!("[{name}] ls -l and find ...");
    let took = on_fresh_mount(server, extra, peak_rss, |mount| {
        timed(|| run(Command::new("ls").arg("-l").arg(mount.path("ten-k")).stdout(std::process::Stdio::null())))
    });
    rows.push(Row {
        profile: name,
        measure: format!("ls -l of {LS_FILES} files"),
        value: format!("{:.2} s", took.as_secs_f64()),
        ratio: None,
    });
    let took = on_fresh_mount(server, extra, peak_rss, |mount| {
        timed(|| {
            run(Command::new("find").arg(mount.path("tree")).args(["-type", "f"]).stdout(std::process::Stdio::null()))
        })
    });
    let keys = TREE_DIRS * TREE_FILES_PER_DIR;
    rows.push(Row {
        profile: name,
        measure: format!("find over {keys} keys"),
        value: format!("{:.2} s", took.as_secs_f64()),
        ratio: None,
    });
}

const LOOKUPS: u64 = 400;

/// `stat`s of LOOKUPS names of a directory never listed, as data-loader workers opening paths from
/// a file list do, split over `processes` processes. Timed from when every process has started
/// (each says so, then waits for a go), so the figure is the lookups, not python3 starting.
fn unlisted_lookups(mount: &Mount, processes: u64) -> Duration {
    use std::io::{BufRead, BufReader, Write};
    const STAT: &str =
        "import os, sys\nprint('ready', flush=True)\nsys.stdin.readline()\nfor p in sys.argv[1:]:\n    os.stat(p)\n";
    let mut workers: Vec<_> = (0..processes)
        .map(|k| {
            let names = (k..LOOKUPS).step_by(processes as usize).map(|i| mount.path(&format!("small/f{i:05}.jpg")));
            Command::new("python3")
                .args(["-c", STAT])
                .args(names)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn python3")
        })
        .collect();
    for worker in &mut workers {
        let mut line = String::new();
        BufReader::new(worker.stdout.as_mut().expect("stdout")).read_line(&mut line).expect("ready");
    }
    let start = Instant::now();
    for worker in &mut workers {
        worker.stdin.as_mut().expect("stdin").write_all(b"go\n").expect("go");
    }
    for mut worker in workers {
        assert!(worker.wait().expect("python3").success(), "a worker failed");
    }
    start.elapsed()
}

/// Reads `key` (of `bytes` bytes) through the mount with `dd bs=BS`; returns MB/s.
fn dd_mb_per_s(mount: &Mount, key: &str, bytes: usize, bs: &str) -> f64 {
    let start = Instant::now();
    run(Command::new("dd")
        .arg(format!("if={}", mount.path(key).display()))
        .args(["of=/dev/null", &format!("bs={bs}")]));
    bytes as f64 / 1e6 / start.elapsed().as_secs_f64()
}

/// A reader that goes through the file in 256 KiB reads, drops its pages (as fio does between
/// loops, or an epoch that does not fit in memory) and goes through it again: MB/s of each pass.
fn two_passes(mount: &Mount, key: &str) -> (f64, f64) {
    let mut file = File::open(mount.path(key)).expect("open");
    let mut buf = vec![0u8; 256 * 1024];
    let mut pass = |file: &mut File| {
        let start = Instant::now();
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total as f64 / 1e6 / start.elapsed().as_secs_f64()
    };
    let first = pass(&mut file);
    // SAFETY: advice on a descriptor we own.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    std::io::Seek::rewind(&mut file).expect("rewind");
    (first, pass(&mut file))
}

/// A model loader's access: the file mapped and read front to back through page faults, as
/// python3's mmap copies it 1 MiB at a time. MB/s.
fn mmap_mb_per_s(mount: &Mount, key: &str) -> f64 {
    const MAPPED: &str = "import mmap, sys\nwith open(sys.argv[1], 'rb') as f:\n    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n    n = 0\n    while n < len(m):\n        n += len(m[n:n + (1 << 20)])\n    print(n)\n";
    let start = Instant::now();
    let out = Command::new("python3").args(["-c", MAPPED]).arg(mount.path(key)).output().expect("python3");
    assert!(out.status.success(), "mmap read: {}", String::from_utf8_lossy(&out.stderr));
    let bytes: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("bytes read");
    bytes / 1e6 / start.elapsed().as_secs_f64()
}

/// One column of a Parquet file of 8 row groups of 128 MiB: 8 chunks of 4 MiB, one per row group,
/// `shift` bytes past a block boundary (a real file's chunks start anywhere), each read front to
/// back in 1 MiB reads. MB/s, and bytes the server sent per byte read.
fn column_chunks(
    mount: &Mount,
    key: &str,
    size: u64,
    shift: u64,
    counters: &mount_tests::server::Counters,
) -> (f64, f64) {
    const CHUNK: u64 = 4 * MIB;
    let groups = 8.min(size / (128 * MIB)).max(1);
    let file = File::open(mount.path(key)).expect("open");
    let mut buf = vec![0u8; MIB as usize];
    let start = Instant::now();
    for group in 0..groups {
        let chunk_start = group * (size / groups) + 5 * CHUNK + shift;
        for offset in (chunk_start..chunk_start + CHUNK).step_by(MIB as usize) {
            file.read_exact_at(&mut buf, offset).expect("pread");
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Readahead still in flight when the reader stops is counted too: wait for it to land.
    std::thread::sleep(Duration::from_millis(500));
    let read = (groups * CHUNK) as f64;
    (read / 1e6 / elapsed, counters.snapshot().body_bytes_sent as f64 / read)
}

/// Ten offsets spread over a file of `size` bytes, none in the same block as another or as 0.
fn far_apart_offsets(size: u64) -> Vec<u64> {
    (1..=10u64).map(|i| i * (size / 11) + 12345).collect()
}

/// Median time of a 1-byte pread at each of `offsets` in an open file (none cached).
fn random_first_bytes(mount: &Mount, offsets: &[u64]) -> Duration {
    let file = File::open(mount.path("large.bin")).expect("open");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, 0).expect("first pread");
    let mut times: Vec<Duration> = offsets
        .iter()
        .map(|&offset| {
            let start = Instant::now();
            file.read_exact_at(&mut byte, offset).expect("pread");
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn timed(work: impl FnOnce()) -> Duration {
    let start = Instant::now();
    work();
    start.elapsed()
}

fn mbps(v: f64) -> String {
    format!("{v:.0} MB/s")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `readers` concurrent `dd`s, each of its own file of `size` bytes: MB/s in total, and bytes the
/// server sent per byte read.
fn concurrent_dd(mount: &Mount, readers: usize, size: u64, counters: &mount_tests::server::Counters) -> (f64, f64) {
    let start = Instant::now();
    let children: Vec<_> = (0..readers)
        .map(|i| {
            Command::new("dd")
                .arg(format!("if={}", mount.path(&format!("q{i}.bin")).display()))
                .args(["of=/dev/null", "bs=1M", "status=none"])
                .spawn()
                .expect("spawn dd")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("dd").success(), "dd through the mount failed");
    }
    let read = (readers as u64 * size) as f64;
    (read / 1e6 / start.elapsed().as_secs_f64(), counters.snapshot().body_bytes_sent as f64 / read)
}

/// `processes` `dd`s at once, each reading its own part of one file (data-loader workers sharing a
/// shard file): MB/s in all, and the bytes the server sent per byte read.
fn one_file_in_parts(
    mount: &Mount,
    key: &str,
    size: u64,
    processes: u64,
    counters: &mount_tests::server::Counters,
) -> (f64, f64) {
    let part_mib = size / processes / MIB;
    let start = Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|i| {
            Command::new("dd")
                .arg(format!("if={}", mount.path(key).display()))
                .args(["of=/dev/null", "bs=1M", "status=none"])
                .arg(format!("skip={}", i * part_mib))
                .arg(format!("count={part_mib}"))
                .spawn()
                .expect("spawn dd")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("dd").success(), "dd through the mount failed");
    }
    let read = (processes * part_mib * MIB) as f64;
    (read / 1e6 / start.elapsed().as_secs_f64(), counters.snapshot().body_bytes_sent as f64 / read)
}

/// How long a mount with default options goes on seeing a replaced object's old version
/// (`--metadata-ttl`).
const DEFAULT_METADATA_TTL: Duration = Duration::from_secs(5);

/// A reader of an object's version that stays open while the object is replaced, and a reader
/// of the new version opened beside it (a checkpoint replaced under a job that reads it). The old
/// version's bytes are gone from the bucket, so its reader gets what was fetched before, exact,
/// then `ESTALE`, never a byte of the new version. Returns the new version's reader's MB/s, the
/// bytes the old one's got, and whether it then got `ESTALE`.
fn two_versions_side_by_side(mount: &Mount, server: &TestServer, size: usize) -> (f64, usize, bool) {
    const KEY: &str = "replaced.bin";
    let (old, new) = (data::content(20, size), data::content(21, size));
    server.storage().put(BUCKET, KEY, StoredObject::new(old.clone(), None)).expect("put");
    let mut first = File::open(mount.path(KEY)).expect("open the first version");
    let mut got = vec![0u8; MIB as usize];
    first.read_exact(&mut got).expect("read the first version");
    server.storage().put(BUCKET, KEY, StoredObject::new(new.clone(), None)).expect("replace");
    std::thread::sleep(DEFAULT_METADATA_TTL + Duration::from_millis(500));
    let second = std::thread::spawn({
        let path = mount.path(KEY);
        move || {
            let start = Instant::now();
            let bytes = std::fs::read(path).expect("read the second version");
            (bytes, start.elapsed())
        }
    });
    let mut buf = vec![0u8; MIB as usize];
    let stale = loop {
        match first.read(&mut buf) {
            Ok(0) => break false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "the old version's reader: {e}");
                break true;
            }
        }
    };
    assert!(got[..] == old[..got.len()], "the old version's reader got only its own version's bytes");
    let (second, elapsed) = second.join().expect("the second reader");
    assert!(second[..] == new[..], "the new version's reader got its bytes, whole");
    (size as f64 / 1e6 / elapsed.as_secs_f64(), got.len(), stale)
}

/// Random 256 KiB preads with the kernel's readahead off for the file; returns MB/s and the bytes
/// the server sent per byte read.
fn random_reads(mount: &Mount, size: u64, count: u32, counters: &mount_tests::server::Counters) -> (f64, f64) {
    const READ: u64 = 256 * 1024;
    let file = File::open(mount.path("large.bin")).expect("open");
    // SAFETY: advice on a descriptor we own.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    let mut buf = vec![0u8; READ as usize];
    let mut rng = fastrand::Rng::with_seed(42);
    let start = Instant::now();
    for _ in 0..count {
        let offset = rng.u64(0..(size - READ) / 4096) * 4096;
        file.read_exact_at(&mut buf, offset).expect("pread");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let read = (count as u64 * READ) as f64;
    (read / 1e6 / elapsed, counters.snapshot().body_bytes_sent as f64 / read)
}

/// User plus system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    // SAFETY: sysconf only reads system configuration.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// What `work` returns, and the CPU seconds the mount's daemon spent while it ran.
fn with_daemon_cpu<T>(mount: &Mount, work: impl FnOnce() -> T) -> (T, f64) {
    let pid = mount.daemon_pid().unwrap_or(0);
    let before = cpu_seconds(pid);
    let result = work();
    (result, cpu_seconds(pid) - before)
}

/// Runs `measure` on a mount of its own (so no page cache carries over from another measure),
/// folds the daemon's peak RSS into `peak_rss`, and unmounts.
fn on_fresh_mount<T>(server: &TestServer, extra: &[&str], peak_rss: &mut u64, measure: impl FnOnce(&Mount) -> T) -> T {
    let mount = Mount::of(server, BUCKET, extra);
    let result = measure(&mount);
    *peak_rss = (*peak_rss).max(mount.peak_rss_kib());
    result
}
