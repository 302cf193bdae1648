//! The open handles of a mount, of every kind, in one table: one counter numbers them, one lookup
//! finds them, and every operation on a handle (read, write, flush, fsync, release) asks the table
//! once and goes to its kind's code. A new kind of handle is one more variant here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::control::ControlHandle;
use super::inode::Ino;
use super::writing::Writer;
use super::{Finished, Fs, OpenFile, UnfinishedUpload, lock};
use crate::errno::FsError;
use crate::store::ObjectStore;

/// One open handle.
pub(super) enum Handle<S> {
    /// A file opened for reading: one object version and the streams reading it.
    Read(Arc<OpenFile>),
    /// A file being written: an upload.
    Write(Arc<Writer<S>>),
    /// A control file (`.fetchfs/prefetch`): lines written, state read.
    Control(Arc<Mutex<ControlHandle>>),
}

impl<S> Clone for Handle<S> {
    fn clone(&self) -> Self {
        match self {
            Handle::Read(file) => Handle::Read(Arc::clone(file)),
            Handle::Write(writer) => Handle::Write(Arc::clone(writer)),
            Handle::Control(control) => Handle::Control(Arc::clone(control)),
        }
    }
}

pub(super) struct Handles<S> {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Handle<S>>>,
    /// Write handles open now: while there are none, the questions about files being written
    /// (asked at every lookup) skip the table.
    writers: AtomicUsize,
}

impl<S> Default for Handles<S> {
    fn default() -> Self {
        Self { next: AtomicU64::new(1), open: Mutex::default(), writers: AtomicUsize::new(0) }
    }
}

impl<S> Handles<S> {
    /// Adds `handle`; its number.
    pub fn add(&self, handle: Handle<S>) -> u64 {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        if let Handle::Write(_) = handle {
            self.writers.fetch_add(1, Ordering::Relaxed);
        }
        lock(&self.open).insert(number, handle);
        number
    }

    pub fn get(&self, number: u64) -> Option<Handle<S>> {
        lock(&self.open).get(&number).cloned()
    }

    pub fn remove(&self, number: u64) -> Option<Handle<S>> {
        let removed = lock(&self.open).remove(&number);
        if let Some(Handle::Write(_)) = removed {
            self.writers.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    pub fn len(&self) -> usize {
        lock(&self.open).len()
    }

    /// The read handles open on `ino`'s version `object`, if any: the streams they share.
    pub fn reading(&self, ino: Ino, matches: impl Fn(&OpenFile) -> bool) -> Option<Arc<OpenFile>> {
        lock(&self.open).values().find_map(|h| match h {
            Handle::Read(file) if file.ino == ino && matches(file) => Some(Arc::clone(file)),
            _ => None,
        })
    }

    /// Whether a file is open for reading on `ino`.
    pub fn reads(&self, ino: Ino) -> bool {
        self.reading(ino, |_| true).is_some()
    }

    /// The files being written for which `wanted` holds.
    pub fn writers(&self, wanted: impl Fn(&Writer<S>) -> bool) -> Vec<Arc<Writer<S>>> {
        if self.writers.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        lock(&self.open)
            .values()
            .filter_map(|h| match h {
                Handle::Write(writer) if wanted(writer) => Some(Arc::clone(writer)),
                _ => None,
            })
            .collect()
    }

    /// The file being written (not finished) at `name` in the directory of `prefix`. A file
    /// complete but not yet released is an object like any other.
    pub fn writer_at(&self, prefix: &str, name: &str) -> Option<Arc<Writer<S>>> {
        self.writers(|w| w.life.unfinished() && w.is_at(prefix, name)).pop()
    }

    /// The file being written (not finished) that `ino` stands for.
    pub fn writer_of(&self, ino: Ino) -> Option<Arc<Writer<S>>> {
        self.writers(|w| w.life.unfinished() && w.ino() == ino).pop()
    }

    /// The writer of `ino`, finished or not.
    pub fn any_writer_of(&self, ino: Ino) -> Option<Arc<Writer<S>>> {
        self.writers(|w| w.ino() == ino).pop()
    }

    /// Every file being written in the directory of `prefix`.
    pub fn writers_in(&self, prefix: &str) -> Vec<Arc<Writer<S>>> {
        self.writers(|w| w.life.unfinished() && w.place().prefix == prefix)
    }

    /// Whether a file is being written anywhere under the directory of `prefix`.
    pub fn writing_under(&self, prefix: &str) -> bool {
        !self.writers(|w| w.life.unfinished() && w.is_under(prefix)).is_empty()
    }
}

/// How a handle is being closed.
#[derive(Clone, Copy, Debug)]
enum Close {
    /// A `close(2)` of one of its descriptors, by this process.
    Flush(Option<u32>),
    Fsync,
    /// Its last descriptor is gone: the handle leaves the table.
    Release,
}

impl<S: ObjectStore> Fs<S> {
    /// Whether `handle` is a file opened for writing (only its closes care which process closes).
    pub fn is_writer(&self, handle: u64) -> bool {
        matches!(self.handles.get(handle), Some(Handle::Write(_)))
    }

    /// A `close` of one of the handle's descriptors by `process`. For a file being written, the
    /// opener's completes the file and reports how that went; another's (a child that inherited
    /// the descriptor) leaves it to the opener. A file closed by its opener before anything was
    /// written (`touch`; a shell's redirection for a builtin) becomes an empty object at once, and
    /// a write at offset 0 through a descriptor still open then replaces it, only if it is still
    /// the one there: a child's close then checks that it is, and says `EIO` if another client
    /// replaced it, since what the child wrote will not be stored.
    pub async fn flush(&self, handle: u64, process: Option<u32>) -> Result<Finished, FsError> {
        match self.close(handle, Close::Flush(process)) {
            Some(writer) => self.finish(&writer).await,
            None => match self.handles.get(handle) {
                Some(Handle::Write(writer)) => self.check_still_ours(&writer).await.map(|()| Finished::default()),
                _ => Ok(Finished::default()),
            },
        }
    }

    /// Completes a file being written (and reports how that went); nothing for other handles.
    pub async fn fsync(&self, handle: u64) -> Result<Finished, FsError> {
        match self.close(handle, Close::Fsync) {
            Some(writer) => self.finish(&writer).await,
            None => Ok(Finished::default()),
        }
    }

    /// Forgets a handle. A file being written whose upload is not settled yet is returned, for the
    /// caller to complete with `finish_released` off the kernel's thread.
    pub fn release(&self, handle: u64) -> Option<UnfinishedUpload<S>> {
        self.close(handle, Close::Release).map(UnfinishedUpload)
    }

    /// The one close path of every kind of handle: what `how` does to it, and the file being
    /// written that is now to be finished, if any.
    fn close(&self, handle: u64, how: Close) -> Option<Arc<Writer<S>>> {
        let found = match how {
            Close::Release => self.handles.remove(handle)?,
            Close::Flush(_) | Close::Fsync => self.handles.get(handle)?,
        };
        match (found, how) {
            (Handle::Control(control), Close::Flush(_) | Close::Release) => {
                self.close_control(&control);
                None
            }
            (Handle::Control(_), Close::Fsync) => None,
            (Handle::Read(file), Close::Release) => {
                self.release_read(&file);
                None
            }
            (Handle::Read(_), Close::Flush(_) | Close::Fsync) => None,
            (Handle::Write(writer), Close::Flush(process)) => writer.closes_for(process).then_some(writer),
            (Handle::Write(writer), Close::Fsync) => Some(writer),
            (Handle::Write(writer), Close::Release) => writer.life.needs_finishing().then_some(writer),
        }
    }
}
