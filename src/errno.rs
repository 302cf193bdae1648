//! The one place where internal errors become errnos for the reader.

use crate::store::StoreError;

/// A failure of a filesystem operation, as the kernel will be told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
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
    /// Refused by the mount's rules; says why (and which flag allows it, if one does).
    #[error("not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("the file is being written")]
    Busy,
    #[error("the file is open in passthrough")]
    TextBusy,
    #[error("the name exists")]
    Exists,
    #[error("the name is longer than 255 bytes")]
    NameTooLong,
    #[error("{0}")]
    InvalidWrite(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("writing the object failed: {0}")]
    UploadFailed(String),
    /// What S3 objects cannot do at all (EOPNOTSUPP), with why.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// rename: what `mv` answers by copying and deleting.
    #[error("a directory is renamed by copying its files (mv does)")]
    CrossDevice,
    #[error("the directory holds something")]
    NotEmpty,
    /// A rename of many objects that stopped midway: what moved and what did not is logged.
    #[error("the rename stopped midway: {0}")]
    PartlyRenamed(String),
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
            libc::EPERM => "EPERM",
            libc::EBUSY => "EBUSY",
            libc::ETXTBSY => "ETXTBSY",
            libc::EEXIST => "EEXIST",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            libc::EINVAL => "EINVAL",
            libc::EFBIG => "EFBIG",
            libc::EXDEV => "EXDEV",
            libc::ENOTEMPTY => "ENOTEMPTY",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
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
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::Busy => libc::EBUSY,
            FsError::TextBusy => libc::ETXTBSY,
            FsError::Exists => libc::EEXIST,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::InvalidWrite(_) => libc::EINVAL,
            FsError::TooLarge(_) => libc::EFBIG,
            FsError::UploadFailed(_) => libc::EIO,
            FsError::CrossDevice => libc::EXDEV,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::PartlyRenamed(_) => libc::EIO,
            FsError::Unsupported(_) => libc::EOPNOTSUPP,
            FsError::Store(e) => match e {
                StoreError::NotFound | StoreError::NoSuchBucket => libc::ENOENT,
                StoreError::PreconditionFailed => libc::ESTALE,
                StoreError::AccessDenied(_) => libc::EACCES,
                StoreError::WrongRegion(_)
                | StoreError::Unreachable(_)
                | StoreError::TooLong(_)
                | StoreError::Other(_) => libc::EIO,
            },
        }
    }
}

impl From<crate::upload::WriteError> for FsError {
    fn from(e: crate::upload::WriteError) -> Self {
        use crate::upload::WriteError;
        match e {
            WriteError::NotAtEnd { .. } => FsError::InvalidWrite(e.to_string()),
            WriteError::TooLarge { .. } => FsError::TooLarge(e.to_string()),
            WriteError::Failed(StoreError::PreconditionFailed) => FsError::UploadFailed(
                "another client created an object at this name meanwhile; it was not replaced".into(),
            ),
            WriteError::Finished
            | WriteError::Changed
            | WriteError::Failed(_)
            | WriteError::TimedOut { .. }
            | WriteError::Spill(_) => FsError::UploadFailed(e.to_string()),
        }
    }
}
