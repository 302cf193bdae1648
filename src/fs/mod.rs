//! The filesystem's logic, free of FUSE: directories inferred from `/`-delimited key prefixes,
//! attributes from listings and HEADs, open handles pinned to one object version, reads as ranged
//! GETs. Answers are plain values and `FsError`s; `fuse` turns them into replies.

mod inode;
mod listing;
pub mod names;
mod next_file;
mod timed_out;

pub use inode::{Entry, Ino, ROOT_INO};
pub use listing::Listing;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::cache::disk::DiskCache;
use crate::errno::FsError;
use crate::fetch::{FetchConfig, Fetcher, SharedWindow};
use crate::metrics::Metrics;
use crate::object_id::ObjectId;
use crate::store::{ObjectMeta, ObjectStore, StoreError};
use inode::InodeTable;
use listing::{Known, MAX_LISTED_ENTRIES, MetadataCache};
use next_file::NextFiles;
use timed_out::TimedOutReads;

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
    /// How long a name found missing stays missing without asking again.
    pub negative_metadata_ttl: Duration,
    /// How long one read may take.
    pub read_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
}

impl Entry {
    pub fn kind(&self) -> Kind {
        if self.is_dir() { Kind::Directory } else { Kind::File }
    }
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

/// An open file: the inode and object version it reads, and its reader's readahead state.
struct OpenFile {
    ino: Ino,
    object: Arc<ObjectId>,
    size: u64,
    window: SharedWindow,
}

/// An open file's handle, and the version's local copy when it is whole on disk (the kernel may
/// be given it to read from itself).
pub struct Opened {
    pub handle: u64,
    pub local_copy: Option<std::fs::File>,
}

/// How long a read that ran out of time makes the same bytes fail at once.
const TIMED_OUT_MEMORY: Duration = Duration::from_secs(5);

/// Readahead states of closed files, kept for the next open of the same version.
const RELEASED_STREAMS: usize = 1024;

pub struct Fs<S> {
    store: Arc<S>,
    fetcher: Arc<Fetcher<S>>,
    metrics: Arc<Metrics>,
    options: FsOptions,
    inodes: InodeTable,
    metadata: MetadataCache,
    next_files: NextFiles,
    open_files: Mutex<HashMap<u64, OpenFile>>,
    /// A stream continued by a new open (a reader that reopens the file for each chunk) keeps the
    /// readahead window it had built, instead of starting again from the smallest one.
    released_streams: Mutex<lru::LruCache<Ino, (Arc<ObjectId>, SharedWindow)>>,
    timed_out: TimedOutReads,
    next_handle: AtomicU64,
    mounted_at: SystemTime,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Values behind these locks are replaced whole; a poisoned lock still holds a valid map.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<S: ObjectStore> Fs<S> {
    pub fn new(
        store: Arc<S>,
        options: FsOptions,
        fetch: FetchConfig,
        disk: Option<Arc<DiskCache>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            fetcher: Arc::new(Fetcher::new(Arc::clone(&store), fetch, disk, Arc::clone(&metrics))),
            metrics,
            store,
            inodes: InodeTable::new(options.root_prefix.clone()),
            metadata: MetadataCache::new(options.metadata_ttl, options.negative_metadata_ttl, MAX_LISTED_ENTRIES),
            timed_out: TimedOutReads::new(TIMED_OUT_MEMORY.min(options.read_timeout)),
            options,
            next_files: NextFiles::default(),
            open_files: Mutex::new(HashMap::new()),
            released_streams: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(RELEASED_STREAMS).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            next_handle: AtomicU64::new(1),
            mounted_at: SystemTime::now(),
        }
    }

    pub fn has_disk_cache(&self) -> bool {
        self.fetcher.has_disk_cache()
    }

    pub fn options(&self) -> &FsOptions {
        &self.options
    }

