//! The one place where internal errors become errnos for the reader.

use crate::store::StoreError;

/// A failure of a filesystem operation, as the kernel will be told.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("read-only file system")]
    ReadOnly,
    #[error("unknown file handle")]
    BadHandle,
    #[error("the read did not complete within {0} s")]
    TimedOut(u64),
    /// The object an open file stands for was replaced or deleted.
    #[error("the object changed or was deleted while open")]
    Stale,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FsError {
    /// The errno's name, for logs and metrics.
    pub fn errno_name(&self) -> &'static str {
        match self.errno() {
            libc::ENOENT => "ENOENT",
            libc::ENOTDIR => "ENOTDIR",
            libc::EISDIR => "EISDIR",
            libc::EROFS => "EROFS",
            libc::EBADF => "EBADF",
            libc::ESTALE => "ESTALE",
            libc::EACCES => "EACCES",
            _ => "EIO",
        }
    }

    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotADirectory => libc::ENOTDIR,
            FsError::IsADirectory => libc::EISDIR,
            FsError::ReadOnly => libc::EROFS,
            FsError::BadHandle => libc::EBADF,
            FsError::TimedOut(_) => libc::EIO,
            FsError::Stale => libc::ESTALE,
            FsError::Store(e) => match e {
                StoreError::NotFound | StoreError::NoSuchBucket => libc::ENOENT,
                StoreError::PreconditionFailed => libc::ESTALE,
                StoreError::AccessDenied(_) => libc::EACCES,
                StoreError::WrongRegion(_) | StoreError::Unreachable(_) | StoreError::Other(_) => libc::EIO,
            },
        }
    }
}
