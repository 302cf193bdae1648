//! The disk tier (`--disk-cache DIR`): object versions kept on local disk under the memory block
//! cache, across remounts, shared by the daemons of a node: a tier (`cache::tier`). Blocks fetched
//! from S3 are written behind the reader by one background thread, through the tiers' fill queue,
//! which drops work when full; a slow, failing or full disk costs only time, never a read. A version whole on disk can be
//! handed to the kernel to read itself (passthrough).

mod breaker;
mod directory;
mod opener;
mod record;
mod version;

use std::collections::HashSet;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::cache::buffers::BufferPool;
use crate::cache::fill_queue::{BlockOf, Drain, FillQueue, Queued, STALL};
use crate::cache::tier::BlockTier;
use crate::metrics::DiskMetrics;
use crate::object_id::ObjectId;
pub use version::{Found, VersionFile};

const GIB: u64 = 1024 * 1024 * 1024;
/// Largest default cap; with less free space, half of it.
const DEFAULT_CAP: u64 = 100 * GIB;
/// Free space always left on the cache's filesystem: a twentieth of it, at most this.
const MOST_FLOOR: u64 = 4 * GIB;
/// Versions kept open (one descriptor each); more are reopened when used.
const OPEN_VERSIONS: usize = 512;
/// Blocks written to disk at once, with one `fdatasync` and one record update.
const FILL_BATCH: usize = 16;
/// A disk read slower than this is left to the network.
const DISK_READ_DEADLINE: Duration = Duration::from_millis(500);
/// How long a version found whole and unchanged is taken as it is by the next open, without
/// looking at its file again.
const RECENTLY_CHECKED: Duration = Duration::from_secs(1);
/// Eviction brings use down to this share of the cap, so it does not run at every fill.
const EVICT_TO_PERCENT: u64 = 90;
/// Leftovers of a writer that died (temporary records, data files never recorded) older than this
/// are removed by the next scan.
const LEFTOVER_AGE: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
pub struct DiskCacheConfig {
    pub dir: PathBuf,
    /// Most bytes the cache's files take; `None` for the default.
    pub cap: Option<u64>,
}

struct Fill {
    version: Arc<VersionFile>,
    index: u64,
    bytes: Bytes,
}

/// Problems worth one log line per mount, not one per block.
#[derive(Default)]
struct Warned {
    write: AtomicBool,
    read: AtomicBool,
    full: AtomicBool,
}

fn warn_once(flag: &AtomicBool, message: std::fmt::Arguments<'_>) {
    if !flag.swap(true, Ordering::Relaxed) {
        tracing::warn!("disk cache: {message} (logged once)");
    }
}

pub struct DiskCache {
    files: directory::Files,
    /// The files' directory by name, for messages.
    shown: PathBuf,
    /// Endpoint and bucket: part of every version's identity, so two mounts of different buckets
    /// sharing the directory never share a file.
    scope: String,
    block_size: u64,
    cap: u64,
    floor: u64,
    open: Mutex<LruCache<(ObjectId, u64), Arc<VersionFile>>>,
    fills: FillQueue<Fill>,
    /// Bytes the cache's files take, from the last scan plus what was written since.
    used: AtomicU64,
    /// Bytes given room in the batch being written, not written yet.
    reserved: AtomicU64,
    warned: Warned,
    /// Opens versions within a deadline, for callers that must not wait on a stalled disk.
    opener: OnceLock<opener::Opener>,
    /// Keeps reads and opens off a disk that stalled.
    breaker: breaker::Breaker,
    metrics: DiskMetrics,
}

struct Space {
    free: u64,
    total: u64,
}

fn space(dir: &Path) -> std::io::Result<Space> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: statvfs writes into the zeroed struct it is given; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = stat.f_frsize as u64;
    Ok(Space { free: stat.f_bavail as u64 * unit, total: stat.f_blocks as u64 * unit })
}

