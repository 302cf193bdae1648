//! Next-file prefetch: when the files of a directory are opened one after another in listing order
//! (a sorted glob, a shell loop of `cat`, data-loader workers over sorted paths), the next files
//! are worth fetching before they are opened. The pattern is tracked per directory, not per handle
//! or process, so a new process per file and several workers sharing one list are both seen.

use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use super::inode::Ino;

/// Opens remembered per directory: enough to see eight workers' streams interleaved, few enough
/// that shuffled opens rarely look ordered by chance.
const RECENT_OPENS: usize = 32;
/// An open follows the pattern when at least two of the files up to this many places before it
/// were opened recently (workers interleave their opens, a little out of order). The more of them
/// were, the further ahead files are fetched.
const LOOK_BACK: usize = 8;
/// Files fetched ahead of an open whose every predecessor in `LOOK_BACK` was opened, at first.
pub const FILES_AHEAD: usize = 16;
/// Each run of this many opens in a row that follow the pattern doubles the reach, up to
/// `MOST_DOUBLINGS` times: a `cat dir/*` on s3-like went from 1200 to 1700 files/s with 128 files
/// ahead, where a fixed 128 fetched many files for nothing on shuffled opens that looked ordered
/// by chance for an open or two.
const OPENS_PER_DOUBLING: usize = 8;
const MOST_DOUBLINGS: usize = 3;
/// Directories whose pattern is tracked at once.
const DIRECTORIES: usize = 256;

#[derive(Default)]
struct DirectoryOpens {
    recent: VecDeque<usize>,
    /// Positions already asked for, so each file is fetched ahead once.
    asked: BTreeSet<usize>,
    /// Opens in a row that followed the pattern.
    streak: usize,
}

pub struct NextFiles {
    dirs: Mutex<LruCache<Ino, DirectoryOpens>>,
}

impl Default for NextFiles {
    fn default() -> Self {
        Self { dirs: Mutex::new(LruCache::new(NonZeroUsize::new(DIRECTORIES).unwrap_or(NonZeroUsize::MIN))) }
    }
}

impl NextFiles {
    /// Records an open of the entry at `position` in the listing of `dir` and returns the positions
    /// to fetch ahead, in order: `None` when the open does not follow the pattern. `cost` says what fetching
    /// an entry ahead would take, in bytes (`None` for entries that are not files); the positions
    /// returned cost at most `budget` in all, past what was asked before.
    pub fn on_open(
        &self,
        dir: Ino,
        position: usize,
        listed: usize,
        cost: impl Fn(usize) -> Option<u64>,
        budget: u64,
    ) -> Option<Vec<usize>> {
        let mut dirs = crate::sync::lock(&self.dirs);
        let opens = dirs.get_or_insert_mut(dir, DirectoryOpens::default);
        let before = position.saturating_sub(LOOK_BACK)..position;
        let mut predecessors: Vec<usize> = opens.recent.iter().copied().filter(|p| before.contains(p)).collect();
        predecessors.sort_unstable();
        predecessors.dedup();
        if opens.recent.len() == RECENT_OPENS {
            opens.recent.pop_front();
        }
        opens.recent.push_back(position);
        opens.asked.insert(position);
        // Forget what lies far behind, so the set stays small on a long directory.
        let keep_from = position.saturating_sub(4 * RECENT_OPENS);
        opens.asked = opens.asked.split_off(&keep_from);
        if predecessors.len() < 2 {
            opens.streak = 0;
            return None;
        }
        opens.streak += 1;
        let doublings = (opens.streak / OPENS_PER_DOUBLING).min(MOST_DOUBLINGS);
        let reach = (FILES_AHEAD * predecessors.len() / LOOK_BACK) << doublings;
        let mut ahead = Vec::new();
        let mut spent = 0;
        for next in (position + 1..listed).take(reach) {
            let Some(bytes) = cost(next) else { continue };
            if opens.asked.contains(&next) {
                continue;
            }
            if spent + bytes > budget && !ahead.is_empty() {
                break;
            }
            spent += bytes;
            opens.asked.insert(next);
            ahead.push(next);
        }
        Some(ahead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(_: usize) -> Option<u64> {
        Some(100)
    }

    fn open_all(next: &NextFiles, positions: impl IntoIterator<Item = usize>) -> Vec<usize> {
        positions.into_iter().flat_map(|p| next.on_open(1, p, 1000, files, u64::MAX).unwrap_or_default()).collect()
    }

    #[test]
    fn one_or_two_opens_fetch_nothing_ahead() {
        let next = NextFiles::default();
        assert!(open_all(&next, [0, 1]).is_empty());
    }

    #[test]
    fn opens_in_listing_order_reach_further_ahead_and_fetch_each_file_once() {
        let next = NextFiles::default();
        open_all(&next, [0, 1]);
        assert_eq!(next.on_open(1, 2, 1000, files, u64::MAX), Some(vec![3, 4, 5, 6]));
        assert_eq!(next.on_open(1, 3, 1000, files, u64::MAX), Some(vec![7, 8, 9]));
        let later = open_all(&next, 4..20);
        assert!(later.windows(2).all(|w| w[0] < w[1]), "each file once, in order");
        assert_eq!(later.last(), Some(&(19 + (FILES_AHEAD << 2))), "18 opens in a row: doubled twice");
        let longer = open_all(&next, 20..100);
        assert_eq!(longer.last(), Some(&(99 + (FILES_AHEAD << MOST_DOUBLINGS))), "at most doubled three times");
    }

    #[test]
    fn shuffled_opens_rarely_fetch_ahead() {
        let next = NextFiles::default();
        let mut rng = 0x9e3779b97f4a7c15u64;
        let mut order: Vec<usize> = (0..1000).collect();
        for i in (1..order.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        let fetched = open_all(&next, order).len();
        assert!(fetched < 100, "{fetched} files fetched ahead for 1000 shuffled opens");
    }

    #[test]
    fn interleaved_workers_are_each_served() {
        let next = NextFiles::default();
        // Two workers, one reading 0.., the other 500..
        let ahead = open_all(&next, (0..10).flat_map(|i| [i, 500 + i]));
        assert!(ahead.contains(&(9 + FILES_AHEAD)) && ahead.contains(&(509 + FILES_AHEAD)), "{ahead:?}");
        // Eight workers taking turns over one list, slightly out of order.
        let next = NextFiles::default();
        let ahead = open_all(&next, (0..64).map(|i| if i % 2 == 0 { i + 1 } else { i - 1 }));
        assert!(ahead.iter().max() >= Some(&(62 + FILES_AHEAD)), "{ahead:?}");
    }

    #[test]
    fn directories_and_the_listing_end_are_skipped_and_the_budget_holds() {
        let next = NextFiles::default();
        let only_odd = |p: usize| (p % 2 == 1).then_some(100);
        let ahead: Vec<usize> =
            (0..12).flat_map(|p| next.on_open(1, p, 12, only_odd, u64::MAX).unwrap_or_default()).collect();
        assert_eq!(ahead, vec![3, 5, 7, 9, 11]);
        let next = NextFiles::default();
        for p in 0..20 {
            assert!(next.on_open(2, p, 100, files, 250).unwrap_or_default().len() <= 2, "at {p}");
        }
    }

    #[test]
    fn directories_are_tracked_apart() {
        let next = NextFiles::default();
        next.on_open(1, 0, 100, files, u64::MAX);
        next.on_open(1, 1, 100, files, u64::MAX);
        assert_eq!(next.on_open(2, 2, 100, files, u64::MAX), None);
    }
}
