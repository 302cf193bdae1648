//! The prefetch queue: files a job said it will read, in its order (written to
//! `.fetchfs/prefetch`), fetched a bounded distance ahead of the opens it sees. One task per mount
//! takes the next files as the window allows: it finds each (from a listing of its directory,
//! listed once), and starts its fetch; opens in turn make room. With a disk cache the files go to
//! disk whole (an open is then passed through to the kernel); without one, into memory.

pub mod queue;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;

use super::Fs;
use super::control::lines::Line;
use super::inode::{Entry, Ino, ROOT_INO};
use super::listing::Known;
use crate::metrics::{Metrics, QueueLabels};
use crate::object_id::ObjectId;
use crate::store::{ObjectMeta, ObjectStore};
use queue::{Counts, Foretold, Limits, Next, Queue};

struct Shared {
    queue: Queue,
    /// Counts already added to the metrics.
    exported: Counts,
    pump_started: bool,
}

pub struct PrefetchQueue {
    shared: Mutex<Shared>,
    wake: Arc<Notify>,
    warned_bad: AtomicBool,
    warned_full: AtomicBool,
}

impl Default for PrefetchQueue {
    fn default() -> Self {
        Self {
            shared: Mutex::new(Shared { queue: Queue::default(), exported: Counts::default(), pump_started: false }),
            wake: Arc::new(Notify::new()),
            warned_bad: AtomicBool::new(false),
            warned_full: AtomicBool::new(false),
        }
    }
}

/// Why a queued file will not be fetched.
enum Unresolved {
    /// It names no file: missing, or a directory.
    NoFile,
    /// Its directory could not be listed.
    Failed,
}

impl PrefetchQueue {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // The queue's bookkeeping is consistent between calls; a poisoned lock still holds it.
        crate::sync::lock(&self.shared)
    }

    /// The job opened `key`: a foretold open moves the window on. Says whether it was foretold.
    pub fn opened(&self, key: &str) -> bool {
        let foretold = matches!(self.lock().queue.opened(key), Foretold::Yes { .. });
        if foretold {
            self.wake.notify_one();
        }
        foretold
    }

    fn warn_bad(&self, what: &str) {
        if !self.warned_bad.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "prefetch queue: a line named no file of the mount ({what}); it and any like it are counted \
                 (fetchfs_prefetch_queue_files_total{{outcome=\"bad\"}}), not fetched"
            );
        }
    }

    /// Queues the lines of a write, and starts the fetching task of `fs` the first time.
    pub(super) fn take_lines<S: ObjectStore>(&self, lines: impl Iterator<Item = Line>, fs: &Fs<S>) {
        let mut shared = self.lock();
        for line in lines {
            match line {
                Line::InMount(key) => {
                    if !shared.queue.push(&key) && !self.warned_full.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "prefetch queue: full ({} names or {} MiB of names, the most it holds); further lines \
                             are dropped",
                            queue::MAX_QUEUED,
                            queue::MAX_QUEUED_BYTES >> 20
                        );
                    }
                }
                Line::Clear => shared.queue.clear(),
                Line::Bad => {
                    shared.queue.bad_line();
                    self.warn_bad("outside the mount, not a path, or not readable by its writer");
                }
            }
        }
        let start = !std::mem::replace(&mut shared.pump_started, true);
        drop(shared);
        if start {
            tokio::spawn(pump(fs.me.clone(), Arc::clone(&self.wake)));
        }
        self.wake.notify_one();
    }

    /// The queue's state as text, one `name value` per line.
    pub fn state_text(&self, limits: Limits) -> String {
        let shared = self.lock();
        let q = &shared.queue;
        let c = q.counts();
        let mut text = String::new();
        let rows: [(&str, u64); 17] = [
            ("queued", c.queued),
            ("pending", q.pending() as u64),
            ("in_flight", q.in_flight() as u64),
            ("fetched", c.fetched),
            ("fetched_bytes", c.fetched_bytes),
            ("cached", c.cached),
            ("hit", c.hit),
            ("missed", c.missed),
            ("skipped", c.skipped),
            ("wasted", c.wasted),
            ("wasted_bytes", c.wasted_bytes),
            ("bad", c.bad),
            ("failed", c.failed),
            ("dropped", c.dropped),
            ("window_bytes", q.window_bytes()),
            ("window_limit_bytes", limits.bytes),
            ("waiting_for_reads", u64::from(q.waits_for_reads(limits))),
        ];
        for (name, value) in rows {
            let _ = writeln!(text, "{name} {value}");
        }
        text
    }

    /// Adds what the queue did since the last call to the metrics.
    pub fn export(&self, metrics: &Metrics) {
        let mut shared = self.lock();
        let (now, before) = (shared.queue.counts(), shared.exported);
        shared.exported = now;
        drop(shared);
        let files = [
            ("queued", now.queued - before.queued),
            ("fetched", now.fetched - before.fetched),
            ("hit", now.hit - before.hit),
            ("missed", now.missed - before.missed),
            ("skipped", now.skipped - before.skipped),
            ("wasted", now.wasted - before.wasted),
            ("bad", now.bad - before.bad),
            ("failed", now.failed - before.failed),
            ("dropped", now.dropped - before.dropped),
        ];
        for (outcome, n) in files {
            metrics.queue_files.get_or_create(&QueueLabels { outcome }).inc_by(n);
        }
        let bytes =
            [("fetched", now.fetched_bytes - before.fetched_bytes), ("wasted", now.wasted_bytes - before.wasted_bytes)];
        for (outcome, n) in bytes {
            metrics.queue_bytes.get_or_create(&QueueLabels { outcome }).inc_by(n);
        }
    }
}