    /// Inodes the kernel holds (and the root).
    pub fn inodes_held(&self) -> usize {
        self.inodes.len()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Sets the gauges read off the filesystem's state.
    pub fn refresh_gauges(&self) {
        self.metrics.open_handles.set(lock(&self.open_files).len() as i64);
        self.metrics.inodes.set(self.inodes.len() as i64);
        self.metrics.listed_entries.set(self.metadata.listed_entries() as i64);
        self.metrics.cache_bytes.set(self.fetcher.cache().used() as i64);
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

    /// Finds `name` in `parent`: from a recent listing or lookup when there is one, else by asking
    /// S3 whether it is a file and whether it is a directory, at once. Each success is one more
    /// reference the kernel holds, until `forget`.
    pub async fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, FsError> {
        let prefix = self.dir_prefix(parent)?;
        if !names::is_valid_name(name) {
            return Err(FsError::NotFound);
        }
        let (entry, numbered) = match self.metadata.known(&prefix, name) {
            Known::Present(ino, entry) => (entry, Some(ino)),
            Known::Missing => return Err(FsError::NotFound),
            Known::Unknown => match self.within_deadline(self.ask_store(&prefix, name)).await {
                Ok(entry) => (entry, None),
                Err(FsError::NotFound) => {
                    self.metadata.store_missing(&prefix, name);
                    return Err(FsError::NotFound);
                }
                Err(e) => return Err(e),
            },
        };
        let ino = self.bind(parent, name, &entry, numbered);
        Ok(self.attr_of(ino, &entry))
    }

    /// Binds `name` to the inode for `entry`. A version it replaces that no file has open leaves
    /// the disk cache now; one still open leaves at its last release.
    fn bind(&self, parent: Ino, name: &str, entry: &Entry, numbered: Option<Ino>) -> Ino {
        let (ino, replaced) = self.inodes.looked_up(parent, name, entry.clone(), numbered);
        if let Some((old, meta)) = replaced
            && !lock(&self.open_files).values().any(|f| f.ino == old)
        {
            self.fetcher.forget_version(&ObjectId { key: meta.key, etag: meta.etag }, meta.size);
        }
        ino
    }

    /// Runs one request (or requests sent at once) of a lookup or listing within the deadline.
    async fn within_deadline<T>(&self, request: impl Future<Output = Result<T, FsError>>) -> Result<T, FsError> {
        let deadline = self.options.read_timeout;
        tokio::time::timeout(deadline, request).await.unwrap_or(Err(FsError::TimedOut(deadline.as_secs())))
    }

    async fn ask_store(&self, prefix: &str, name: &str) -> Result<Entry, FsError> {
        let key = format!("{prefix}{name}");
        let dir_prefix = format!("{key}/");
        // A name may be a file, a directory, or both (the directory wins): ask both at once.
        let (head, children) = tokio::join!(self.store.head(&key), self.store.list_page(&dir_prefix, None, Some(1)));
        let children = children?;
        if !children.objects.is_empty() || !children.prefixes.is_empty() {
            return Ok(Entry::Directory { prefix: dir_prefix });
        }
        match head {
            Ok(meta) => Ok(Entry::File(meta)),
            Err(StoreError::NotFound) => Err(FsError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// An entry of a listing handed to the kernel with its attributes (READDIRPLUS): the kernel
    /// counts it as a lookup, and so does the inode table.
    pub fn listed_entry(&self, parent: Ino, name: &str, ino: Ino, entry: &Entry) -> Attr {
        let ino = self.bind(parent, name, entry, Some(ino));
        self.attr_of(ino, entry)
    }

    /// The kernel dropped `count` references to `ino`.
    pub fn forget(&self, ino: Ino, count: u64) {
        self.inodes.forget(ino, count);
    }

    /// Every entry of a directory, sorted, from a fresh listing if there is one, else from all the
    /// listing pages S3 gives; later lookups and opens are answered from it.
    pub async fn readdir(&self, ino: Ino) -> Result<Arc<Listing>, FsError> {
        let prefix = self.dir_prefix(ino)?;
        if let Some(listing) = self.metadata.listing(&prefix) {
            return Ok(listing);
        }
        let mut found: BTreeMap<String, Entry> = BTreeMap::new();
        let mut token = None;
        loop {
            let request = self.store.list_page(&prefix, token, None);
            let page = self.within_deadline(async { Ok(request.await?) }).await?;
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
        let entries = found
            .into_iter()
            .map(|(name, entry)| {
                let child = self.inodes.number_for(ino, &name, &entry, None);
                (name, child, entry)
            })
            .collect();
        let listing = Arc::new(Listing::new(entries));
        self.metadata.store_listing(&prefix, Arc::clone(&listing));
        Ok(listing)
    }

    /// Opens a file for reading; any write access is refused (the mount is read-only). The inode
    /// stands for one object version, so the kernel may keep its cached pages.
    pub fn open(&self, ino: Ino, write: bool) -> Result<Opened, FsError> {
        let meta = match self.inodes.get(ino) {
            Some(Entry::File(meta)) => meta,
            Some(Entry::Directory { .. }) => return Err(FsError::IsADirectory),
            None => return Err(FsError::NotFound),
        };
        if write {
            return Err(FsError::ReadOnly);
        }
        self.prefetch_next_files(ino);
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let ObjectMeta { key, size, etag, .. } = meta;
        let object = Arc::new(ObjectId { key, etag });
        let window = match lock(&self.released_streams).pop(&ino) {
            Some((released, window)) if released == object => window,
            _ => Arc::default(),
        };
        let local_copy = self.fetcher.open_on_disk(&object, size);
        lock(&self.open_files).insert(handle, OpenFile { ino, object, size, window });
        Ok(Opened { handle, local_copy })
    }

    /// When `ino` is opened right after the files before it in its directory's listing, fetches the
    /// start of the next files (small ones whole) before they are opened.
    fn prefetch_next_files(&self, ino: Ino) {
        let Some((parent, name)) = self.inodes.parent_and_name(ino) else { return };
        let Ok(prefix) = self.dir_prefix(parent) else { return };
        let Some(listing) = self.metadata.listing(&prefix) else { return };
        let Some(position) = listing.position(&name) else { return };
        let fetch = self.fetcher.config();
        let entries = listing.entries();
        let cost = |p: usize| match &entries[p].2 {
            Entry::File(meta) => Some(meta.size.min(fetch.part_size)),
            Entry::Directory { .. } => None,
        };
        for next in self.next_files.on_open(parent, position, entries.len(), cost, fetch.cache_bytes / 8) {
            if let Entry::File(meta) = &entries[next].2 {
                let object = Arc::new(ObjectId { key: meta.key.clone(), etag: meta.etag.clone() });
                self.fetcher.prefetch_start(object, meta.size);
            }
        }
    }

    /// Reads from an open file within the read deadline, from the object version it was opened
    /// on. If that version is gone, the read fails with `ESTALE` and what is known of the name is
    /// dropped, so the next lookup finds the current version (under a new inode).
    pub async fn read(&self, handle: u64, offset: u64, len: u32) -> Result<Bytes, FsError> {
        let (ino, object, size, window) = {
            let files = lock(&self.open_files);
            let file = files.get(&handle).ok_or(FsError::BadHandle)?;
            (file.ino, Arc::clone(&file.object), file.size, Arc::clone(&file.window))
        };
        let deadline = self.options.read_timeout;
        let wanted = offset..offset.saturating_add(u64::from(len));
        if self.timed_out.recently_failed(&object, &wanted) {
            return Err(FsError::TimedOut(deadline.as_secs()));
        }
        let read = self.fetcher.read(&object, size, &window, offset, len);
        match tokio::time::timeout(deadline, read).await {
            Ok(Ok(data)) => Ok(data),
            Ok(Err(StoreError::PreconditionFailed | StoreError::NotFound)) => {
                self.forget_parent_listing(ino);
                Err(FsError::Stale)
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                self.timed_out.note(&object, wanted);
                Err(FsError::TimedOut(deadline.as_secs()))
            }
        }
    }

    /// The directory holding `ino` and its name there, for telling the kernel to forget the name.
    pub fn parent_and_name(&self, ino: Ino) -> Option<(Ino, String)> {
        self.inodes.parent_and_name(ino)
    }

    fn forget_parent_listing(&self, ino: Ino) {
        if let Some((parent, _)) = self.inodes.parent_and_name(ino)
            && let Ok(prefix) = self.dir_prefix(parent)
        {
            self.metadata.forget_listing(&prefix);
        }
    }

    pub fn release(&self, handle: u64) {
        let mut files = lock(&self.open_files);
        let Some(file) = files.remove(&handle) else { return };
        let last = !files.values().any(|f| f.ino == file.ino);
        drop(files);
        let read_to_the_end = lock(&file.window).position() >= file.size;
        if last && !self.inodes.is_current(file.ino) {
            self.fetcher.forget_version(&file.object, file.size);
        } else if last && read_to_the_end {
            self.fetcher.complete_on_disk(Arc::clone(&file.object), file.size);
        }
        lock(&self.released_streams).put(file.ino, (file.object, file.window));
    }
}

#[cfg(test)]
mod tests;
