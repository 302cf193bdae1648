//! Programs the issues measured with, run as they are when this machine has them: fio's sequential
//! job looping over the large file (its pages dropped at each start), and pyarrow reading one
//! column of a wide Parquet file. Skipped, with a line saying how to get them, when absent.

use std::process::{Command, Stdio};

use bytes::Bytes;
use mount_tests::mount::Mount;
use mount_tests::server::{Counters, StoredObject, TestServer};

use super::{BUCKET, Row, mbps};

/// Writes a Parquet file of 8 row groups of 32 float64 columns (4 MiB per column chunk,
/// uncompressed) to `sys.argv[1]`.
const WRITE_WIDE: &str = "import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq\nrows = 512 * 1024\nw = None\nfor g in range(8):\n    t = pa.table({f'c{i}': np.random.default_rng(g * 100 + i).random(rows) for i in range(32)})\n    w = w or pq.ParquetWriter(sys.argv[1], t.schema, compression='none', use_dictionary=False)\n    w.write_table(t, row_group_size=rows)\nw.close()\n";

/// Reads column `sys.argv[2]` of the file; prints the bytes of its chunks.
const READ_COLUMN: &str = "import sys, pyarrow.parquet as pq\nf = pq.ParquetFile(sys.argv[1])\nc = f.schema_arrow.get_field_index(sys.argv[2])\npq.read_table(sys.argv[1], columns=[sys.argv[2]])\nprint(sum(f.metadata.row_group(g).column(c).total_compressed_size for g in range(f.metadata.num_row_groups)))\n";

/// Runs a measure on a fresh mount: MB/s and a second figure.
pub type OnFreshMount<'a> = dyn FnMut(&dyn Fn(&Mount) -> (f64, f64)) -> (f64, f64) + 'a;

fn has(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// fio's sequential 256 KiB job looping over `key` for 10 s, pages dropped at each loop: MB/s.
pub fn fio_loop(mount: &Mount, key: &str) -> f64 {
    let out = Command::new("fio")
        .args(["--name=loop", "--rw=read", "--bs=256k", "--time_based", "--runtime=10", "--invalidate=1"])
        .args(["--ioengine=psync", "--minimal"])
        .arg(format!("--filename={}", mount.path(key).display()))
        .output()
        .expect("fio");
    assert!(out.status.success(), "fio: {}", String::from_utf8_lossy(&out.stderr));
    // Terse output: the seventh field is the read bandwidth in KiB/s.
    let terse = String::from_utf8_lossy(&out.stdout);
    let kib_per_s: f64 = terse.split(';').nth(6).and_then(|f| f.trim().parse().ok()).expect("fio's read bandwidth");
    kib_per_s * 1024.0 / 1e6
}

pub fn rows(server: &TestServer, fresh: &mut OnFreshMount, name: &'static str, ceiling: f64, rows: &mut Vec<Row>) {
    if has("fio", &["--version"]) {
        eprintln!("[{name}] fio, sequential 256 KiB loop ...");
        let (speed, _) = fresh(&|mount| (fio_loop(mount, "large.bin"), 0.0));
        rows.push(Row {
            profile: name,
            measure: "fio: sequential 256 KiB reads looping over large.bin for 10 s, pages dropped at each loop".into(),
            value: mbps(speed),
            ratio: Some(speed / ceiling),
        });
    } else {
        eprintln!("[{name}] no fio here (apt-get install fio): its row is skipped");
    }
    if has("python3", &["-c", "import numpy, pyarrow"]) {
        eprintln!("[{name}] pyarrow, one column of a wide Parquet file ...");
        let file = mount_tests::mount::fresh_dir("bench-parquet").join("wide.parquet");
        let written = Command::new("python3").args(["-c", WRITE_WIDE]).arg(&file).status().expect("python3");
        assert!(written.success(), "writing the Parquet file");
        let data = Bytes::from(std::fs::read(&file).expect("the Parquet file"));
        server.storage().put(BUCKET, "wide.parquet", StoredObject::new(data, None)).expect("put");
        let counters: &Counters = server.knobs().counters();
        let (speed, per_byte) = fresh(&|mount| {
            counters.reset();
            let start = std::time::Instant::now();
            let out = Command::new("python3")
                .args(["-c", READ_COLUMN])
                .arg(mount.path("wide.parquet"))
                .arg("c7")
                .output()
                .expect("python3");
            assert!(out.status.success(), "pyarrow: {}", String::from_utf8_lossy(&out.stderr));
            let column: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("column bytes");
            let speed = column / 1e6 / start.elapsed().as_secs_f64();
            // Readahead still in flight when pyarrow is done counts too.
            std::thread::sleep(std::time::Duration::from_millis(500));
            (speed, counters.snapshot().body_bytes_sent as f64 / column)
        });
        rows.push(Row {
            profile: name,
            measure: format!(
                "pyarrow read_table of one column (8 chunks of 4 MiB, 32 columns), python startup included; {per_byte:.2} bytes fetched per column byte"
            ),
            value: mbps(speed),
            ratio: None,
        });
    } else {
        eprintln!("[{name}] no pyarrow for python3 here (pip install pyarrow numpy): its row is skipped");
    }
}
