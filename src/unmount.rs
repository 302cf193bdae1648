//! Taking a mount away: used by the daemon at a signal and by the mount checks for a stale mount
//! left at the mount point.

use std::path::Path;

/// Detaches the mount at `path` from the namespace at once (`umount -l`): files still open keep
/// being served until closed. fuser's own unmount is not lazy and fails while a file is open.
/// Root detaches it itself; other users through fusermount3.
pub fn detach_mount(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path holds a NUL byte"))?;
    // SAFETY: umount2 reads the NUL-terminated path and touches no other memory.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let direct = std::io::Error::last_os_error();
    if direct.raw_os_error() != Some(libc::EPERM) {
        return Err(direct);
    }
    let status = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(path).status()?;
    if status.success() { Ok(()) } else { Err(std::io::Error::other(format!("fusermount3 -u -z: {status}"))) }
}
