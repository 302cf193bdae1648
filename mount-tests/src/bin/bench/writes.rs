//! The write path's rows: a 1 GiB sequential write (`dd bs=1M conv=fsync`) against the raw
//! ceiling of writing (one multipart upload of the same size, 16 parts of 8 MiB in flight), and
//! 1000 files of 100 KiB written by 8 processes.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use fetchfs::store::s3::S3Store;
use mount_tests::ceiling;
use mount_tests::mount::Mount;
use mount_tests::server::TestServer;

use super::{BUCKET, MIB, Row, mbps, run, timed};

const WRITERS: u64 = 8;
const FILES: u64 = 1000;

/// A writer of every 8th file of 1000, as a data pipeline's workers write their outputs.
const WORKER: &str = "import sys\nroot, k = sys.argv[1], int(sys.argv[2])\nfor i in range(k, 1000, 8):\n    with open(f'{root}/f{i:04}', 'wb') as f:\n        f.write(bytes([i % 256]) * 102400)\n";

/// Where the rows write: the server, a store straight to it, and a runtime for that store.
pub struct Target<'a> {
    pub server: &'a TestServer,
    pub store: &'a Arc<S3Store>,
    pub runtime: &'a tokio::runtime::Runtime,
}

pub fn rows(
    Target { server, store, runtime }: Target<'_>,
    extra: &[&str],
    name: &'static str,
    large: u64,
    peak_rss: &mut u64,
    rows: &mut Vec<Row>,
) {
    eprintln!("[{name}] raw upload ceiling ...");
    let data = mount_tests::data::content(3, large as usize);
    // Untimed first: the server's first touch of that much new memory is the VM's cost, not S3's
    // (as for reads, see main).
    runtime
        .block_on(ceiling::upload_all(store, &format!("ceiling-{name}.bin"), data.clone(), 16, 8 * MIB as usize))
        .expect("raw upload, warming up");
    let ceiling = runtime
        .block_on(ceiling::upload_all(store, &format!("ceiling-{name}.bin"), data, 16, 8 * MIB as usize))
        .expect("raw upload ceiling");
    rows.push(Row {
        profile: name,
        measure: "raw upload ceiling, 16 x 8 MiB parts in flight".into(),
        value: mbps(ceiling),
        ratio: None,
    });

    eprintln!("[{name}] dd into the mount ...");
    let mount = Mount::of(server, BUCKET, extra);
    let key = format!("written-{name}.bin");
    let start = Instant::now();
    run(Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", mount.path(&key).display()))
        .arg(format!("count={}", large / MIB))
        .args(["bs=1M", "conv=fsync", "status=none"]));
    let written = large as f64 / 1e6 / start.elapsed().as_secs_f64();
    rows.push(Row {
        profile: name,
        measure: format!(
            "dd bs=1M conv=fsync of {} MiB into the mount ({:.2} of the raw upload)",
            large / MIB,
            written / ceiling
        ),
        value: mbps(written),
        ratio: None,
    });

    eprintln!("[{name}] {FILES} files from {WRITERS} processes ...");
    let dir = mount.path(&format!("outputs-{name}"));
    std::fs::create_dir(&dir).expect("mkdir in the mount");
    let took = timed(|| {
        let workers: Vec<_> = (0..WRITERS)
            .map(|k| {
                Command::new("python3").args(["-c", WORKER]).arg(&dir).arg(k.to_string()).spawn().expect("python3")
            })
            .collect();
        for worker in workers {
            assert!(worker.wait_with_output().expect("python3").status.success(), "a writer failed");
        }
    });
    rows.push(Row {
        profile: name,
        measure: format!("{FILES} x 100 KiB files written by {WRITERS} python3 processes"),
        value: format!("{:.0} files/s", FILES as f64 / took.as_secs_f64()),
        ratio: None,
    });
    *peak_rss = (*peak_rss).max(mount.peak_rss_kib());
}
