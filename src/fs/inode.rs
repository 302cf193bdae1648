//! The inode table: stable numbers for the names the kernel has seen, and what each stands for.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::store::ObjectMeta;

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// What an inode stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A directory: every key under `prefix` (which ends with `/`, or is empty at the bucket root).
    Directory {
        prefix: String,
    },
    File(ObjectMeta),
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        matches!(self, Entry::Directory { .. })
    }
}

struct Inner {
    entries: HashMap<Ino, Entry>,
    by_name: HashMap<(Ino, String), Ino>,
    next: Ino,
}

pub struct InodeTable {
    inner: Mutex<Inner>,
}

impl InodeTable {
    pub fn new(root_prefix: String) -> Self {
        let mut entries = HashMap::new();
        entries.insert(ROOT_INO, Entry::Directory { prefix: root_prefix });
        Self { inner: Mutex::new(Inner { entries, by_name: HashMap::new(), next: ROOT_INO + 1 }) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each change is a few inserts that leave the maps consistent at every step.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, ino: Ino) -> Option<Entry> {
        self.lock().entries.get(&ino).cloned()
    }

    /// The inode of `name` in `parent`, now standing for `entry`. A name keeps its number while it
    /// keeps its kind; a file that became a directory (or back) gets a new number.
    pub fn upsert(&self, parent: Ino, name: &str, entry: Entry) -> Ino {
        let mut inner = self.lock();
        let slot = (parent, name.to_owned());
        if let Some(&ino) = inner.by_name.get(&slot)
            && inner.entries.get(&ino).is_some_and(|old| old.is_dir() == entry.is_dir())
        {
            inner.entries.insert(ino, entry);
            return ino;
        }
        let ino = inner.next;
        inner.next += 1;
        inner.entries.insert(ino, entry);
        inner.by_name.insert(slot, ino);
        ino
    }
}
