//! Directories whose files are looked up by name and never listed: a Dataset reading a CSV of
//! paths, zarr's chunks, `sha256sum -c`. Each such lookup costs a HEAD and a LIST before the GET.
//! After a few in one directory, the directory is listed once (in the background, page by page),
//! and its listing answers the lookups after it without a request, as after an `ls`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Lookups by name in one directory after which it is listed: a listing page answers a thousand
/// names for the price of one lookup's LIST, so a few lookups already say more will come.
pub const LIST_AFTER: u32 = 4;
/// Pages a listing started by lookups may take (a thousand entries each); a directory larger than
/// that is left to lookups by name, its listing would cost more than the lookups it saves.
pub const MOST_PAGES: usize = 100;
/// How long a directory found too large (or failing to list) is not listed again for lookups.
const DECLINED_FOR: Duration = Duration::from_secs(600);
/// Directories followed at once, most recently looked into kept.
const DIRECTORIES_KEPT: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Looked(u32),
    Listing,
    Declined(Instant),
}

/// Counts lookups by name per directory prefix and says when one should be listed.
pub struct NamedLookups {
    seen: Mutex<lru::LruCache<String, Seen>>,
}

impl Default for NamedLookups {
    fn default() -> Self {
        let kept = std::num::NonZeroUsize::new(DIRECTORIES_KEPT).unwrap_or(std::num::NonZeroUsize::MIN);
        Self { seen: Mutex::new(lru::LruCache::new(kept)) }
    }
}

impl NamedLookups {
    /// Counts a lookup by name that the metadata cache could not answer in `prefix`: true for
    /// the lookup after which the directory should be listed (once, until `listed`).
    pub fn asked(&self, prefix: &str) -> bool {
        let mut seen = lock(&self.seen);
        let now = match seen.get(prefix).copied() {
            None => Seen::Looked(1),
            Some(Seen::Looked(n)) => Seen::Looked(n + 1),
            Some(Seen::Declined(at)) if at.elapsed() >= DECLINED_FOR => Seen::Looked(1),
            Some(other) => other,
        };
        let list = now == Seen::Looked(LIST_AFTER);
        seen.put(prefix.to_owned(), if list { Seen::Listing } else { now });
        list
    }

    /// The listing `asked` called for ended: `whole` when the metadata cache now holds it (lookups
    /// are counted afresh once it expires), else the directory is not listed again for a while.
    pub fn listed(&self, prefix: &str, whole: bool) {
        let mut seen = lock(&self.seen);
        if whole {
            seen.pop(prefix);
        } else {
            seen.put(prefix.to_owned(), Seen::Declined(Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_listed_once_after_a_few_lookups_by_name() {
        let named = NamedLookups::default();
        let asks: Vec<bool> = (0..10).map(|_| named.asked("d/")).collect();
        let at = LIST_AFTER as usize - 1;
        assert!(asks[at], "listed at the {LIST_AFTER}th lookup");
        assert_eq!(asks.iter().filter(|&&a| a).count(), 1, "listed once while its listing runs");
        assert!(!named.asked("e/"), "other directories are counted apart");
    }

    #[test]
    fn a_directory_listed_whole_is_counted_afresh_and_one_declined_is_left_alone() {
        let named = NamedLookups::default();
        let list_after_lookups = |named: &NamedLookups, prefix: &str| (0..LIST_AFTER).any(|_| named.asked(prefix));
        assert!(list_after_lookups(&named, "d/"));
        named.listed("d/", true);
        assert!(list_after_lookups(&named, "d/"), "an expired listing is made again");
        named.listed("d/", false);
        assert!(!(0..100).any(|_| named.asked("d/")), "too large to list: left to lookups by name");
    }
}