impl DiskCache {
    /// Opens the cache in `config.dir` for a mount of `scope`, with `fill_queue` bytes of memory
    /// for blocks waiting to be written.
    pub fn open(
        config: &DiskCacheConfig,
        scope: String,
        block_size: u64,
        fill_queue: u64,
        metrics: DiskMetrics,
    ) -> Result<Arc<Self>, String> {
        let files = directory::prepare(&config.dir)?;
        let space =
            space(&files.root).map_err(|e| format!("cannot read the free space of {}: {e}", config.dir.display()))?;
        let used = scan(&files.root).iter().map(|f| f.bytes).sum::<u64>();
        let cap = config.cap.unwrap_or(DEFAULT_CAP.min((space.free + used) / 2));
        let floor = (space.total / 20).min(MOST_FLOOR);
        let slots = (fill_queue / block_size).max(2) as usize;
        let (fills, queue) = FillQueue::new("disk cache", slots, metrics.fills_skipped.clone(), STALL);
        let cache = Arc::new(Self {
            files,
            shown: config.dir.join("v1"),
            scope,
            block_size,
            cap,
            floor,
            open: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(OPEN_VERSIONS).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            fills,
            used: AtomicU64::new(used),
            reserved: AtomicU64::new(0),
            warned: Warned::default(),
            breaker: breaker::Breaker::default(),
            opener: OnceLock::new(),
            metrics,
        });
        cache.metrics.bytes.set(used as i64);
        let opener = opener::Opener::start(Arc::downgrade(&cache))
            .map_err(|e| format!("cannot start the disk cache's openers: {e}"))?;
        let _ = cache.opener.set(opener);
        let writer = Arc::downgrade(&cache);
        std::thread::Builder::new()
            .name("fetchfs-disk-fill".into())
            .spawn(move || write_fills(writer, queue))
            .map_err(|e| format!("cannot start the disk cache's writer: {e}"))?;
        tracing::info!(
            dir = %config.dir.display(),
            cap_mib = cap / (1024 * 1024),
            in_use_mib = used / (1024 * 1024),
            "disk cache ready"
        );
        Ok(cache)
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes that fit under the cap without evicting anything.
    pub fn room(&self) -> u64 {
        self.cap.saturating_sub(self.used.load(Ordering::Relaxed))
    }

    fn lock_open(&self) -> MutexGuard<'_, LruCache<(ObjectId, u64), Arc<VersionFile>>> {
        crate::sync::lock(&self.open)
    }

    fn identity(&self, object: &ObjectId, size: u64) -> String {
        format!("{}\n{}\n{}\n{size}", self.scope, object.key, object.etag)
    }

