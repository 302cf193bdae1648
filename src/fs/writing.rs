//! Files being written through this mount, each an upload, by handle; the inodes of files this
//! mount wrote (their attributes may be "set" as no-ops, as `tar -x` and `touch` do); and
//! directories made with `mkdir`, which exist only here until a file is written under them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::inode::Ino;
use crate::errno::FsError;
use crate::upload::Upload;

/// One file being written.
pub struct Writer<S> {
    pub ino: Ino,
    /// Key prefix of its directory, and its name there.
    pub prefix: String,
    pub name: String,
    pub upload: tokio::sync::Mutex<Upload<S>>,
    written: AtomicU64,
    /// How finishing the upload went, once it has been finished (cleared when a file finished
    /// empty is written again).
    outcome: Mutex<Option<Result<(), FsError>>>,
}

impl<S> Writer<S> {
    pub fn new(ino: Ino, prefix: String, name: String, upload: Upload<S>) -> Self {
        Self {
            ino,
            prefix,
            name,
            upload: tokio::sync::Mutex::new(upload),
            written: AtomicU64::new(0),
            outcome: Mutex::new(None),
        }
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub fn set_written(&self, bytes: u64) {
        self.written.store(bytes, Ordering::Relaxed);
    }

    pub fn outcome(&self) -> Option<Result<(), FsError>> {
        lock(&self.outcome).clone()
    }

    pub fn set_outcome(&self, outcome: Option<Result<(), FsError>>) {
        *lock(&self.outcome) = outcome;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct Writing<S> {
    by_handle: Mutex<HashMap<u64, Arc<Writer<S>>>>,
    written_here: Mutex<HashSet<Ino>>,
    /// Prefixes (ending with `/`) of directories made here.
    local_dirs: Mutex<BTreeSet<String>>,
}

impl<S> Default for Writing<S> {
    fn default() -> Self {
        Self { by_handle: Mutex::default(), written_here: Mutex::default(), local_dirs: Mutex::default() }
    }
}

impl<S> Writing<S> {
    pub fn insert(&self, handle: u64, writer: Arc<Writer<S>>) {
        lock(&self.written_here).insert(writer.ino);
        lock(&self.by_handle).insert(handle, writer);
    }

    pub fn get(&self, handle: u64) -> Option<Arc<Writer<S>>> {
        lock(&self.by_handle).get(&handle).cloned()
    }

    pub fn remove(&self, handle: u64) -> Option<Arc<Writer<S>>> {
        lock(&self.by_handle).remove(&handle)
    }

    /// The writer of `name` in the directory of `prefix`, if it is being written.
    pub fn of_name(&self, prefix: &str, name: &str) -> Option<Arc<Writer<S>>> {
        lock(&self.by_handle).values().find(|w| w.prefix == prefix && w.name == name).cloned()
    }

    pub fn of_inode(&self, ino: Ino) -> Option<Arc<Writer<S>>> {
        lock(&self.by_handle).values().find(|w| w.ino == ino).cloned()
    }

    /// Every file being written in the directory of `prefix`.
    pub fn in_directory(&self, prefix: &str) -> Vec<Arc<Writer<S>>> {
        lock(&self.by_handle).values().filter(|w| w.prefix == prefix).cloned().collect()
    }

    /// Records an inode made by this mount (a directory made with mkdir).
    pub fn made_here(&self, ino: Ino) {
        lock(&self.written_here).insert(ino);
    }

    pub fn written_here(&self, ino: Ino) -> bool {
        lock(&self.written_here).contains(&ino)
    }

    pub fn forget_inode(&self, ino: Ino) {
        lock(&self.written_here).remove(&ino);
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

    /// Whether anything is being written under the directory of `prefix`.
    pub fn busy_under(&self, prefix: &str) -> bool {
        lock(&self.by_handle).values().any(|w| w.prefix.starts_with(prefix))
            || lock(&self.local_dirs)
                .range(prefix.to_owned()..)
                .take_while(|p| p.starts_with(prefix))
                .any(|p| p != prefix)
    }
}