/// Takes queued files while the window has room, then waits for an open, a write or a fetch's
/// end to make more. Ends with the filesystem.
async fn pump<S: ObjectStore>(fs: Weak<Fs<S>>, wake: Arc<Notify>) {
    loop {
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        {
            let Some(fs) = fs.upgrade() else { return };
            let limits = fs.queue_limits();
            loop {
                let next = fs.prefetch.lock().queue.next_to_fetch(limits);
                let Some(next) = next else { break };
                let seq = next.seq;
                if crate::panics::guarded(fs.start_queued(next, limits)).await.is_none() {
                    fs.prefetch.lock().queue.fetch_ended(seq, None, false);
                }
            }
        }
        woken.await;
    }
}

impl<S: ObjectStore> Fs<S> {
    /// How far ahead of the job the queue fetches.
    pub(super) fn queue_limits(&self) -> Limits {
        let bytes = crate::memory_budget::queue_window(self.fetcher.cache().budget(), self.fetcher.disk_cap());
        Limits { bytes, in_flight: (self.fetcher.config().max_connections / 2).max(1) }
    }

    /// The queue's state, as a read of `.fetchfs/prefetch` shows it.
    pub(super) fn queue_state(&self) -> String {
        self.prefetch.state_text(self.queue_limits())
    }

    /// Finds the queued file and starts its fetch.
    async fn start_queued(&self, next: Next, limits: Limits) {
        let meta = match self.resolve_queued(&next.key).await {
            Ok(meta) => meta,
            Err(unresolved) => {
                if let Unresolved::NoFile = unresolved {
                    self.prefetch.warn_bad("missing, or a directory");
                }
                self.prefetch.lock().queue.fetch_ended(next.seq, None, matches!(unresolved, Unresolved::NoFile));
                return;
            }
        };
        let limit = if self.fetcher.has_disk_cache() { meta.size } else { meta.size.min(limits.bytes) };
        self.prefetch.lock().queue.sized(next.seq, limit);
        let (fetcher, me, wake) = (Arc::clone(&self.fetcher), self.me.clone(), Arc::clone(&self.prefetch.wake));
        let object = Arc::new(ObjectId { key: meta.key, etag: meta.etag });
        tokio::spawn(async move {
            let fetched = match crate::panics::guarded(fetcher.fetch_queued(object, meta.size, limit)).await {
                Some(Ok(bytes)) => Some(bytes),
                Some(Err(e)) => {
                    tracing::debug!("prefetch queue: fetching a queued file: {e}");
                    None
                }
                None => None,
            };
            if let Some(fs) = me.upgrade() {
                fs.prefetch.lock().queue.fetch_ended(next.seq, fetched, false);
            }
            wake.notify_one();
        });
    }

    /// The object a queued key names, from its directory's listing (listed once, then kept for the
    /// metadata TTL, so the job's own lookups cost no request either).
    async fn resolve_queued(&self, key: &str) -> Result<ObjectMeta, Unresolved> {
        if key.len() > super::names::LONGEST_KEY {
            return Err(Unresolved::NoFile);
        }
        let (prefix, name) = key.rfind('/').map_or(("", key), |i| (&key[..=i], &key[i + 1..]));
        if let Known::Unknown = self.metadata.known(prefix, name) {
            let dir = self.directory_number(prefix);
            if let Err(e) = self.within_deadline(self.listing(dir, prefix)).await {
                tracing::debug!(%prefix, "prefetch queue: listing a directory: {e}");
                return Err(Unresolved::Failed);
            }
        }
        match self.metadata.known(prefix, name) {
            Known::Present(_, Entry::File(meta)) => Ok(meta),
            _ => Err(Unresolved::NoFile),
        }
    }

    /// A number for the directory at `prefix` (under the root's), the one the kernel holds if it
    /// holds it: its listing numbers the entries under it.
    fn directory_number(&self, prefix: &str) -> Ino {
        let root = &self.options.root_prefix;
        let mut ino = ROOT_INO;
        let mut at = root.len();
        for part in prefix[root.len().min(prefix.len())..].split_terminator('/') {
            at += part.len() + 1;
            ino = self.inodes.number_for(ino, part, &Entry::Directory { prefix: prefix[..at].to_owned() }, None);
        }
        ino
    }
}