    fn file_name(identity: &str) -> String {
        let digest = Sha256::digest(identity.as_bytes());
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The version on disk, opened (or created empty) and checked against its record; what
    /// another daemon added since the last open is picked up. Blocking file I/O. `None` when the
    /// disk cannot be used for it (logged once). Not asked of the breaker: an open that was
    /// asked for before the disk was left alone finishes, and a late one still takes fills.
    pub fn open_version(&self, object: &ObjectId, size: u64) -> Option<Arc<VersionFile>> {
        let key = (object.clone(), size);
        // Not under the map's lock: a refresh waits for the fill writer's lock and for the disk.
        let cached = self.lock_open().get(&key).cloned();
        if let Some(version) = cached {
            match version.refresh() {
                Ok(true) => {
                    version.touch();
                    return Some(version);
                }
                Ok(false) => {}
                Err(e) => warn_once(&self.warned.read, format_args!("reading a record: {e}")),
            }
        }
        let identity = self.identity(object, size);
        let name = Self::file_name(&identity);
        match VersionFile::open(&self.files.root, &name, identity, size, self.block_size) {
            Ok((version, found)) => {
                if found == Found::Dropped {
                    self.metrics.files_dropped.inc();
                    tracing::info!(key = %object.key, "disk cache: a cache file did not match its record; fetching it again");
                }
                let version = Arc::new(version);
                version.touch();
                self.lock_open().put(key, Arc::clone(&version));
                Some(version)
            }
            Err(e) => {
                warn_once(&self.warned.write, format_args!("opening a cache file in {}: {e}", self.shown.display()));
                None
            }
        }
    }

    /// `open_version` within the disk's deadline, on the cache's own threads: an open on the
    /// kernel's thread goes on without the disk rather than hang on a stalled one (the disk is
    /// then left alone for a while, as after a stalled read).
    pub fn open_version_in_time(&self, object: &ObjectId, size: u64) -> Option<Arc<VersionFile>> {
        if !self.breaker.closed() {
            return None;
        }
        // Opened or checked a moment ago (a next-file prefetch opened it just before the job
        // does): taken as it is, without a trip to the disk's threads.
        let recent = self.lock_open().get(&(object.clone(), size)).cloned();
        if let Some(version) = recent.filter(|v| v.checked_within(RECENTLY_CHECKED)) {
            return Some(version);
        }
        let answer = self.opener.get()?.ask(object, size)?;
        match answer.recv_timeout(DISK_READ_DEADLINE) {
            Ok(version) => version,
            Err(_) => {
                self.metrics.stalls.inc();
                if self.breaker.trip() {
                    tracing::warn!(
                        "disk cache: opening a file took over {DISK_READ_DEADLINE:?}; the disk is left alone for {:?} and \
                         the network serves",
                        breaker::PAUSE
                    );
                }
                None
            }
        }
    }

    /// `open_version` for work in the background (a prefetch), which may wait for the disk: no
    /// deadline, but nothing while the disk is left alone. The caller bounds how many run at once.
    pub fn open_version_unhurried(&self, object: &ObjectId, size: u64) -> Option<Arc<VersionFile>> {
        if !self.breaker.closed() {
            return None;
        }
        self.open_version(object, size)
    }

    /// The version if it was opened already and is still in use.
    pub fn opened(&self, object: &ObjectId, size: u64) -> Option<Arc<VersionFile>> {
        self.lock_open().peek(&(object.clone(), size)).filter(|v| !v.is_gone()).cloned()
    }

    /// Reads `range` (within blocks present) from disk into `buffer`, or `None` if the disk failed or was too
    /// slow, so the caller goes to the network.
    pub async fn read(&self, version: &Arc<VersionFile>, range: Range<u64>, buffer: Vec<u8>) -> Option<Vec<u8>> {
        let (place, waiting) = self.breaker.enter()?;
        let (reading, len) = (Arc::clone(version), range.end - range.start);
        let read = tokio::task::spawn_blocking(move || {
            let _place = place;
            reading.read(range, buffer)
        });
        match tokio::time::timeout(DISK_READ_DEADLINE, read).await {
            Ok(Ok(Ok(bytes))) => {
                self.metrics.hits.inc();
                self.metrics.read_bytes.inc_by(len);
                Some(bytes)
            }
            Ok(Ok(Err(e))) => {
                warn_once(&self.warned.read, format_args!("a read failed, the network serves it: {e}"));
                None
            }
            Ok(Err(_)) => None,
            Err(_) => {
                waiting.gave_up();
                self.metrics.stalls.inc();
                if self.breaker.trip() {
                    tracing::warn!(
                        "disk cache: a read took over {DISK_READ_DEADLINE:?}; the disk is left alone for {:?} and the \
                         network serves",
                        breaker::PAUSE
                    );
                }
                None
            }
        }
    }

    /// Queues a block for writing, waiting for room rather than dropping it: for work in the
    /// background that no reader waits on.
    pub async fn fill_in_background(&self, version: &Arc<VersionFile>, index: u64, bytes: Bytes) {
        if !self.fills.push(Fill { version: Arc::clone(version), index, bytes }).await {
            self.metrics.fills_skipped.inc();
        }
    }

    /// Deletes a version nobody reads any more (a newer one is known).
    pub fn forget_version(&self, object: &ObjectId, size: u64) {
        let version = self.lock_open().pop(&(object.clone(), size));
        if let Some(version) = version
            && let Err(e) = version.remove()
        {
            tracing::debug!(key = %object.key, "disk cache: removing an old version: {e}");
        }
    }

    fn write_batch(&self, batch: Vec<Queued<Fill>>) {
        // Each fill stays counted as pending until its batch is written.
        let mut batch = batch.iter().map(|queued| &queued.fill).peekable();
        // Room is made one version after another, each version's bytes reserved before the next
        // asks; the versions are then written at once, their `fdatasync`s overlapping (one after
        // another, a directory of small files took ~0.7 ms a file here).
        let mut writes = Vec::new();
        while let Some(first) = batch.next() {
            let mut blocks = vec![(first.index, first.bytes.clone())];
            while let Some(next) = batch.next_if(|f| Arc::ptr_eq(&f.version, &first.version)) {
                blocks.push((next.index, next.bytes.clone()));
            }
            let bytes_of = |blocks: &[(u64, Bytes)]| blocks.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
            let room = |blocks: &[(u64, Bytes)]| self.make_room(bytes_of(blocks), first.version.data_path());
            if !room(&blocks) {
                // As many of them as fit: a version larger than the room keeps its first blocks.
                let mut fit = 0;
                while fit < blocks.len() && room(&blocks[..=fit]) {
                    fit += 1;
                }
                self.metrics.fills_skipped.inc_by((blocks.len() - fit) as u64);
                blocks.truncate(fit);
                if blocks.is_empty() {
                    continue;
                }
            }
            let reserved = bytes_of(&blocks);
            self.reserved.fetch_add(reserved, Ordering::Relaxed);
            writes.push((&first.version, blocks, reserved));
        }
        let written: Vec<_> = if writes.len() < 2 {
            writes.iter().map(|(version, blocks, _)| version.write_blocks(blocks)).collect()
        } else {
            std::thread::scope(|scope| {
                let started: Vec<_> = writes
                    .iter()
                    .map(|&(version, ref blocks, _)| {
                        std::thread::Builder::new()
                            .name("fetchfs-disk-fill".into())
                            .spawn_scoped(scope, move || version.write_blocks(blocks))
                            // No thread to be had (the kernel's limit): this one is written here.
                            .map_err(|_| version.write_blocks(blocks))
                    })
                    .collect();
                let finished =
                    |started: Result<std::thread::ScopedJoinHandle<'_, std::io::Result<u64>>, _>| match started {
                        Ok(thread) => thread.join().unwrap_or_else(|_| Err(std::io::Error::other("a writer panicked"))),
                        Err(written) => written,
                    };
                started.into_iter().map(finished).collect()
            })
        };
        for ((_, blocks, reserved), result) in writes.iter().zip(written) {
            self.reserved.fetch_sub(*reserved, Ordering::Relaxed);
            match result {
                Ok(written) => {
                    self.metrics.written_bytes.inc_by(written);
                    let used = self.used.fetch_add(written, Ordering::Relaxed) + written;
                    self.metrics.bytes.set(used as i64);
                }
                Err(e) => {
                    self.metrics.fills_skipped.inc_by(blocks.len() as u64);
                    warn_once(
                        &self.warned.write,
                        format_args!("writing to {}: {e}; reads go on from S3", self.shown.display()),
                    );
                }
            }
        }
    }

