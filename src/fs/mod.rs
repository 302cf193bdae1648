//! The filesystem's logic, free of FUSE: directories inferred from `/`-delimited key prefixes,
//! attributes from listings and HEADs, open handles pinned to one object version, reads as ranged
//! GETs. Answers are plain values and `FsError`s; `fuse` turns them into replies.

pub mod control;
mod epoch;
mod handles;
mod inode;
mod listing;
mod named_lookups;
pub mod names;
mod next_file;
mod prefetch_queue;
mod rename;
mod timed_out;
mod write_path;
mod writing;

pub use inode::{CONTROL_DIR_INO, Entry, Ino, ROOT_INO};
pub use listing::Listing;
pub use rename::RenameFlags;
pub use write_path::Finished;

use crate::sync::lock;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::errno::FsError;
use crate::fetch::{FetchConfig, Fetcher, SharedStreams, Tiers};
use crate::metrics::Metrics;
use crate::object_id::ObjectId;
use crate::store::{ObjectMeta, ObjectStore, StoreError};
use crate::upload::dangling::Journal;
use crate::upload::{UploadConfig, Uploader};
use control::ControlFiles;
use epoch::Epochs;
use handles::{Handle, Handles};
use inode::InodeTable;
use listing::{Known, MAX_LISTED_ENTRIES, MetadataCache};
use named_lookups::NamedLookups;
use next_file::NextFiles;
use prefetch_queue::PrefetchQueue;
use timed_out::TimedOutReads;
use writing::{Writer, Writing};

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
    pub writes: WriteMode,
    /// Where the mount is, for absolute paths written to control files.
    pub mountpoint: PathBuf,
    /// Who mounted it: the owner of its control files.
    pub owner: User,
    /// Other users may use the mount (`--allow-other`): they may write control files too.
    pub shared: bool,
}

/// A user, as the kernel names the caller of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// What the mount lets programs change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteMode {
    /// Every change is `EROFS`.
    pub read_only: bool,
    /// An existing object may be opened with `O_TRUNC` and replaced whole.
    pub allow_overwrite: bool,
    /// `unlink` deletes objects.
    pub allow_delete: bool,
    /// Most objects a directory rename copies; beyond them it is `EXDEV` (and `mv` copies).
    pub rename_dir_limit: usize,
}

impl Default for WriteMode {
    fn default() -> Self {
        Self { read_only: false, allow_overwrite: false, allow_delete: false, rename_dir_limit: 1000 }
    }
}

/// Attribute changes asked for by `setattr`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttrChange {
    /// mode, owner or times: accepted as no-ops on files this mount wrote.
    pub metadata: bool,
    pub size: Option<u64>,
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

/// An open file: the inode and object version it reads, and the streams of reads of that
/// version (shared by every handle open on it).
pub(super) struct OpenFile {
    ino: Ino,
    object: Arc<ObjectId>,
    size: u64,
    streams: SharedStreams,
}

/// What an `open` asks of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    /// `O_TRUNC`: the object is replaced whole by what is written.
    Replace,
    /// `O_APPEND`, or opened to write only: what is written goes after the object's bytes.
    Append,
    /// `O_RDWR` without either: a write could land anywhere, which S3 cannot do.
    ReadWrite,
}

impl Access {
    /// From `open(2)`'s flags.
    pub fn of_flags(flags: i32) -> Self {
        match flags & libc::O_ACCMODE {
            _ if flags & libc::O_TRUNC != 0 => Self::Replace,
            libc::O_RDONLY => Self::Read,
            _ if flags & libc::O_APPEND != 0 => Self::Append,
            libc::O_WRONLY => Self::Append,
            _ => Self::ReadWrite,
        }
    }
}

/// An open file's handle, and the version's local copy when it is whole on disk (the kernel may
/// be given it to read from itself).
pub struct Opened {
    pub handle: u64,
    pub local_copy: Option<std::fs::File>,
    /// Opened for writing: the kernel's page cache is bypassed.
    pub writing: bool,
}

/// A file whose last descriptor was closed before its upload was completed.
pub struct UnfinishedUpload<S>(Arc<Writer<S>>);

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
    named_lookups: NamedLookups,
    next_files: NextFiles,
    epochs: Epochs,
    handles: Handles<S>,
    /// A stream continued by a new open (a reader that reopens the file for each chunk) keeps the
    /// readahead window it had built, instead of starting again from the smallest one.
    released_streams: Mutex<lru::LruCache<Ino, (Arc<ObjectId>, SharedStreams)>>,
    timed_out: TimedOutReads,
    uploader: Arc<Uploader<S>>,
    writing: Writing,
    mounted_at: SystemTime,
    control: ControlFiles,
    prefetch: PrefetchQueue,
    /// Itself, for tasks that outlive a request (the prefetch queue's).
    me: Weak<Self>,
}

