//! Mounting: the session and its threads, and what the kernel is asked for beyond `init`'s
//! defaults (its readahead, passthrough of files whole on the disk cache).

use std::path::Path;
use std::sync::Arc;

use fuser::{InitFlags, KernelConfig};
use tokio::runtime::Handle;

use super::FuseAdapter;
use crate::config::MountConfig;
use crate::fs::Fs;
use crate::store::ObjectStore;

/// The kernel's own readahead for the mount. It reads one to two of these past where a reader
/// stops (a FUSE READ does not say it is readahead), so it is what a reader of 4 MB Parquet column
/// chunks pays per chunk: 1.31 bytes fetched per byte read at 512 KiB, 1.17 at 256 KiB. Sequential
/// reads of every size and mmap ran as fast at 256 KiB as at 512 (three runs each, back to back:
/// see the README), since the fetch layer answers a READ of blocks fetched ahead on the FUSE thread.
pub(super) const KERNEL_READAHEAD: u32 = 256 * 1024;
/// Threads reading requests from /dev/fuse; the work itself runs on the tokio runtime.
const SESSION_THREADS: usize = 4;

/// A mounted FUSE session, served by its own threads until unmounted.
pub struct MountedSession {
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

/// Mounts `fs` as configured (several session threads, each with its own cloned /dev/fuse
/// descriptor) and starts serving; `ended` fires when the session stops, e.g. on `umount`.
pub fn mount<S: ObjectStore>(
    fs: Arc<Fs<S>>,
    runtime: Handle,
    config: &MountConfig,
    ended: tokio::sync::oneshot::Sender<()>,
) -> std::io::Result<MountedSession> {
    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options = config.mount_options();
    fuse_config.acl = config.acl;
    fuse_config.n_threads = Some(SESSION_THREADS);
    fuse_config.clone_fd = true;
    let adapter = FuseAdapter::new(fs, runtime);
    let notifier = Arc::clone(&adapter.notifier);
    let session = fuser::Session::new(adapter, &config.mountpoint, &fuse_config)?;
    let _ = notifier.set(session.notifier());
    let thread = std::thread::Builder::new().name("fuse-session".into()).spawn(move || {
        let result = session.run();
        let _ = ended.send(());
        result
    })?;
    raise_kernel_readahead(&config.mountpoint);
    Ok(MountedSession { thread })
}

/// `init` can only lower the kernel's readahead for a FUSE mount (128 KiB by default), so small
/// reads would reach us; root may raise it through the mount's backing-device entry in sysfs.
fn raise_kernel_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let kb = KERNEL_READAHEAD / 1024;
    let result = std::fs::metadata(mountpoint).and_then(|meta| {
        let dev = meta.dev();
        let path = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
        std::fs::write(&path, format!("{kb}\n")).map(|()| path)
    });
    match result {
        Ok(path) => tracing::debug!("kernel readahead raised to {kb} KiB ({path})"),
        Err(e) => tracing::warn!("could not raise the kernel readahead to {kb} KiB ({e}); reads stay small"),
    }
}

impl MountedSession {
    /// Waits for the session threads to finish.
    pub fn join(self) -> Result<(), String> {
        match self.thread.join() {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the FUSE session thread panicked".into()),
        }
    }
}

/// Asks the kernel to read files whole in the disk cache by itself. Only root may register
/// backing files, and only kernels from 6.9 offer it; otherwise the daemon serves the disk's
/// bytes. Either way, the log says which.
pub(super) fn negotiate_passthrough(config: &mut KernelConfig) -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        tracing::info!("disk cache: served by the daemon (FUSE passthrough needs root)");
        return false;
    }
    if let Err(missing) = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
        tracing::info!("disk cache: served by the daemon (the kernel does not offer {missing:?}; it needs Linux 6.9)");
        return false;
    }
    // Backing files on a plain filesystem (ext4, xfs): one level of stacking.
    if config.set_max_stack_depth(1).is_err() {
        tracing::info!("disk cache: served by the daemon (the kernel refused a stacking depth for passthrough)");
        return false;
    }
    tracing::info!("disk cache: files whole on disk are read by the kernel itself (FUSE passthrough)");
    true
}