    /// Whether `bytes` more of the version at `filling` fit under the cap and above the free-space
    /// floor, evicting the least recently used other versions to make it so.
    fn make_room(&self, bytes: u64, filling: &Path) -> bool {
        // Bytes other versions of the batch were given room for are not on disk yet.
        let bytes = bytes + self.reserved.load(Ordering::Relaxed);
        let fits =
            |used: u64| used + bytes <= self.cap && space(&self.files.root).is_ok_and(|s| s.free >= self.floor + bytes);
        if fits(self.used.load(Ordering::Relaxed)) {
            return true;
        }
        let target = (self.cap / 100 * EVICT_TO_PERCENT).saturating_sub(bytes);
        let used = self.evict_to(target, bytes, filling);
        if fits(used) {
            return true;
        }
        warn_once(
            &self.warned.full,
            format_args!(
                "no room in {} (cap {} MiB, free-space floor {} MiB); blocks are not cached on disk for now",
                self.shown.display(),
                self.cap >> 20,
                self.floor >> 20
            ),
        );
        false
    }

    /// Deletes the least recently used versions until their files take at most `target` bytes and
    /// the filesystem has the floor plus `wanted` free; never `filling`, the version the room is
    /// for (a file larger than the room would evict itself block after block). Returns the bytes
    /// still used.
    fn evict_to(&self, target: u64, wanted: u64, filling: &Path) -> u64 {
        let mut found = scan(&self.files.root);
        found.sort_by_key(|f| f.last_use);
        let mut used: u64 = found.iter().map(|f| f.bytes).sum();
        let mut evicted = HashSet::new();
        for file in found.into_iter().filter(|f| f.data.file_name() != filling.file_name()) {
            let short_of_space = space(&self.files.root).is_ok_and(|s| s.free < self.floor + wanted);
            if used <= target && !short_of_space {
                break;
            }
            if version::remove_unused(&file.data, &file.record).is_ok() {
                used = used.saturating_sub(file.bytes);
                self.metrics.evictions.inc();
                evicted.insert(file.data);
            }
        }
        if !evicted.is_empty() {
            let mut open = self.lock_open();
            let gone: Vec<(ObjectId, u64)> = open
                .iter()
                .filter(|(_, v)| v.is_gone() || evicted.contains(v.data_path()))
                .map(|(k, _)| k.clone())
                .collect();
            gone.iter().for_each(|k| {
                open.pop(k);
            });
        }
        self.used.store(used, Ordering::Relaxed);
        self.metrics.bytes.set(used as i64);
        used
    }
}

