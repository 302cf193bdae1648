//! One object version on disk: a sparse data file holding the bytes at their own offsets, and a
//! record of the blocks present. Every change happens under an exclusive `flock` on the data file,
//! so daemons sharing the directory never interleave; bytes are made durable before the record
//! that says they are present, and the record replaces the old one by `rename`, whole.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::record::{BlockSet, FileStamp, Record};

/// Held while a data file is read or changed; unlocked when dropped. It holds a duplicate of the
/// file's descriptor: `flock` belongs to the open file both share, so either can unlock it.
struct FileLock(File);

impl FileLock {
    fn take(file: &File, exclusive: bool) -> io::Result<Self> {
        let held = file.try_clone()?;
        let operation = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        loop {
            // SAFETY: flock on a descriptor `held` owns; touches no memory.
            if unsafe { libc::flock(held.as_raw_fd(), operation) } == 0 {
                return Ok(Self(held));
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// A `FileLock` taken through a `VersionFile`. `flock` does not exclude the threads of one
/// process sharing an open file, so they take turns on `serial` first. Fields drop in order: the
/// `flock` is released before the next thread may take it.
struct Held<'a> {
    _flock: FileLock,
    _serial: MutexGuard<'a, ()>,
}

/// What opening a version found on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// A data file and record that agree (possibly with no block present yet).
    Valid,
    /// No file yet: an empty one was made.
    Created,
    /// A data file that did not match its record (changed, truncated, torn by a crash): it was
    /// emptied, and starts again.
    Dropped,
}

struct State {
    present: BlockSet,
    stamp: FileStamp,
    /// Deleted or replaced on disk (by eviction, or found changed): no more fills go to it.
    gone: bool,
    /// When the data file was last found unchanged.
    checked: Option<Instant>,
}

pub struct VersionFile {
    data_path: PathBuf,
    record_path: PathBuf,
    identity: String,
    block_size: u64,
    size: u64,
    data: File,
    state: Mutex<State>,
    serial: Mutex<()>,
}

static TEMPORARY: AtomicU64 = AtomicU64::new(0);

fn open_nofollow(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn read_record(path: &Path) -> Option<Record> {
    let mut file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).ok()?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes).ok()?;
    Record::decode(&bytes)
}

impl VersionFile {
    /// Opens (or creates) the files named `name` in `dir` for the version `identity` of `size`
    /// bytes. Returns the file and what was found.
    pub fn open(dir: &Path, name: &str, identity: String, size: u64, block_size: u64) -> io::Result<(Self, Found)> {
        let data_path = dir.join(format!("{name}.data"));
        let record_path = dir.join(format!("{name}.record"));
        // An eviction by another daemon may unlink the file between open and lock: then open the
        // new one. Twice is enough, since a fresh file is not evicted at once.
        for _ in 0..3 {
            let data = open_nofollow(&data_path, true)?;
            let lock = FileLock::take(&data, true)?;
            if !Self::still_named(&data, &data_path)? {
                drop(lock);
                continue;
            }
            let stamp = FileStamp::of(&data.metadata()?);
            let record = read_record(&record_path);
            let valid = record
                .as_ref()
                .is_some_and(|r| r.identity == identity && r.block_size == block_size && r.stamp == stamp);
            let found = match &record {
                _ if valid => Found::Valid,
                None if stamp.len == 0 => Found::Created,
                _ => Found::Dropped,
            };
            let state = match record {
                // Found matching its record just now.
                Some(r) if valid => State { present: r.present, stamp, gone: false, checked: Some(Instant::now()) },
                _ => {
                    // Start again from an empty sparse file of the object's size.
                    data.set_len(0)?;
                    data.set_len(size)?;
                    let stamp = FileStamp::of(&data.metadata()?);
                    State {
                        present: BlockSet::empty(size.div_ceil(block_size)),
                        stamp,
                        gone: false,
                        checked: Some(Instant::now()),
                    }
                }
            };
            let file = Self {
                data_path,
                record_path,
                identity,
                block_size,
                size,
                data,
                state: Mutex::new(state),
                serial: Mutex::new(()),
            };
            if found != Found::Valid {
                file.write_record(&file.lock_state())?;
            }
            drop(lock);
            return Ok((file, found));
        }
        Err(io::Error::other("the cache file kept being replaced while opening it"))
    }

