//! The filesystem's logic, free of FUSE: directories inferred from `/`-delimited key prefixes,
//! attributes from listings and HEADs, open handles pinned to one object version, reads as ranged
//! GETs. Answers are plain values and `FsError`s; `fuse` turns them into replies.

mod inode;
pub mod names;

pub use inode::{Entry, Ino, ROOT_INO};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::errno::FsError;
use crate::fetch::{FetchConfig, Fetcher, ReadaheadWindow};
use crate::object_id::ObjectId;
use crate::store::{ObjectMeta, ObjectStore, StoreError};
use inode::InodeTable;

/// Ownership, modes and cache lifetimes, fixed for the life of a mount.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// Key prefix the mount's root stands for: empty, or ending with `/`.
    pub root_prefix: String,
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    /// How long a listing or HEAD answers for the names it covered.
    pub metadata_ttl: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
}

/// Attributes of one inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: Kind,
    pub name: String,
}

/// An open file: the object version it was opened on, and its reader's readahead state.
struct OpenFile {
    object: Arc<ObjectId>,
    size: u64,
    window: Arc<Mutex<ReadaheadWindow>>,
}

/// The names a directory listing found, and when.
struct Listed {
    at: Instant,
    names: HashMap<String, Ino>,
}

pub struct Fs<S> {
    store: Arc<S>,
    fetcher: Arc<Fetcher<S>>,
    options: FsOptions,
    inodes: InodeTable,
    listed: Mutex<HashMap<Ino, Listed>>,
    open_files: Mutex<HashMap<u64, OpenFile>>,
    next_handle: AtomicU64,
    mounted_at: SystemTime,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Values behind these locks are replaced whole; a poisoned lock still holds a valid map.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<S: ObjectStore> Fs<S> {
    pub fn new(store: Arc<S>, options: FsOptions, fetch: FetchConfig) -> Self {
        Self {
            fetcher: Arc::new(Fetcher::new(Arc::clone(&store), fetch)),
            store,
            inodes: InodeTable::new(options.root_prefix.clone()),
            options,
            listed: Mutex::new(HashMap::new()),
            open_files: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            mounted_at: SystemTime::now(),
        }
    }

    pub fn options(&self) -> &FsOptions {
        &self.options
    }

    fn attr_of(&self, ino: Ino, entry: &Entry) -> Attr {
        let o = &self.options;
        match entry {
            Entry::Directory { .. } => Attr {
                ino,
                kind: Kind::Directory,
                size: 0,
                mtime: self.mounted_at,
                perm: o.dir_mode,
                uid: o.uid,
                gid: o.gid,
            },
            Entry::File(meta) => Attr {
                ino,
                kind: Kind::File,
                size: meta.size,
                mtime: meta.last_modified,
                perm: o.file_mode,
                uid: o.uid,
                gid: o.gid,
            },
        }
    }

    fn dir_prefix(&self, ino: Ino) -> Result<String, FsError> {
        match self.inodes.get(ino) {
            Some(Entry::Directory { prefix }) => Ok(prefix),
            Some(Entry::File(_)) => Err(FsError::NotADirectory),
            None => Err(FsError::NotFound),
        }
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr, FsError> {
        let entry = self.inodes.get(ino).ok_or(FsError::NotFound)?;
        Ok(self.attr_of(ino, &entry))
    }

    pub async fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, FsError> {
        let prefix = self.dir_prefix(parent)?;
        if !names::is_valid_name(name) {
            return Err(FsError::NotFound);
        }
        if let Some(answer) = self.lookup_in_listing(parent, name) {
            let ino = answer?;
            return self.getattr(ino);
        }
        let key = format!("{prefix}{name}");
        let dir_prefix = format!("{key}/");
        // A name may be a file, a directory, or both (the directory wins): ask both at once.
        let (head, children) = tokio::join!(self.store.head(&key), self.store.list_page(&dir_prefix, None, Some(1)));
        let children = children?;
        let entry = if !children.objects.is_empty() || !children.prefixes.is_empty() {
            Entry::Directory { prefix: dir_prefix }
        } else {
            match head {
                Ok(meta) => Entry::File(meta),
                Err(StoreError::NotFound) => return Err(FsError::NotFound),
                Err(e) => return Err(e.into()),
            }
        };
        let ino = self.inodes.upsert(parent, name, entry.clone());
        Ok(self.attr_of(ino, &entry))
    }

    /// Answers a lookup from a recent listing of `parent`, when there is one.
    fn lookup_in_listing(&self, parent: Ino, name: &str) -> Option<Result<Ino, FsError>> {
        let listed = lock(&self.listed);
        let listing = listed.get(&parent).filter(|l| l.at.elapsed() < self.options.metadata_ttl)?;
        Some(listing.names.get(name).copied().ok_or(FsError::NotFound))
    }

    /// Every entry of a directory (all listing pages), also recorded for later lookups.
    pub async fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, FsError> {
        let prefix = self.dir_prefix(ino)?;
        let mut found: BTreeMap<String, Entry> = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self.store.list_page(&prefix, token, None).await?;
            for meta in page.objects {
                let name = &meta.key[prefix.len()..];
                if name.is_empty() {
                    continue; // the directory's own marker
                }
                if !names::is_valid_name(name) {
                    tracing::debug!(key = %meta.key, "skipping a key that cannot be a file name");
                    continue;
                }
                let name = name.to_owned();
                found.entry(name).or_insert(Entry::File(meta));
            }
            for sub in page.prefixes {
                let name = &sub[prefix.len()..sub.len() - 1];
                if !names::is_valid_name(name) {
                    tracing::debug!(prefix = %sub, "skipping a prefix that cannot be a directory name");
                    continue;
                }
                // A name that is both a file and a directory shows the directory.
                found.insert(name.to_owned(), Entry::Directory { prefix: sub.clone() });
            }
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        let mut entries = Vec::with_capacity(found.len());
        let mut names = HashMap::with_capacity(found.len());
        for (name, entry) in found {
            let kind = if entry.is_dir() { Kind::Directory } else { Kind::File };
            let child = self.inodes.upsert(ino, &name, entry);
            names.insert(name.clone(), child);
            entries.push(DirEntry { ino: child, kind, name });
        }
        lock(&self.listed).insert(ino, Listed { at: Instant::now(), names });
        Ok(entries)
    }

    /// Opens a file for reading; any write access is refused (the mount is read-only).
    pub fn open(&self, ino: Ino, write: bool) -> Result<u64, FsError> {
        let meta = match self.inodes.get(ino) {
            Some(Entry::File(meta)) => meta,
            Some(Entry::Directory { .. }) => return Err(FsError::IsADirectory),
            None => return Err(FsError::NotFound),
        };
        if write {
            return Err(FsError::ReadOnly);
        }
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let ObjectMeta { key, size, etag, .. } = meta;
        let file = OpenFile { object: Arc::new(ObjectId { key, etag }), size, window: Arc::default() };
        lock(&self.open_files).insert(handle, file);
        Ok(handle)
    }

    pub async fn read(&self, handle: u64, offset: u64, len: u32) -> Result<Bytes, FsError> {
        let (object, size, window) = {
            let files = lock(&self.open_files);
            let file = files.get(&handle).ok_or(FsError::BadHandle)?;
            (Arc::clone(&file.object), file.size, Arc::clone(&file.window))
        };
        Ok(self.fetcher.read(&object, size, &window, offset, len).await?)
    }

    pub fn release(&self, handle: u64) {
        lock(&self.open_files).remove(&handle);
    }
}
