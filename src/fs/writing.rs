//! A file being written through this mount (`Writer`: where it is, its inode, its opener, its
//! upload and the upload's lifecycle; its handle lives in the handle table); the inodes and objects this mount wrote (their
//! attributes may be "set" as no-ops, as `tar -x` and `touch` do, and they may be replaced and
//! deleted without flags); and directories made with `mkdir`, which exist only here until a file
//! is written under them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::inode::Ino;
use super::lock;
use crate::object_id::ETag;
use crate::store::ObjectStore;
use crate::upload::Upload;
use crate::upload::lifecycle::Lifecycle;

/// Where a file being written is: its directory's key prefix and its name there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub prefix: String,
    pub name: String,
}

/// One file being written: where it is, its inode and its opener. Where it is in its life is
/// its upload's (`upload::lifecycle`).
pub struct Writer<S> {
    /// The inode that stands for the file: the one created, or, for an object replaced whole, the
    /// new version's once it is complete (the old one stays with the old version, for the files
    /// open on it).
    ino: AtomicU64,
    /// Key prefix of its directory, and its name there (a rename moves it).
    place: Mutex<Place>,
    /// Whether it replaces an object that was there (and so gets an inode of its own).
    pub replacing: bool,
    /// The process that opened it: its `close` completes the file, a child's does not.
    pub opener: Option<u32>,
    pub upload: tokio::sync::Mutex<Upload<S>>,
    /// The upload's lifecycle, read without its lock.
    pub life: Arc<Lifecycle>,
}

impl<S: ObjectStore> Writer<S> {
    pub fn new(
        ino: Ino,
        prefix: String,
        name: String,
        replacing: bool,
        opener: Option<u32>,
        upload: Upload<S>,
    ) -> Self {
        Self {
            ino: AtomicU64::new(ino),
            place: Mutex::new(Place { prefix, name }),
            replacing,
            opener,
            life: upload.lifecycle(),
            upload: tokio::sync::Mutex::new(upload),
        }
    }
}

impl<S> Writer<S> {
    pub fn ino(&self) -> Ino {
        self.ino.load(Ordering::Relaxed)
    }

    pub fn set_ino(&self, ino: Ino) {
        self.ino.store(ino, Ordering::Relaxed);
    }

    pub fn place(&self) -> Place {
        lock(&self.place).clone()
    }

    pub fn move_to(&self, place: Place) {
        *lock(&self.place) = place;
    }

    pub(super) fn is_at(&self, prefix: &str, name: &str) -> bool {
        let place = lock(&self.place);
        place.prefix == prefix && place.name == name
    }

    pub(super) fn is_under(&self, prefix: &str) -> bool {
        lock(&self.place).prefix.starts_with(prefix)
    }

    /// Whether a close by `process` completes the file: the opener's (a child's close of an
    /// inherited descriptor leaves it to the opener, who may write on).
    pub fn closes_for(&self, process: Option<u32>) -> bool {
        self.opener.is_none() || self.opener == process
    }
}

/// What the mount knows of its own writes beyond open handles: the inodes and objects it wrote,
/// and the directories made here.
#[derive(Default)]
pub struct Writing {
    written_here: Mutex<HashSet<Ino>>,
    /// Objects this mount wrote, by key, and the ETag each got (another's write since makes the
    /// key no longer ours).
    written_objects: Mutex<HashMap<String, ETag>>,
    /// Prefixes (ending with `/`) of directories made here.
    local_dirs: Mutex<BTreeSet<String>>,
}

impl Writing {
    /// Records an inode made by this mount (a directory made with mkdir, a version written here).
    pub fn made_here(&self, ino: Ino) {
        lock(&self.written_here).insert(ino);
    }

    pub fn written_here(&self, ino: Ino) -> bool {
        lock(&self.written_here).contains(&ino)
    }

    pub fn forget_inode(&self, ino: Ino) {
        lock(&self.written_here).remove(&ino);
    }

    /// The object at `key` with `etag` was written by this mount (or moved by it from such a key).
    pub fn wrote_object(&self, key: String, etag: ETag) {
        lock(&self.written_objects).insert(key, etag);
    }

    pub fn object_written_here(&self, key: &str, etag: &ETag) -> bool {
        lock(&self.written_objects).get(key) == Some(etag)
    }

    /// Whether this mount wrote an object at `key`, whatever it holds now.
    pub fn key_written_here(&self, key: &str) -> bool {
        lock(&self.written_objects).contains_key(key)
    }

    pub fn forget_object(&self, key: &str) {
        lock(&self.written_objects).remove(key);
    }

    /// The directories made here under `from` (itself included) now live under `to`.
    pub fn move_local_dirs(&self, from: &str, to: &str) {
        let mut dirs = lock(&self.local_dirs);
        let moved: Vec<String> = dirs.range(from.to_owned()..).take_while(|p| p.starts_with(from)).cloned().collect();
        for old in moved {
            dirs.remove(&old);
            dirs.insert(format!("{to}{}", &old[from.len()..]));
        }
    }

    pub fn add_local_dir(&self, prefix: String) {
        lock(&self.local_dirs).insert(prefix);
    }

    pub fn is_local_dir(&self, prefix: &str) -> bool {
        lock(&self.local_dirs).contains(prefix)
    }

    pub fn remove_local_dir(&self, prefix: &str) -> bool {
        lock(&self.local_dirs).remove(prefix)
    }

    /// Names of the directories made here directly under `prefix`.
    pub fn local_dirs_in(&self, prefix: &str) -> Vec<String> {
        lock(&self.local_dirs)
            .range(prefix.to_owned()..)
            .take_while(|p| p.starts_with(prefix))
            .filter_map(|p| p[prefix.len()..].strip_suffix('/').filter(|n| !n.contains('/')).map(str::to_owned))
            .collect()
    }

    /// Whether directories made here lie under the directory of `prefix`.
    pub fn local_dirs_under(&self, prefix: &str) -> bool {
        lock(&self.local_dirs).range(prefix.to_owned()..).take_while(|p| p.starts_with(prefix)).any(|p| p != prefix)
    }
}
