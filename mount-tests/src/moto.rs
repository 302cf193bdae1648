//! moto (`moto_server`, PyPI) as an independent S3 implementation to check ours against. Its
//! virtualenv is made on first use under `target/`, and one server per test process is shared by
//! all tests in it: moto is slow to start and to serve.

use std::io::{self, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The version the suite was written against; pinned so a new moto cannot change the results.
const MOTO_REQUIREMENT: &str = "moto[server]==5.2.5";

/// The workspace's `target/` directory (or `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Creates the virtualenv with moto once; concurrent test processes wait on a file lock.
fn ensure_venv() -> io::Result<PathBuf> {
    let target = target_dir();
    std::fs::create_dir_all(&target)?;
    let venv = target.join("moto-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".installed");
    let lock = std::fs::File::create(target.join("moto-venv.lock"))?;
    lock.lock()?;
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            MOTO_REQUIREMENT,
        ]))?;
        std::fs::write(&ready, MOTO_REQUIREMENT)?;
    }
    lock.unlock()?;
    Ok(python)
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr))))
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub struct MotoServer {
    pub endpoint_url: String,
}

/// The shared moto server of this test process, started on first call.
pub fn shared() -> Result<&'static MotoServer, String> {
    static SERVER: OnceLock<Result<MotoServer, String>> = OnceLock::new();
    SERVER.get_or_init(|| start().map_err(|e| format!("starting moto_server: {e}"))).as_ref().map_err(Clone::clone)
}

fn start() -> io::Result<MotoServer> {
    let python = ensure_venv()?;
    let port = free_port()?;
    let (tx, rx) = std::sync::mpsc::channel();
    // The child is spawned from a thread that lives as long as the process, because the parent
    // death signal fires when the spawning *thread* exits; so moto dies with the test process.
    std::thread::Builder::new().name("moto-server".into()).spawn(move || {
        let spawned = spawn_with_parent_death_signal(
            Command::new(&python)
                .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let _ = tx.send(Ok(()));
        let _keep = child;
        loop {
            std::thread::park();
        }
    })?;
    rx.recv().map_err(io::Error::other)??;
    let endpoint_url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(io::Error::other("moto_server did not listen within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(MotoServer { endpoint_url })
}

fn spawn_with_parent_death_signal(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    // Drain stderr so moto never blocks on a full pipe; its log is of no use to the tests.
    if let Some(mut stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stderr.read_to_end(&mut sink);
        });
    }
    Ok(child)
}
