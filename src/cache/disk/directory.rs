//! The cache directory: created private (0700) if missing, refused if another user owns it or
//! others may write to it, or to any directory on the way to it (they could plant bytes that
//! fetchfs would serve as an object's), as sshd's StrictModes checks a user's files. It is then
//! opened once, and every file is reached through that descriptor (`/proc/self/fd/N/name`), so a
//! link or directory swapped in on the way later changes nothing.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Subdirectory holding this layout's files; a new layout gets a new one and ignores the old.
const LAYOUT: &str = "v1";
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The directory of the cache's files, held open.
pub struct Files {
    _dir: File,
    /// Where paths below resolve through the held descriptor, not through names.
    pub root: PathBuf,
}

/// Makes `dir` ready and returns the directory the data and record files live in.
pub fn prepare(dir: &Path) -> Result<Files, String> {
    let shown = dir.display();
    check_ancestors(dir)?;
    if let Ok(link) = std::fs::read_link(dir)
        && !dir.exists()
    {
        return Err(format!(
            "the disk cache path {shown} is a symbolic link to {}, which does not exist: refusing to create a \
             directory through a link (another user could have planted it); create {} first, or give the real path",
            link.display(),
            link.display()
        ));
    }
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the disk cache directory {shown}: {e}"))?;
    }
    let canonical = dir.canonicalize().map_err(|e| format!("cannot resolve the disk cache directory {shown}: {e}"))?;
    check_ancestors(&canonical)?;
    let opened = open_directory(dir, libc::O_DIRECTORY)
        .map_err(|e| format!("cannot open the disk cache directory {shown}: {e}"))?;
    check_private(&opened, dir)?;
    let same = std::fs::metadata(&canonical)
        .is_ok_and(|m| opened.metadata().is_ok_and(|o| (o.dev(), o.ino()) == (m.dev(), m.ino())));
    if !same {
        return Err(format!("the disk cache directory {shown} changed while it was checked: refusing it"));
    }
    warn_if_in_memory(&opened, dir);
    let root = fd_path(&opened);
    match DirBuilder::new().mode(0o700).create(root.join(LAYOUT)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.join(LAYOUT).display())),
    }
    let files = dir.join(LAYOUT);
    let layout = open_directory(&root.join(LAYOUT), libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .map_err(|e| format!("{} is not a directory (a link?): {e}; remove it", files.display()))?;
    check_private(&layout, &files)?;
    Ok(Files { root: fd_path(&layout), _dir: layout })
}

fn open_directory(path: &Path, flags: i32) -> std::io::Result<File> {
    OpenOptions::new().read(true).custom_flags(flags | libc::O_CLOEXEC).open(path)
}

fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Every directory holding `dir` (as given, and as resolved) must belong to root or this user and
/// be writable by nobody else, unless sticky (as /tmp is): otherwise another user could move the
/// cache directory away and put one of their own in its place.
fn check_ancestors(dir: &Path) -> Result<(), String> {
    let absolute = std::path::absolute(dir).map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    let mut ancestor = PathBuf::new();
    let components: Vec<Component> = absolute.components().collect();
    for component in &components[..components.len().saturating_sub(1)] {
        ancestor.push(component);
        let meta = match std::fs::metadata(&ancestor) {
            Ok(meta) => meta,
            // Not there yet: made by this user, private, with the cache directory.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(format!("cannot read {}: {e}", ancestor.display())),
        };
        let owner_ok = meta.uid() == 0 || meta.uid() == euid();
        let sticky = meta.mode() & 0o1000 != 0;
        if !owner_ok {
            return Err(format!(
                "the disk cache directory {} is inside {}, which belongs to user {}: another user could replace \
                 it; refusing it (use a directory under one that root or this user owns)",
                dir.display(),
                ancestor.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 && !sticky {
            return Err(format!(
                "the disk cache directory {} is inside {}, which others may write to (mode {:o}): another user \
                 could replace it; refusing it (chmod go-w that directory, or use another)",
                dir.display(),
                ancestor.display(),
                meta.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

fn check_private(opened: &File, dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    let metadata = opened.metadata().map_err(|e| format!("cannot read the disk cache directory {shown}: {e}"))?;
    if !metadata.is_dir() {
        return Err(format!("the disk cache {shown} is not a directory"));
    }
    let euid = euid();
    if metadata.uid() != euid {
        return Err(format!(
            "the disk cache directory {shown} belongs to user {}, not to this user ({euid}): refusing it",
            metadata.uid()
        ));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(format!(
            "the disk cache directory {shown} is writable by others than its owner (its group or anyone; mode \
             {:o}): refusing it; chmod go-w it",
            metadata.mode() & 0o777
        ));
    }
    Ok(())
}

/// A cache on tmpfs works, but holds its files in memory, where they compete with the page cache
/// that the kernel would keep the same bytes in.
fn warn_if_in_memory(opened: &File, dir: &Path) {
    // SAFETY: fstatfs writes into the zeroed struct it is given; the descriptor is open.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(opened.as_raw_fd(), &mut stat) } == 0 && stat.f_type as i64 == TMPFS_MAGIC {
        tracing::warn!(
            "the disk cache {} is on tmpfs, in memory: its files compete with the page cache for the same RAM; \
             put it on a disk",
            dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fetchfs-dir-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_missing_directory_is_created_private() {
        let dir = scratch("missing").join("nested");
        prepare(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(dir.join(LAYOUT)).unwrap().mode() & 0o777, 0o700);
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_dangling_link_is_refused_and_named_as_one() {
        let dir = scratch("dangling");
        let target = dir.with_extension("nowhere");
        std::os::unix::fs::symlink(&target, &dir).unwrap();
        let refused = prepare(&dir).err().unwrap_or_default();
        let _ = std::fs::remove_file(&dir);
        assert!(refused.contains("symbolic link") && refused.contains("does not exist"), "{refused}");
        assert!(!target.exists(), "nothing made through the link");
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let dir = scratch("open");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = prepare(&dir).err().unwrap();
        assert!(refused.contains("writable by others"), "{refused}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_inside_one_others_may_write_is_refused() {
        let parent = scratch("open-parent");
        std::fs::create_dir_all(&parent).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = prepare(&parent.join("cache")).err().unwrap();
        assert!(
            refused.contains("others may write to") && refused.contains(&parent.display().to_string()),
            "{refused}"
        );
        // Sticky, as /tmp is: others cannot move what they do not own.
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o1777)).unwrap();
        prepare(&parent.join("cache")).unwrap();
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn a_link_into_a_directory_others_may_write_is_checked_where_it_leads() {
        // The path as given passes (its parents are safe); where it resolves does not.
        let unsafe_parent = scratch("resolved-open");
        std::fs::create_dir_all(unsafe_parent.join("cache")).unwrap();
        std::fs::set_permissions(unsafe_parent.join("cache"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&unsafe_parent, std::fs::Permissions::from_mode(0o777)).unwrap();
        let link = scratch("resolved-link");
        std::os::unix::fs::symlink(unsafe_parent.join("cache"), &link).unwrap();
        let refused = prepare(&link).err().unwrap_or_default();
        let _ = std::fs::remove_file(&link);
        std::fs::remove_dir_all(&unsafe_parent).unwrap();
        assert!(refused.contains("others may write to"), "{refused}");
    }

    #[test]
    fn a_layout_directory_that_is_a_link_is_refused() {
        let dir = scratch("layout-link");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let elsewhere = scratch("layout-elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join(LAYOUT)).unwrap();
        let refused = prepare(&dir).err().unwrap_or_default();
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&elsewhere).unwrap();
        assert!(refused.contains("is not a directory (a link?)"), "{refused}");
    }

    #[test]
    fn files_are_reached_through_the_directory_opened_at_mount() {
        let dir = scratch("held");
        let files = prepare(&dir).unwrap();
        std::fs::write(files.root.join("probe"), b"here").unwrap();
        // The directory moved away and another put in its place: the cache keeps the one it checked.
        let moved = scratch("held-moved");
        std::fs::rename(&dir, &moved).unwrap();
        std::fs::create_dir_all(dir.join(LAYOUT)).unwrap();
        assert_eq!(std::fs::read(files.root.join("probe")).unwrap(), b"here");
        assert!(!dir.join(LAYOUT).join("probe").exists());
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&moved).unwrap();
    }
}
