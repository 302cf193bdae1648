//! Epochs seen from their opens: a data loader that shuffles (PyTorch's `shuffle=True`, the default
//! every tutorial shows) opens the files of one listed directory at random and says nothing of its
//! order, but it will open every one of them. Once enough opens in a directory are spread over it
//! and follow no order, the files not yet read are worth fetching to the disk cache, in any
//! order: every later open is then a local one.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use lru::LruCache;

use super::inode::{Entry, Ino};
use super::{Fs, Listing};
use crate::object_id::ObjectId;
use crate::store::ObjectStore;

/// Opens out of listing order in one directory after which it is taken for an epoch: more than a
/// person opening a few files, few enough that a loader's first batch already starts it.
pub const OPENS_FOR_AN_EPOCH: usize = 12;
/// Directories smaller than this are left to readahead and next-file prefetch: their epoch is
/// over before fetching the rest would pay.
pub const SMALLEST_DIRECTORY: usize = 4 * OPENS_FOR_AN_EPOCH;
/// Directories followed at once.
const DIRECTORIES: usize = 256;
/// The share of the disk cache's cap an epoch leaves free (for the job's own fills): it fills the
/// room there is, counting its fetches in flight, and evicts nothing.
const ROOM_LEFT_PER_CAP: u64 = 10;

#[derive(Default)]
struct Seen {
    /// Distinct positions opened, up to `OPENS_FOR_AN_EPOCH` (past it only the reach matters).
    opened: HashSet<usize>,
    /// The lowest and highest positions opened.
    reach: Option<(usize, usize)>,
    /// The directory's fetch was started: it is not started again while it is remembered.
    started: bool,
}

/// Per directory, the files opened out of order (a few, and how far apart), and whether its epoch
/// fetch began: a bounded record however many files are opened.
pub struct Epochs {
    dirs: Mutex<LruCache<Ino, Seen>>,
}

impl Default for Epochs {
    fn default() -> Self {
        Self { dirs: Mutex::new(LruCache::new(NonZeroUsize::new(DIRECTORIES).unwrap_or(NonZeroUsize::MIN))) }
    }
}

impl Epochs {
    /// Records an open of the entry at `position` of the `listed` entries of `dir`, one that
    /// next-file prefetch did not find in order: true for the open after which the rest of the
    /// directory should be fetched (once).
    pub fn on_unordered_open(&self, dir: Ino, position: usize, listed: usize) -> bool {
        if listed < SMALLEST_DIRECTORY {
            return false;
        }
        let mut dirs = crate::sync::lock(&self.dirs);
        let seen = dirs.get_or_insert_mut(dir, Seen::default);
        if seen.started {
            return false;
        }
        if seen.opened.len() < OPENS_FOR_AN_EPOCH {
            seen.opened.insert(position);
        }
        let (low, high) = seen.reach.unwrap_or((position, position));
        seen.reach = Some((low.min(position), high.max(position)));
        if seen.opened.len() < OPENS_FOR_AN_EPOCH || !spread(seen.reach, listed) {
            return false;
        }
        seen.started = true;
        seen.opened = HashSet::new();
        true
    }

    /// The epoch fetch of `dir` ended early (no room, an error): a later epoch may start it again.
    pub fn forget(&self, dir: Ino) {
        crate::sync::lock(&self.dirs).pop(&dir);
    }
}