    fn still_named(data: &File, path: &Path) -> io::Result<bool> {
        let open = data.metadata()?;
        Ok(open.nlink() > 0 && std::fs::symlink_metadata(path).is_ok_and(|named| named.ino() == open.ino()))
    }

    fn hold(&self, exclusive: bool) -> io::Result<Held<'_>> {
        let serial = crate::sync::lock(&self.serial);
        Ok(Held { _flock: FileLock::take(&self.data, exclusive)?, _serial: serial })
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    fn write_record(&self, state: &State) -> io::Result<()> {
        let record = Record {
            identity: self.identity.clone(),
            block_size: self.block_size,
            stamp: state.stamp,
            present: state.present.clone(),
        };
        let n = TEMPORARY.fetch_add(1, Ordering::Relaxed);
        let temporary = self.record_path.with_extension(format!("record.tmp.{}.{n}", std::process::id()));
        let written = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&temporary)?;
            file.write_all_at(&record.encode(), 0)?;
            std::fs::rename(&temporary, &self.record_path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }

    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    pub fn has(&self, index: u64) -> bool {
        let state = self.lock_state();
        !state.gone && state.present.contains(index)
    }

    /// Opened, created or found unchanged within `within` (a next-file prefetch opened it just
    /// before its open).
    pub fn checked_within(&self, within: Duration) -> bool {
        let state = self.lock_state();
        !state.gone && state.checked.is_some_and(|at| at.elapsed() < within)
    }

    pub fn is_complete(&self) -> bool {
        let state = self.lock_state();
        !state.gone && state.present.is_complete()
    }

    /// Asks the kernel to start reading the first `len` bytes into its page cache, so that a
    /// file opened ahead of its reader is read from memory when the reader comes (whoever reads
    /// it: passthrough or the daemon). Advice: when it fails, the reads go to the disk.
    pub fn read_ahead(&self, len: u64) {
        let len = libc::off_t::try_from(len.min(self.size)).unwrap_or(libc::off_t::MAX);
        // SAFETY: advice on a descriptor this version owns.
        unsafe { libc::posix_fadvise(self.data.as_raw_fd(), 0, len, libc::POSIX_FADV_WILLNEED) };
    }

    /// The blocks not on disk yet.
    pub fn missing(&self) -> Vec<u64> {
        let state = self.lock_state();
        (0..self.size.div_ceil(self.block_size)).filter(|&i| !state.present.contains(i)).collect()
    }

    pub fn is_gone(&self) -> bool {
        self.lock_state().gone
    }

    /// Re-reads the record (another daemon may have added blocks) and checks the data file still
    /// matches it. False when it does not: the file is no longer used, and opening it again
    /// drops and restarts it.
    /// A version whole on disk whose data file is unchanged needs no record read: nothing can be
    /// added to it, and any change to its file changes the stamp (an open of a file whole on disk
    /// is mostly this check; a `cat` of 1000 small files from the cache paid a record read each).
    pub fn refresh(&self) -> io::Result<bool> {
        {
            let state = self.lock_state();
            if !state.gone && state.present.is_complete() {
                let stamp = state.stamp;
                drop(state);
                let now = FileStamp::of(&self.data.metadata()?);
                if now == stamp && Self::still_named(&self.data, &self.data_path)? {
                    self.lock_state().checked = Some(Instant::now());
                    return Ok(true);
                }
            }
        }
        let _held = self.hold(false)?;
        let stamp = FileStamp::of(&self.data.metadata()?);
        let still_named = Self::still_named(&self.data, &self.data_path)?;
        let mut state = self.lock_state();
        match read_record(&self.record_path) {
            Some(r) if still_named && r.identity == self.identity && r.stamp == stamp => {
                state.present = r.present;
                state.stamp = stamp;
                state.checked = Some(Instant::now());
                Ok(!state.gone)
            }
            _ => {
                state.gone = true;
                Ok(false)
            }
        }
    }

