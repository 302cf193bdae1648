//! The inode table: stable numbers for the names the kernel holds, and what each stands for. It
//! keeps only what the kernel references (each successful lookup counts once, FORGET takes counts
//! back), so a long job over millions of keys does not grow it without bound.
//!
//! A file's inode stands for one version of its object, never another: the kernel keeps pages and
//! the size per inode, so a new version gets a new number, the name is bound to it, and files
//! still open on the old number keep reading the old version (or get `ESTALE`), never a mix.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::store::ObjectMeta;

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;
/// The control directory `.fetchfs` and its file `prefetch` (see `control`): numbers of their own,
/// outside the table.
pub const CONTROL_DIR_INO: Ino = 2;
pub const PREFETCH_INO: Ino = 3;
const FIRST_TABLE_INO: Ino = 4;

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

    /// Whether `other` is the same directory, or the same version of the same object.
    fn same_version(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::Directory { prefix: a }, Entry::Directory { prefix: b }) => a == b,
            (Entry::File(a), Entry::File(b)) => a.key == b.key && a.etag == b.etag && a.size == b.size,
            _ => false,
        }
    }
}

struct Node {
    entry: Entry,
    parent: Ino,
    name: String,
    /// Lookups the kernel has not yet forgotten.
    lookups: u64,
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
        let root =
            Node { entry: Entry::Directory { prefix: root_prefix }, parent: ROOT_INO, name: String::new(), lookups: 1 };
        nodes.insert(ROOT_INO, root);
        Self { inner: Mutex::new(Inner { nodes, by_name: HashMap::new(), next: FIRST_TABLE_INO }) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each change leaves the two maps consistent before it can panic.
        crate::sync::lock(&self.inner)
    }

    pub fn get(&self, ino: Ino) -> Option<Entry> {
        self.lock().nodes.get(&ino).map(|n| n.entry.clone())
    }

    /// The directory holding `ino`, and its name there.
    pub fn parent_and_name(&self, ino: Ino) -> Option<(Ino, String)> {
        self.lock().nodes.get(&ino).map(|n| (n.parent, n.name.clone()))
    }

    /// The number `name` in `parent` has for `entry` while the kernel holds it, or a new one that
    /// it will get if a lookup of the same entry follows (`numbered` records it, so listings and
    /// lookups agree). Another kind, or another version of the object, gets another number.
    pub fn number_for(&self, parent: Ino, name: &str, entry: &Entry, numbered: Option<Ino>) -> Ino {
        Self::number_in(&mut self.lock(), parent, name, entry, numbered)
    }

    fn number_in(inner: &mut Inner, parent: Ino, name: &str, entry: &Entry, numbered: Option<Ino>) -> Ino {
        if let Some(&ino) = inner.by_name.get(&(parent, name.to_owned()))
            && inner.nodes.get(&ino).is_some_and(|n| n.entry.same_version(entry))
        {
            return ino;
        }
        match numbered {
            // A listing's number is free unless the kernel holds it for something else.
            Some(ino)
                if inner
                    .nodes
                    .get(&ino)
                    .is_none_or(|n| n.parent == parent && n.name == name && n.entry.same_version(entry)) =>
            {
                ino
            }
            _ => {
                let ino = inner.next;
                inner.next += 1;
                ino
            }
        }
    }

    /// Records a lookup of `name` in `parent` answered with `entry`: the kernel now holds one more
    /// reference to the returned number, and the name is bound to it. An inode held for an older
    /// version stays, for the files open on it, until the kernel forgets it. `numbered` is the
    /// number a listing gave the name.
    /// Also returns the inode and object the name stood for until now, if this lookup found
    /// another version.
    pub fn looked_up(
        &self,
        parent: Ino,
        name: &str,
        entry: Entry,
        numbered: Option<Ino>,
    ) -> (Ino, Option<(Ino, ObjectMeta)>) {
        // One lock for both: a lookup racing a listing must not number one version twice.
        let mut inner = self.lock();
        let ino = Self::number_in(&mut inner, parent, name, &entry, numbered);
        let before = inner.by_name.insert((parent, name.to_owned()), ino).filter(|&b| b != ino);
        let replaced = before.and_then(|b| match inner.nodes.get(&b) {
            Some(Node { entry: Entry::File(meta), .. }) => Some((b, meta.clone())),
            _ => None,
        });
        if let Some(node) = inner.nodes.get_mut(&ino) {
            node.lookups += 1;
            return (ino, replaced);
        }
        inner.nodes.insert(ino, Node { entry, parent, name: name.to_owned(), lookups: 1 });
        (ino, replaced)
    }

    /// `ino` was renamed to `name` in `parent` and stands for `entry` now (the kernel moves its
    /// inode to the new name); the old name is free.
    pub fn moved(&self, ino: Ino, parent: Ino, name: &str, entry: Entry) {
        let mut inner = self.lock();
        let Some(node) = inner.nodes.get_mut(&ino) else { return };
        let old = (node.parent, std::mem::replace(&mut node.name, name.to_owned()));
        node.parent = parent;
        node.entry = entry;
        if inner.by_name.get(&old) == Some(&ino) {
            inner.by_name.remove(&old);
        }
        inner.by_name.insert((parent, name.to_owned()), ino);
    }

