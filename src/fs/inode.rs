//! The inode table: stable numbers for the names the kernel holds, and what each stands for. It
//! keeps only what the kernel references (each successful lookup counts once, FORGET takes counts
//! back), so a long job over millions of keys does not grow it without bound.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::object_id::ETag;
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

struct Node {
    entry: Entry,
    parent: Ino,
    name: String,
    /// Lookups the kernel has not yet forgotten.
    lookups: u64,
    /// The version the kernel's cached pages of this file hold, since it was last opened.
    opened: Option<ETag>,
}

struct Inner {
    nodes: HashMap<Ino, Node>,
    by_name: HashMap<(Ino, String), Ino>,
    next: Ino,
}

pub struct InodeTable {
    inner: Mutex<Inner>,
}

impl InodeTable {
    pub fn new(root_prefix: String) -> Self {
        let mut nodes = HashMap::new();
        let root = Node {
            entry: Entry::Directory { prefix: root_prefix },
            parent: ROOT_INO,
            name: String::new(),
            lookups: 1,
            opened: None,
        };
        nodes.insert(ROOT_INO, root);
        Self { inner: Mutex::new(Inner { nodes, by_name: HashMap::new(), next: ROOT_INO + 1 }) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each change leaves the two maps consistent before it can panic.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, ino: Ino) -> Option<Entry> {
        self.lock().nodes.get(&ino).map(|n| n.entry.clone())
    }

    /// The directory holding `ino`, and its name there.
    pub fn parent_and_name(&self, ino: Ino) -> Option<(Ino, String)> {
        self.lock().nodes.get(&ino).map(|n| (n.parent, n.name.clone()))
    }

    /// The number `name` in `parent` has while the kernel holds it, or a new one that it will get
    /// if a lookup with the same kind follows (`numbered` records it, so listings and lookups agree).
    pub fn number_for(&self, parent: Ino, name: &str, is_dir: bool, numbered: Option<Ino>) -> Ino {
        let mut inner = self.lock();
        match inner.by_name.get(&(parent, name.to_owned())) {
            Some(&ino) if inner.nodes.get(&ino).is_some_and(|n| n.entry.is_dir() == is_dir) => ino,
            _ => numbered.unwrap_or_else(|| {
                let ino = inner.next;
                inner.next += 1;
                ino
            }),
        }
    }

    /// Records a lookup of `name` in `parent` answered with `entry`: the kernel now holds one more
    /// reference to the returned number. A name keeps its number while it keeps its kind; a file that
    /// became a directory (or back) gets a new one. `numbered` is the number a listing gave it.
    pub fn looked_up(&self, parent: Ino, name: &str, entry: Entry, numbered: Option<Ino>) -> Ino {
        let ino = self.number_for(parent, name, entry.is_dir(), numbered);
        let mut inner = self.lock();
        if let Some(node) = inner.nodes.get_mut(&ino) {
            node.entry = entry;
            node.lookups += 1;
            return ino;
        }
        inner.nodes.insert(ino, Node { entry, parent, name: name.to_owned(), lookups: 1, opened: None });
        inner.by_name.insert((parent, name.to_owned()), ino);
        ino
    }

    /// Records that `ino` is opened on version `etag`; true when the kernel's cached pages of it,
    /// if any, hold that same version (so they may be kept).
    pub fn note_open(&self, ino: Ino, etag: &ETag) -> bool {
        let mut inner = self.lock();
        let Some(node) = inner.nodes.get_mut(&ino) else { return false };
        let same = node.opened.as_ref() == Some(etag);
        node.opened = Some(etag.clone());
        same
    }

    /// Replaces what `ino` stands for, if the kernel still holds it.
    pub fn refresh(&self, ino: Ino, entry: Entry) {
        if let Some(node) = self.lock().nodes.get_mut(&ino) {
            node.entry = entry;
        }
    }

    /// The kernel dropped `count` references to `ino`; at none, the number is forgotten here too.
    pub fn forget(&self, ino: Ino, count: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut inner = self.lock();
        let Some(node) = inner.nodes.get_mut(&ino) else { return };
        node.lookups = node.lookups.saturating_sub(count);
        if node.lookups > 0 {
            return;
        }
        if let Some(node) = inner.nodes.remove(&ino) {
            let slot = (node.parent, node.name);
            if inner.by_name.get(&slot) == Some(&ino) {
                inner.by_name.remove(&slot);
            }
        }
    }

    /// Inodes held, the root included.
    pub fn len(&self) -> usize {
        self.lock().nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(prefix: &str) -> Entry {
        Entry::Directory { prefix: prefix.into() }
    }

    #[test]
    fn lookups_keep_a_number_until_forgotten_as_often() {
        let table = InodeTable::new(String::new());
        let a = table.looked_up(ROOT_INO, "a", dir("a/"), None);
        assert_eq!(table.looked_up(ROOT_INO, "a", dir("a/"), None), a);
        table.forget(a, 1);
        assert_eq!(table.get(a), Some(dir("a/")));
        table.forget(a, 1);
        assert_eq!(table.get(a), None);
        assert_eq!(table.len(), 1);
        assert_ne!(table.looked_up(ROOT_INO, "a", dir("a/"), None), a, "a forgotten number is not reused");
    }

    #[test]
    fn a_number_given_by_a_listing_is_the_one_a_lookup_gets() {
        let table = InodeTable::new(String::new());
        let listed = table.number_for(ROOT_INO, "d", true, None);
        assert_eq!(table.number_for(ROOT_INO, "d", true, Some(listed)), listed);
        assert_eq!(table.looked_up(ROOT_INO, "d", dir("d/"), Some(listed)), listed);
        assert_eq!(table.parent_and_name(listed), Some((ROOT_INO, "d".into())));
    }

    #[test]
    fn the_root_is_never_forgotten() {
        let table = InodeTable::new("p/".into());
        table.forget(ROOT_INO, 100);
        assert_eq!(table.get(ROOT_INO), Some(dir("p/")));
    }
}
