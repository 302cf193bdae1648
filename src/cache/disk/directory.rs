//! The cache directory: created private (0700) if missing, refused if another user owns it or
//! others may write to it (they could plant bytes that fetchfs would serve as an object's).

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Subdirectory holding this layout's files; a new layout gets a new one and ignores the old.
const LAYOUT: &str = "v1";

/// Makes `dir` ready and returns the directory the data and record files live in.
pub fn prepare(dir: &Path) -> Result<PathBuf, String> {
    let shown = dir.display();
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the disk cache directory {shown}: {e}"))?;
    }
    check_private(dir)?;
    let files = dir.join(LAYOUT);
    match DirBuilder::new().mode(0o700).create(&files) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", files.display())),
    }
    let link = std::fs::symlink_metadata(&files).map_err(|e| format!("cannot read {}: {e}", files.display()))?;
    if !link.is_dir() {
        return Err(format!("{} is not a directory (a link?); remove it", files.display()));
    }
    check_private(&files)?;
    Ok(files)
}

fn check_private(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    let metadata = std::fs::metadata(dir).map_err(|e| format!("cannot read the disk cache directory {shown}: {e}"))?;
    if !metadata.is_dir() {
        return Err(format!("the disk cache {shown} is not a directory"));
    }
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
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
        let files = prepare(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&files).unwrap().mode() & 0o777, 0o700);
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let dir = scratch("open");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = prepare(&dir).unwrap_err();
        assert!(refused.contains("writable by others"), "{refused}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