    /// The bytes of `range`, which must lie in blocks present, in `buffer` (emptied first).
    pub fn read(&self, range: std::ops::Range<u64>, mut buffer: Vec<u8>) -> io::Result<Vec<u8>> {
        buffer.clear();
        buffer.resize((range.end - range.start) as usize, 0);
        self.data.read_exact_at(&mut buffer, range.start)?;
        Ok(buffer)
    }

    /// A descriptor of the data file, for the kernel to read from itself: passthrough opens its
    /// own backing file from it, with the flags of the file opened through the mount (read-only).
    pub fn reader(&self) -> io::Result<File> {
        self.data.try_clone()
    }

    /// Writes whole blocks, makes them durable, then records them. Returns the bytes written;
    /// nothing when the file was deleted or changed behind this daemon (then it is `gone`).
    pub fn write_blocks(&self, blocks: &[(u64, Bytes)]) -> io::Result<u64> {
        let held = self.hold(true)?;
        let record = read_record(&self.record_path);
        let before = FileStamp::of(&self.data.metadata()?);
        let intact = Self::still_named(&self.data, &self.data_path)?
            && record.as_ref().is_some_and(|r| r.identity == self.identity && r.stamp == before);
        if !intact {
            self.lock_state().gone = true;
            return Ok(0);
        }
        let mut present = record.map(|r| r.present).unwrap_or_else(|| BlockSet::empty(0));
        let mut written = 0;
        let result = (|| {
            for (index, bytes) in blocks {
                if present.contains(*index) {
                    continue;
                }
                let start = index * self.block_size;
                let expected = (start + self.block_size).min(self.size).saturating_sub(start);
                if bytes.len() as u64 != expected {
                    continue;
                }
                self.data.write_all_at(bytes, start)?;
                present.insert(*index);
                written += bytes.len() as u64;
            }
            if written > 0 {
                self.data.sync_data()?;
            }
            Ok::<_, io::Error>(())
        })();
        let stamp = FileStamp::of(&self.data.metadata()?);
        if let Err(e) = result {
            // Some bytes may have landed without their record: the stamp no longer matches, so
            // every daemon drops the file at its next open, and none serves them.
            self.lock_state().gone = true;
            return Err(e);
        }
        let mut state = self.lock_state();
        let next = State { present, stamp, gone: false, checked: Some(Instant::now()) };
        // The record need not be synced: the blocks it names are on disk before it is written, so
        // whichever record a crash leaves names only blocks that are there (an older one, fewer;
        // a torn or empty one, none: the file is made again).
        self.write_record(&next)?;
        *state = next;
        drop(state);
        drop(held);
        Ok(written)
    }

    /// Marks the record as just used, for eviction by last use.
    pub fn touch(&self) {
        if let Ok(record) = OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(&self.record_path) {
            let _ = record.set_modified(std::time::SystemTime::now());
        }
    }

    /// Deletes both files (if they are still this version's), under the lock.
    pub fn remove(&self) -> io::Result<()> {
        let _held = self.hold(true)?;
        self.lock_state().gone = true;
        if Self::still_named(&self.data, &self.data_path)? {
            remove_pair(&self.data_path, &self.record_path);
        }
        Ok(())
    }
}

/// Removes a record, then its data file: a data file without a record is never read.
pub fn remove_pair(data: &Path, record: &Path) {
    let _ = std::fs::remove_file(record);
    let _ = std::fs::remove_file(data);
}

/// Deletes the files named by `data` if nobody is changing them: for eviction of versions this
/// daemon has not opened.
pub fn remove_unused(data: &Path, record: &Path) -> io::Result<()> {
    let file = open_nofollow(data, false)?;
    let _lock = FileLock::take(&file, true)?;
    if VersionFile::still_named(&file, data)? {
        remove_pair(data, record);
    }
    Ok(())
}