    /// Every key under the directory prefix `from` moved under `to`: directories there stand
    /// for their new prefixes, and files for their copies in `copies` (by old key).
    pub fn moved_under(&self, from: &str, to: &str, copies: &HashMap<String, ObjectMeta>) {
        let mut inner = self.lock();
        for node in inner.nodes.values_mut() {
            match &mut node.entry {
                Entry::Directory { prefix } if prefix.starts_with(from) => {
                    *prefix = format!("{to}{}", &prefix[from.len()..]);
                }
                Entry::File(meta) => {
                    if let Some(copy) = copies.get(&meta.key).filter(|_| meta.key.starts_with(from)) {
                        *meta = copy.clone();
                    }
                }
                Entry::Directory { .. } => {}
            }
        }
    }

    /// What a file written through this mount stands for once its object exists (before that, it
    /// had no version).
    pub fn set_entry(&self, ino: Ino, entry: Entry) {
        if let Some(node) = self.lock().nodes.get_mut(&ino) {
            node.entry = entry;
        }
    }

    /// Whether a newer version took `ino`'s name. An inode the kernel has forgotten is not known
    /// to be replaced: its version may well be the current one.
    pub fn is_replaced(&self, ino: Ino) -> bool {
        let inner = self.lock();
        inner.nodes.get(&ino).is_some_and(|n| inner.by_name.get(&(n.parent, n.name.clone())).is_some_and(|&b| b != ino))
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
        let a = table.looked_up(ROOT_INO, "a", dir("a/"), None).0;
        assert_eq!(table.looked_up(ROOT_INO, "a", dir("a/"), None).0, a);
        table.forget(a, 1);
        assert_eq!(table.get(a), Some(dir("a/")));
        table.forget(a, 1);
        assert_eq!(table.get(a), None);
        assert_eq!(table.len(), 1);
        assert_ne!(table.looked_up(ROOT_INO, "a", dir("a/"), None).0, a, "a forgotten number is not reused");
    }

    #[test]
    fn a_number_given_by_a_listing_is_the_one_a_lookup_gets() {
        let table = InodeTable::new(String::new());
        let listed = table.number_for(ROOT_INO, "d", &dir("d/"), None);
        assert_eq!(table.number_for(ROOT_INO, "d", &dir("d/"), Some(listed)), listed);
        assert_eq!(table.looked_up(ROOT_INO, "d", dir("d/"), Some(listed)).0, listed);
        assert_eq!(table.parent_and_name(listed), Some((ROOT_INO, "d".into())));
    }

    fn file(etag: &str, size: u64) -> Entry {
        Entry::File(ObjectMeta {
            key: "f".into(),
            size,
            etag: crate::object_id::ETag::new(etag),
            last_modified: std::time::SystemTime::UNIX_EPOCH,
        })
    }

    #[test]
    fn a_new_version_gets_a_new_number_and_the_old_one_stays_until_forgotten() {
        let table = InodeTable::new(String::new());
        let old = table.looked_up(ROOT_INO, "f", file("\"a\"", 10), None).0;
        assert_eq!(table.looked_up(ROOT_INO, "f", file("\"a\"", 10), None).0, old, "the same version keeps its number");
        let (new, replaced) = table.looked_up(ROOT_INO, "f", file("\"b\"", 20), None);
        assert_ne!(new, old);
        assert_eq!(
            replaced,
            Some((
                old,
                match file("\"a\"", 10) {
                    Entry::File(meta) => meta,
                    _ => unreachable!(),
                }
            ))
        );
        assert!(table.is_replaced(old) && !table.is_replaced(new), "the old version is known to be replaced");
        assert_eq!(table.get(old), Some(file("\"a\"", 10)), "an open file's inode keeps its version");
        assert_eq!(table.get(new), Some(file("\"b\"", 20)));
        assert_eq!(table.number_for(ROOT_INO, "f", &file("\"b\"", 20), None), new, "the name is bound to the new one");
        assert_ne!(
            table.number_for(ROOT_INO, "f", &file("\"b\"", 20), Some(old)),
            old,
            "a listing's number held by another version is not reused"
        );
        table.forget(old, 2);
        assert_eq!(table.get(old), None);
        assert_eq!(
            table.number_for(ROOT_INO, "f", &file("\"b\"", 20), None),
            new,
            "forgetting the old one keeps the name"
        );
    }

    #[test]
    fn a_version_the_kernel_forgot_is_not_taken_for_a_replaced_one() {
        // Its last release may come after the forget: its disk cache file must stay.
        let table = InodeTable::new(String::new());
        let ino = table.looked_up(ROOT_INO, "f", file("\"a\"", 10), None).0;
        table.forget(ino, 1);
        assert!(!table.is_replaced(ino));
    }

    #[test]
    fn the_root_is_never_forgotten() {
        let table = InodeTable::new("p/".into());
        table.forget(ROOT_INO, 100);
        assert_eq!(table.get(ROOT_INO), Some(dir("p/")));
    }
}