impl<S: ObjectStore> Fs<S> {
    pub fn new(
        store: Arc<S>,
        options: FsOptions,
        fetch: FetchConfig,
        upload: UploadConfig,
        tiers: Tiers,
        journal: Option<Arc<Journal>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            uploader: Uploader::new(Arc::clone(&store), upload, Arc::clone(&metrics), journal),
            writing: Writing::default(),
            handles: Handles::default(),
            fetcher: Arc::new(Fetcher::new(Arc::clone(&store), fetch, tiers, Arc::clone(&metrics))),
            metrics,
            store,
            inodes: InodeTable::new(options.root_prefix.clone()),
            metadata: MetadataCache::new(options.metadata_ttl, options.negative_metadata_ttl, MAX_LISTED_ENTRIES),
            named_lookups: NamedLookups::default(),
            timed_out: TimedOutReads::new(TIMED_OUT_MEMORY.min(options.read_timeout)),
            options,
            next_files: NextFiles::default(),
            epochs: Epochs::default(),
            released_streams: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(RELEASED_STREAMS).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            mounted_at: SystemTime::now(),
            control: ControlFiles::default(),
            prefetch: PrefetchQueue::default(),
            me: me.clone(),
        })
    }

    /// Waits, at most `deadline`, until what was read is in the tiers (see `Fetcher::settle`).
    pub async fn settle(&self, deadline: Duration) -> bool {
        self.fetcher.settle(deadline).await
    }

    pub fn has_disk_cache(&self) -> bool {
        self.fetcher.has_disk_cache()
    }

    pub fn options(&self) -> &FsOptions {
        &self.options
    }

    /// Inodes the kernel holds (and the root).
    #[cfg(test)]
    pub fn inodes_held(&self) -> usize {
        self.inodes.len()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Sets the gauges read off the filesystem's state.
    pub fn refresh_gauges(&self) {
        self.metrics.open_handles.set(self.handles.len() as i64);
        self.metrics.panics.set(crate::panics::count() as i64);
        self.metrics.inodes.set(self.inodes.len() as i64);
        self.metrics.listed_entries.set(self.metadata.listed_entries() as i64);
        self.metrics.cache_bytes.set(self.fetcher.cache().used() as i64);
        self.prefetch.export(&self.metrics);
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
                size: self.handles.writer_of(ino).map_or(meta.size, |w| w.life.written()),
                mtime: meta.last_modified,
                perm: o.file_mode,
                uid: o.uid,
                gid: o.gid,
            },
        }
    }

    fn dir_prefix(&self, ino: Ino) -> Result<String, FsError> {
        if ino == CONTROL_DIR_INO {
            return Err(FsError::NotPermitted("the .fetchfs directory holds only the mount's control files"));
        }
        match self.inodes.get(ino) {
            Some(Entry::Directory { prefix }) => Ok(prefix),
            Some(Entry::File(_)) => Err(FsError::NotADirectory),
            None => Err(FsError::NotFound),
        }
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr, FsError> {
        if let Some(attr) = self.control_attr(ino) {
            return Ok(attr);
        }
        let entry = self.inodes.get(ino).ok_or(FsError::NotFound)?;
        Ok(self.attr_of(ino, &entry))
    }

    /// Finds `name` in `parent`: from a recent listing or lookup when there is one, else by asking
    /// S3 whether it is a file and whether it is a directory, at once. Each success is one more
    /// reference the kernel holds, until `forget`.
    pub async fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, FsError> {
        if let Some(control) = self.control_lookup(parent, name) {
            return control;
        }
        let prefix = self.dir_prefix(parent)?;
        if names::is_too_long(name) {
            return Err(FsError::NameTooLong);
        }
        if !names::is_valid_name(name) {
            return Err(FsError::NotFound);
        }
        if let Some(writer) = self.handles.writer_at(&prefix, name)
            && let Some(entry) = self.inodes.get(writer.ino())
        {
            let ino = self.inodes.looked_up(parent, name, entry.clone(), Some(writer.ino())).0;
            return Ok(self.attr_of(ino, &entry));
        }
        let local_dir = format!("{prefix}{name}/");
        if self.writing.is_local_dir(&local_dir) {
            let entry = Entry::Directory { prefix: local_dir };
            let ino = self.bind(parent, name, &entry, None);
            return Ok(self.attr_of(ino, &entry));
        }
        let (entry, numbered) = match self.metadata.known(&prefix, name) {
            Known::Present(ino, entry) => (entry, Some(ino)),
            Known::Missing => return Err(FsError::NotFound),
            Known::Unknown => match self.within_deadline(self.ask_store_by_name(parent, &prefix, name)).await {
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
            && !self.handles.reads(old)
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

    /// Asks S3 for one name of a directory, and lists the directory in the background when it is
    /// looked into by name often enough that its listing will answer the names still to come.
    async fn ask_store_by_name(&self, parent: Ino, prefix: &str, name: &str) -> Result<Entry, FsError> {
        if self.named_lookups.asked(prefix)
            && let Some(me) = self.me.upgrade()
        {
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let listed = me.list_from_store(parent, &prefix, named_lookups::MOST_PAGES).await;
                if let Err(e) = &listed {
                    tracing::debug!(%prefix, error = %e, "listing a directory looked into by name failed");
                }
                me.named_lookups.listed(&prefix, matches!(listed, Ok(Some(_))));
            });
        }
        self.ask_store(prefix, name).await
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
        if let Some(attr) = self.control_attr(ino) {
            return attr;
        }
        let ino = self.bind(parent, name, entry, Some(ino));
        self.attr_of(ino, entry)
    }

    /// The kernel dropped `count` references to `ino`.
    pub fn forget(&self, ino: Ino, count: u64) {
        self.inodes.forget(ino, count);
        if self.inodes.get(ino).is_none() {
            self.writing.forget_inode(ino);
        }
    }

    /// Every entry of a directory, sorted, from a fresh listing if there is one, else from all the
    /// listing pages S3 gives; later lookups and opens are answered from it.
    pub async fn readdir(&self, ino: Ino) -> Result<Arc<Listing>, FsError> {
        if ino == CONTROL_DIR_INO {
            return Ok(Arc::new(self.control_listing()));
        }
        let prefix = self.dir_prefix(ino)?;
        let listing = self.listing(ino, &prefix).await?;
        // Files being written and directories made here are listed too.
        let mut extra: Vec<(String, Ino, Entry)> = Vec::new();
        for writer in self.handles.writers_in(&prefix) {
            let name = writer.place().name;
            if listing.position(&name).is_none()
                && let Some(entry) = self.inodes.get(writer.ino())
            {
                extra.push((name, writer.ino(), entry));
            }
        }
        for name in self.writing.local_dirs_in(&prefix) {
            if listing.position(&name).is_none() {
                let entry = Entry::Directory { prefix: format!("{prefix}{name}/") };
                let child = self.inodes.number_for(ino, &name, &entry, None);
                extra.push((name, child, entry));
            }
        }
        if extra.is_empty() {
            return Ok(listing);
        }
        let mut entries = listing.entries().to_vec();
        entries.extend(extra);
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Arc::new(Listing::new(entries)))
    }

    /// The directory's listing from S3: a fresh one if there is one, else all its pages.
    async fn listing(&self, ino: Ino, prefix: &str) -> Result<Arc<Listing>, FsError> {
        if let Some(listing) = self.metadata.listing(prefix) {
            return Ok(listing);
        }
        self.list_from_store(ino, prefix, usize::MAX)
            .await?
            .ok_or_else(|| FsError::TooLarge(format!("the directory {prefix} lists in more than {} pages", usize::MAX)))
    }

    /// Lists the directory `prefix` (inode `ino`) from S3 and keeps the listing for later lookups
    /// and opens; `None` when it has more than `most_pages` pages (nothing is kept then).
    async fn list_from_store(
        &self,
        ino: Ino,
        prefix: &str,
        most_pages: usize,
    ) -> Result<Option<Arc<Listing>>, FsError> {
        let prefix = prefix.to_owned();
        let mut found: BTreeMap<String, Entry> = BTreeMap::new();
        let mut token = None;
        for _ in 0..most_pages {
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
                if ino == ROOT_INO && name == control::CONTROL_DIR {
                    self.control.warn_hidden(&prefix);
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
                if ino == ROOT_INO && name == control::CONTROL_DIR {
                    self.control.warn_hidden(&prefix);
                    continue;
                }
                // A name that is both a file and a directory shows the directory.
                found.insert(name.to_owned(), Entry::Directory { prefix: sub.clone() });
            }
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(Some(self.keep_listing(ino, &prefix, found))),
            }
        }
        Ok(None)
    }

    fn keep_listing(&self, ino: Ino, prefix: &str, found: BTreeMap<String, Entry>) -> Arc<Listing> {
        let entries = found
            .into_iter()
            .map(|(name, entry)| {
                let child = self.inodes.number_for(ino, &name, &entry, None);
                (name, child, entry)
            })
            .collect();
        let listing = Arc::new(Listing::new(entries));
        self.metadata.store_listing(prefix, Arc::clone(&listing));
        listing
    }

    /// Opens a file. For reading, the inode stands for one object version, so the kernel may keep
    /// its cached pages. For writing (only with `--allow-overwrite`), the object is replaced whole
    /// or appended to. A file being written cannot be opened again.
    pub fn open(&self, ino: Ino, access: Access, opener: Option<u32>) -> Result<Opened, FsError> {
        let meta = match self.inodes.get(ino) {
            Some(Entry::File(meta)) => meta,
            Some(Entry::Directory { .. }) => return Err(FsError::IsADirectory),
            None => return Err(FsError::NotFound),
        };
        if self.handles.writer_of(ino).is_some() {
            return Err(FsError::Busy);
        }
        if access != Access::Read {
            return self.open_for_writing(ino, meta, access, opener);
        }
        // The job's own order, when it gave one, beats a guess from the listing's.
        if !self.prefetch.opened(&meta.key) {
            self.prefetch_next_files(ino);
        }
        let ObjectMeta { key, size, etag, .. } = meta;
        let object = Arc::new(ObjectId { key, etag });
        let local_copy = self.fetcher.open_on_disk(&object, size);
        let open = self.handles.reading(ino, |f| f.object == object).map(|f| Arc::clone(&f.streams));
        let streams = open.unwrap_or_else(|| match lock(&self.released_streams).pop(&ino) {
            Some((released, streams)) if released == object => streams,
            _ => Arc::default(),
        });
        let handle = self.handles.add(Handle::Read(Arc::new(OpenFile { ino, object, size, streams })));
        Ok(Opened { handle, local_copy, writing: false })
    }

    /// When `ino` is opened right after the files before it in its directory's listing, fetches the
    /// start of the next files (small ones whole) before they are opened; when the directory's
    /// files are opened in no order, perhaps the rest of an epoch (see `epoch`).
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
        let Some(ahead) = self.next_files.on_open(parent, position, entries.len(), cost, fetch.cache_bytes / 8) else {
            // Opens in no order: with a disk cache, perhaps a shuffled epoch of the directory.
            if self.fetcher.has_disk_cache() && self.epochs.on_unordered_open(parent, position, entries.len()) {
                self.fetch_epoch(parent, &prefix, Arc::clone(&listing));
            }
            return;
        };
        for next in ahead {
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
        let file = match self.handles.get(handle) {
            Some(Handle::Read(file)) => file,
            Some(Handle::Control(control)) => return Ok(self.read_control(&control, offset, len)),
            Some(Handle::Write(_)) | None => return Err(FsError::BadHandle),
        };
        let OpenFile { ino, ref object, size, ref streams } = *file;
        let deadline = self.options.read_timeout;
        let wanted = offset..offset.saturating_add(u64::from(len));
        if self.timed_out.recently_failed(object, &wanted) {
            return Err(FsError::TimedOut(deadline.as_secs()));
        }
        let read = self.fetcher.read(object, size, streams, offset, len);
        match tokio::time::timeout(deadline, read).await {
            Ok(Ok(data)) => Ok(data),
            Ok(Err(StoreError::PreconditionFailed | StoreError::NotFound)) => {
                self.forget_parent_listing(ino);
                Err(FsError::Stale)
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                self.timed_out.note(object, wanted);
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

    /// The last handle of a read file was released: a version replaced since leaves the caches,
    /// one read to its end is completed on disk, and its streams are kept for the next open.
    fn release_read(&self, file: &OpenFile) {
        if self.handles.reads(file.ino) {
            return;
        }
        let read_to_the_end = file.streams.furthest() >= file.size;
        if self.inodes.is_replaced(file.ino) {
            self.fetcher.forget_version(&file.object, file.size);
        } else if read_to_the_end {
            self.fetcher.complete_on_disk(Arc::clone(&file.object), file.size);
        }
        file.streams.forget_spans();
        lock(&self.released_streams).put(file.ino, (Arc::clone(&file.object), Arc::clone(&file.streams)));
    }
}

#[cfg(test)]
mod tests;
