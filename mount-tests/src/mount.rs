//! Mounting the `fetchfs` binary built from this checkout (found next to the running test, never
//! on PATH) at a fresh directory, and always unmounting and cleaning up, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::server::{Credentials, TestServer};

/// `target/<profile>/fetchfs`, the binary cargo built with this test or tool.
pub fn fetchfs_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running program");
    // Tests run from target/<profile>/deps/, tools (bench) from target/<profile>/.
    let mut dir = exe.parent().expect("a program lives in a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps/ lives in target/<profile>/");
    }
    dir.join("fetchfs")
}

/// A fresh, empty directory under the system temp dir, unique to this call.
pub fn fresh_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fetchfs-{tag}-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// Runs `fetchfs` with the server's keys in the environment (never on the command line).
pub fn fetchfs_command(credentials: Option<&Credentials>) -> Command {
    let mut cmd = Command::new(fetchfs_binary());
    cmd.env_remove("AWS_PROFILE").env_remove("AWS_ENDPOINT_URL").env("AWS_EC2_METADATA_DISABLED", "true");
    match credentials {
        Some(c) => cmd.env("AWS_ACCESS_KEY_ID", &c.access_key).env("AWS_SECRET_ACCESS_KEY", &c.secret_key),
        None => cmd.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY"),
    };
    cmd.stdin(Stdio::null());
    cmd
}

/// A live mount; dropping it unmounts and removes the directory.
pub struct Mount {
    pub dir: PathBuf,
    pub log: PathBuf,
    /// What `fetchfs mount` said on stderr (its startup line, warnings).
    pub said: String,
}

impl Mount {
    /// Mounts `bucket` of an S3 endpoint in the background (fetchfs's default mode).
    pub fn new(endpoint: &str, credentials: &Credentials, bucket: &str, extra: &[&str]) -> Result<Self, String> {
        Self::with_env(endpoint, credentials, bucket, extra, &[])
    }

    /// The same, with `env` added to the daemon's environment.
    pub fn with_env(
        endpoint: &str,
        credentials: &Credentials,
        bucket: &str,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Result<Self, String> {
        let mut command = fetchfs_command(Some(credentials));
        command.envs(env.iter().copied());
        Self::spawned(command, endpoint, bucket, extra)
    }

    /// Mounts `bucket` with the daemon started inside a (v1) memory control group, whose
    /// `cgroup.procs` is `procs`: it sees the group's limit from its first instruction.
    pub fn in_cgroup(server: &TestServer, bucket: &str, extra: &[&str], procs: &Path) -> Result<Self, String> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::CommandExt;
        let credentials = server.credentials().cloned().unwrap_or_default();
        let procs = std::ffi::CString::new(procs.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let mut command = fetchfs_command(Some(&credentials));
        // SAFETY: between fork and exec, only open, write and close (async-signal-safe) on a path
        // made before the fork; writing "0" moves the writing process into the group.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let wrote = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if wrote != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Self::spawned(command, &server.endpoint_url(), bucket, extra)
    }

    fn spawned(mut command: Command, endpoint: &str, bucket: &str, extra: &[&str]) -> Result<Self, String> {
        let dir = fresh_dir("mnt");
        let log = dir.with_extension("log");
        let out = command
            .arg("mount")
            .arg(bucket)
            .arg(&dir)
            .args(["--endpoint-url", endpoint, "--force-path-style", "--debug", "--log-file"])
            .arg(&log)
            .args(extra)
            .output()
            .map_err(|e| format!("running fetchfs: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!("fetchfs mount failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
        Ok(Self { dir, log, said: String::from_utf8_lossy(&out.stderr).into_owned() })
    }

    pub fn of(server: &TestServer, bucket: &str, extra: &[&str]) -> Self {
        let credentials = server.credentials().cloned().unwrap_or_default();
        Self::new(&server.endpoint_url(), &credentials, bucket, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// The daemon serving this mount, found by its command line.
    pub fn daemon_pid(&self) -> Option<u32> {
        let dir = self.dir.to_str()?;
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let ours = args.first().is_some_and(|a| a.ends_with(b"fetchfs")) && args.contains(&dir.as_bytes());
            ours.then_some(pid)
        })
    }

    /// The daemon's peak resident memory (VmHWM), in KiB; 0 when it cannot be read.
    pub fn peak_rss_kib(&self) -> u64 {
        let Some(pid) = self.daemon_pid() else { return 0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Unmounts and waits (up to 40 s) for the daemon to exit, so that what it holds (a disk
    /// cache's directory, on a filesystem the test unmounts next) is let go.
    pub fn unmount_and_wait(self) {
        let daemon = self.daemon_pid();
        drop(self);
        let Some(pid) = daemon else { return };
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        while Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a shell command line with the mount as its working directory.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("sh").arg("-c").arg(script).current_dir(&self.dir).output().expect("run sh")
    }
}

pub fn is_mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(dir.to_str().unwrap_or(""))))
        .unwrap_or(false)
}

impl Drop for Mount {
    fn drop(&mut self) {
        for _ in 0..50 {
            if !is_mounted(&self.dir) {
                break;
            }
            let _ = Command::new("umount").arg(&self.dir).stderr(Stdio::null()).status();
            if is_mounted(&self.dir) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        // No input, network or kernel answer may panic the daemon: every mount's log is checked.
        if let Some(panic) = log.lines().find(|l| l.contains(fetchfs::panics::LOGGED))
            && !std::thread::panicking()
        {
            panic!("the daemon panicked: {panic}");
        }
    }
}