impl<S: ObjectStore> Fs<S> {
    /// Fetches the files of the directory `dir` (at `prefix`, listed as `listing`) to the disk
    /// cache, a few at a time in listing order, while the disk has room for them without evicting
    /// anything; files already whole there cost no request.
    pub(super) fn fetch_epoch(&self, dir: Ino, prefix: &str, listing: Arc<Listing>) {
        let Some(me) = self.me.upgrade() else { return };
        let Some(cap) = self.fetcher.disk_cap() else { return };
        let prefix = prefix.to_owned();
        // As many files at once as there are connections: a shuffled loader's files are small, and
        // a GET of one is mostly waiting for its first byte (a loader at 10 ms, interleaved runs:
        // 16 at once 919-997 files/s, 32 at once 1012-1140; 664 without a disk cache).
        let at_once = self.fetcher.config().max_connections.max(1);
        tokio::spawn(async move {
            // Taken one by one as room allows, not copied first: a directory may hold millions.
            let entries = listing.entries().len();
            let files = (0..entries).filter_map({
                let listing = Arc::clone(&listing);
                move |at| match &listing.entries()[at].2 {
                    Entry::File(meta) => Some(meta.clone()),
                    Entry::Directory { .. } => None,
                }
            });
            tracing::info!(%prefix, entries, "a directory read at random: fetching its files to the disk cache");
            let fetcher = Arc::clone(&me.fetcher);
            // Bytes of the files being fetched: not on disk yet, but they will be.
            let in_flight = AtomicU64::new(0);
            let has_room = |size: u64| {
                let coming = in_flight.load(Ordering::Relaxed) + size;
                fetcher.disk_room().is_some_and(|room| room >= coming + cap / ROOM_LEFT_PER_CAP)
            };
            let mut fetches = futures::stream::iter(files)
                .take_while(|meta| std::future::ready(has_room(meta.size)))
                .map(|meta| {
                    let (fetcher, in_flight) = (Arc::clone(&fetcher), &in_flight);
                    in_flight.fetch_add(meta.size, Ordering::Relaxed);
                    let object = Arc::new(ObjectId { key: meta.key, etag: meta.etag });
                    async move {
                        let done = fetcher.fetch_to_disk(&object, meta.size).await;
                        in_flight.fetch_sub(meta.size, Ordering::Relaxed);
                        done
                    }
                })
                .buffer_unordered(at_once);
            let (mut fetched, mut bytes, mut failed) = (0u64, 0u64, 0u64);
            while let Some(done) = fetches.next().await {
                match done {
                    // The disk cannot take files now (failing, or its breaker open).
                    Ok(None) => {
                        failed += 1;
                        break;
                    }
                    Ok(Some(0)) => {}
                    Ok(Some(n)) => {
                        fetched += 1;
                        bytes += n;
                        me.metrics.disk.epoch_files.inc();
                        me.metrics.disk.epoch_bytes.inc_by(n);
                    }
                    Err(e) => {
                        failed += 1;
                        tracing::debug!(%prefix, "fetching a file of an epoch: {e}");
                    }
                }
            }
            let stopped = if has_room(0) { "the directory is on disk" } else { "the disk cache has no more room" };
            tracing::info!(%prefix, fetched, mib = bytes >> 20, failed, "{stopped}");
            if failed > 0 || !has_room(0) {
                me.epochs.forget(dir);
            }
        });
    }
}

/// Whether the positions opened, from `reach`'s low to its high, cover at least half of the
/// `listed` entries: a loader's random opens do, a job reading one corner of a large directory
/// (the first files of each class, say) does not.
fn spread(reach: Option<(usize, usize)>, listed: usize) -> bool {
    reach.is_some_and(|(low, high)| (high - low) * 2 >= listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shuffled(n: usize, seed: u64) -> Vec<usize> {
        let mut rng = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        order
    }

    #[test]
    fn random_opens_over_a_directory_start_its_fetch_once() {
        let epochs = Epochs::default();
        let starts: Vec<usize> = shuffled(1000, 7)
            .into_iter()
            .enumerate()
            .filter(|&(_, p)| epochs.on_unordered_open(1, p, 1000))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(starts.len(), 1, "started once: {starts:?}");
        assert!(starts[0] < 2 * OPENS_FOR_AN_EPOCH, "started after {} opens", starts[0] + 1);
    }

    #[test]
    fn a_few_opens_a_small_directory_or_one_corner_start_nothing() {
        let epochs = Epochs::default();
        assert!(!(0..OPENS_FOR_AN_EPOCH - 1).any(|i| epochs.on_unordered_open(1, i * 80, 1000)), "a few files");
        assert!(!shuffled(SMALLEST_DIRECTORY - 1, 3).into_iter().any(|p| epochs.on_unordered_open(
            2,
            p,
            SMALLEST_DIRECTORY - 1
        )));
        assert!(
            !shuffled(100, 5).into_iter().any(|p| epochs.on_unordered_open(3, p, 10_000)),
            "the first 100 of 10,000"
        );
    }

    #[test]
    fn a_directory_read_in_one_corner_for_ever_is_remembered_in_bounded_memory() {
        let epochs = Epochs::default();
        assert!(!(0..100_000).any(|p| epochs.on_unordered_open(1, (p * 7) % 1000, 1_000_000)));
        let dirs = crate::sync::lock(&epochs.dirs);
        let seen = dirs.peek(&1).expect("followed");
        assert_eq!(seen.opened.len(), OPENS_FOR_AN_EPOCH);
        assert_eq!(seen.reach, Some((0, 999)));
    }

    #[test]
    fn an_epoch_ended_early_may_start_again() {
        let epochs = Epochs::default();
        let open_all =
            |epochs: &Epochs| shuffled(200, 9).into_iter().filter(|&p| epochs.on_unordered_open(1, p, 200)).count();
        assert_eq!(open_all(&epochs), 1);
        assert_eq!(open_all(&epochs), 0, "not again while remembered");
        epochs.forget(1);
        assert_eq!(open_all(&epochs), 1);
    }
}