/// The writer thread: takes fills off the queue in batches until the cache is gone.
fn write_fills(cache: Weak<DiskCache>, mut queue: Drain<Fill>) {
    loop {
        let batch = queue.next_batch_blocking(FILL_BATCH);
        if batch.is_empty() {
            return;
        }
        let Some(cache) = cache.upgrade() else { return };
        cache.write_batch(batch);
    }
}

impl BlockTier for DiskCache {
    fn name(&self) -> &'static str {
        "disk cache"
    }

    fn read<'a>(
        &'a self,
        block: &'a BlockOf,
        within: Range<u64>,
        buffers: &'a Arc<BufferPool>,
    ) -> BoxFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let version = self.opened(&block.object, block.size).filter(|v| v.has(block.index))?;
            let buffer = buffers.take_for((within.end - within.start) as usize);
            self.read(&version, within, buffer).await.map(|filled| buffers.freeze(filled))
        })
    }

    /// Written behind the reader if its version is open; dropped when the queue is full.
    fn offer(&self, block: &BlockOf, bytes: &Bytes) {
        let Some(version) = self.opened(&block.object, block.size) else { return };
        if version.has(block.index) {
            return;
        }
        self.metrics.misses.inc();
        self.fills.offer(block, Fill { version, index: block.index, bytes: bytes.clone() });
    }

    fn wants(&self, block: &BlockOf) -> bool {
        self.opened(&block.object, block.size).is_some_and(|version| !version.has(block.index))
    }

    fn refill<'a>(&'a self, block: &'a BlockOf, bytes: Bytes) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(version) = self.opened(&block.object, block.size) else { return };
            if !version.has(block.index) {
                self.fill_in_background(&version, block.index, bytes).await;
            }
        })
    }

    fn dropped_if_quiet(&self, quiet: Duration, n: usize) -> Vec<BlockOf> {
        self.fills.dropped_if_quiet(quiet, n)
    }

    fn fills_pending(&self) -> usize {
        self.fills.pending()
    }
}

/// One version's files, as a scan finds them.
struct OnDisk {
    data: PathBuf,
    record: PathBuf,
    bytes: u64,
    last_use: SystemTime,
}

/// Every version in `files`, with the space it takes and its last use (its record's mtime).
/// Leftovers of a writer that died are removed on the way.
fn scan(files: &Path) -> Vec<OnDisk> {
    let Ok(entries) = std::fs::read_dir(files) else { return Vec::new() };
    let now = SystemTime::now();
    let old =
        |m: &std::fs::Metadata| m.modified().is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > LEFTOVER_AGE));
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Ok(metadata) = std::fs::symlink_metadata(&path) else { continue };
        if name.contains(".record.tmp.") {
            if old(&metadata) {
                let _ = std::fs::remove_file(&path);
            }
        } else if let Some(stem) = name.strip_suffix(".data") {
            let record = files.join(format!("{stem}.record"));
            match std::fs::symlink_metadata(&record) {
                Ok(record_metadata) => found.push(OnDisk {
                    bytes: metadata.blocks() * 512 + record_metadata.blocks() * 512,
                    last_use: record_metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    data: path,
                    record,
                }),
                Err(_) if old(&metadata) => {
                    let _ = version::remove_unused(&path, &record);
                }
                Err(_) => {}
            }
        }
    }
    found
}

#[cfg(test)]
mod tests;
