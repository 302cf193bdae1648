//! What recent listings and lookups said, for as long as the metadata TTLs allow: the entries of
//! each listed directory (in listing order, with the numbers readdir gave them), and the names
//! found missing, both by key prefix. Lookups and opens after a listing are answered from here, without a request.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::inode::{Entry, Ino};

/// One directory's entries, sorted by name as S3 lists them.
pub struct Listing {
    at: Instant,
    entries: Vec<(String, Ino, Entry)>,
    positions: HashMap<String, usize>,
}

impl Listing {
    pub fn new(entries: Vec<(String, Ino, Entry)>) -> Self {
        let positions = entries.iter().enumerate().map(|(i, (name, _, _))| (name.clone(), i)).collect();
        Self { at: Instant::now(), entries, positions }
    }

    pub fn entries(&self) -> &[(String, Ino, Entry)] {
        &self.entries
    }

    /// Where `name` stands in the listing.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.positions.get(name).copied()
    }

    /// This listing with `name` added (or replaced), as old as this one.
    fn with_entry(&self, name: &str, ino: Ino, entry: Entry) -> Self {
        let mut entries = self.entries.clone();
        match entries.binary_search_by(|(n, _, _)| n.as_str().cmp(name)) {
            Ok(i) => entries[i] = (name.to_owned(), ino, entry),
            Err(i) => entries.insert(i, (name.to_owned(), ino, entry)),
        }
        Self { at: self.at, ..Self::new(entries) }
    }

    fn get(&self, name: &str) -> Option<(Ino, Entry)> {
        let (_, ino, entry) = &self.entries[self.position(name)?];
        Some((*ino, entry.clone()))
    }
}

/// What the metadata caches say about a name.
#[derive(Debug, PartialEq, Eq)]
pub enum Known {
    Present(Ino, Entry),
    Missing,
    Unknown,
}

/// Negative answers kept at most; past this, expired ones are dropped, then the oldest half.
const MAX_MISSING: usize = 100_000;
/// Entries of all the listings kept at most (a few hundred bytes each); past this, the directories
/// used least recently are dropped, so an `indefinite` TTL still bounds memory.
pub const MAX_LISTED_ENTRIES: usize = 1_000_000;

/// Listings by directory prefix, least recently used first out.
struct Listings {
    by_prefix: lru::LruCache<String, Arc<Listing>>,
    entries: usize,
}

/// Listings and negative answers, keyed by key prefix rather than inode number, so they outlive
/// the kernel forgetting a directory's inode (memory pressure, `drop_caches`).
pub struct MetadataCache {
    ttl: Duration,
    negative_ttl: Duration,
    max_entries: usize,
    listings: Mutex<Listings>,
    missing: Mutex<HashMap<(String, String), Instant>>,
}

impl MetadataCache {
    pub fn new(ttl: Duration, negative_ttl: Duration, max_entries: usize) -> Self {
        let listings = Listings { by_prefix: lru::LruCache::unbounded(), entries: 0 };
        Self { ttl, negative_ttl, max_entries, listings: Mutex::new(listings), missing: Mutex::default() }
    }

    /// The listing of the directory `prefix`, while it is fresh.
    pub fn listing(&self, prefix: &str) -> Option<Arc<Listing>> {
        lock(&self.listings).by_prefix.get(prefix).filter(|l| l.at.elapsed() < self.ttl).cloned()
    }

    pub fn store_listing(&self, prefix: &str, listing: Arc<Listing>) {
        let mut listings = lock(&self.listings);
        listings.entries += listing.entries.len();
        if let Some(old) = listings.by_prefix.put(prefix.to_owned(), listing) {
            listings.entries -= old.entries.len();
        }
        while listings.entries > self.max_entries && listings.by_prefix.len() > 1 {
            match listings.by_prefix.pop_lru() {
                Some((_, dropped)) => listings.entries -= dropped.entries.len(),
                None => break,
            }
        }
        drop(listings);
        lock(&self.missing).retain(|(dir, _), _| dir != prefix);
    }

    /// A file written through this mount is in S3 now: its directory's listing (if kept) shows it,
    /// and it is no longer missing.
    pub fn add_entry(&self, prefix: &str, name: &str, ino: Ino, entry: Entry) {
        let mut listings = lock(&self.listings);
        if let Some(listing) = listings.by_prefix.get(prefix) {
            let updated = Arc::new(listing.with_entry(name, ino, entry));
            listings.entries += updated.entries.len();
            if let Some(old) = listings.by_prefix.put(prefix.to_owned(), updated) {
                listings.entries -= old.entries.len();
            }
        }
        drop(listings);
        lock(&self.missing).remove(&(prefix.to_owned(), name.to_owned()));
    }

    /// Forgets what is known of the directory `prefix`: a name in it turned out to have changed.
    pub fn forget_listing(&self, prefix: &str) {
        let mut listings = lock(&self.listings);
        if let Some(dropped) = listings.by_prefix.pop(prefix) {
            listings.entries -= dropped.entries.len();
        }
    }

    /// Forgets what is known of every directory under `prefix` (itself included).
    pub fn forget_under(&self, prefix: &str) {
        let mut listings = lock(&self.listings);
        let under: Vec<String> =
            listings.by_prefix.iter().filter(|(p, _)| p.starts_with(prefix)).map(|(p, _)| p.clone()).collect();
        for dir in under {
            if let Some(dropped) = listings.by_prefix.pop(&dir) {
                listings.entries -= dropped.entries.len();
            }
        }
        drop(listings);
        lock(&self.missing).retain(|(dir, _), _| !dir.starts_with(prefix));
    }

    /// Entries of the listings kept.
    pub fn listed_entries(&self) -> usize {
        lock(&self.listings).entries
    }

    /// What is known of `name` in the directory `prefix`. A listing that lacks the name says it
    /// is missing for the negative TTL, as a lookup that found it missing does.
    pub fn known(&self, prefix: &str, name: &str) -> Known {
        if let Some(listing) = self.listing(prefix) {
            match listing.get(name) {
                Some((ino, entry)) => return Known::Present(ino, entry),
                None if listing.at.elapsed() < self.negative_ttl => return Known::Missing,
                None => {}
            }
        }
        let missing = lock(&self.missing);
        match missing.get(&(prefix.to_owned(), name.to_owned())) {
            Some(at) if at.elapsed() < self.negative_ttl => Known::Missing,
            _ => Known::Unknown,
        }
    }

    pub fn store_missing(&self, prefix: &str, name: &str) {
        if self.negative_ttl.is_zero() {
            return;
        }
        let mut missing = lock(&self.missing);
        if missing.len() >= MAX_MISSING {
            missing.retain(|_, at| at.elapsed() < self.negative_ttl);
        }
        if missing.len() >= MAX_MISSING {
            let mut ages: Vec<Instant> = missing.values().copied().collect();
            let (_, &mut median, _) = ages.select_nth_unstable(MAX_MISSING / 2);
            missing.retain(|_, at| *at > median);
        }
        missing.insert((prefix.to_owned(), name.to_owned()), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn dir(prefix: &str) -> Entry {
        Entry::Directory { prefix: prefix.into() }
    }

    fn listing_of(names: &[&str]) -> Arc<Listing> {
        Arc::new(Listing::new(names.iter().enumerate().map(|(i, n)| (n.to_string(), i as Ino + 10, dir(n))).collect()))
    }

    #[test]
    fn a_fresh_listing_answers_for_present_and_missing_names() {
        let cache = MetadataCache::new(MINUTE, MINUTE, MAX_LISTED_ENTRIES);
        cache.store_listing("p/", Arc::new(Listing::new(vec![("a".into(), 7, dir("p/a/"))])));
        assert_eq!(cache.known("p/", "a"), Known::Present(7, dir("p/a/")));
        assert_eq!(cache.known("p/", "b"), Known::Missing);
        assert_eq!(cache.known("q/", "a"), Known::Unknown);
    }

    #[test]
    fn expired_answers_are_unknown() {
        let cache = MetadataCache::new(Duration::ZERO, Duration::ZERO, MAX_LISTED_ENTRIES);
        cache.store_listing("", listing_of(&["a"]));
        cache.store_missing("", "b");
        assert_eq!(cache.known("", "a"), Known::Unknown);
        assert_eq!(cache.known("", "b"), Known::Unknown);
    }

    #[test]
    fn a_listing_says_missing_for_the_negative_ttl_only() {
        let cache = MetadataCache::new(MINUTE, Duration::ZERO, MAX_LISTED_ENTRIES);
        cache.store_listing("", listing_of(&[]));
        assert_eq!(cache.known("", "x"), Known::Unknown, "a listing does not answer 'missing' without a negative TTL");
        let cache = MetadataCache::new(MINUTE, Duration::from_millis(50), MAX_LISTED_ENTRIES);
        cache.store_listing("", listing_of(&["a"]));
        assert_eq!(cache.known("", "x"), Known::Missing);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.known("", "x"), Known::Unknown, "past the negative TTL, the name is asked for again");
        assert!(matches!(cache.known("", "a"), Known::Present(..)), "while present names still come from the listing");
        let cache = MetadataCache::new(Duration::ZERO, MINUTE, MAX_LISTED_ENTRIES);
        cache.store_missing("", "x");
        assert_eq!(cache.known("", "x"), Known::Missing);
    }

    #[test]
    fn listings_stay_bounded_least_recently_used_first_out() {
        let cache = MetadataCache::new(Duration::MAX, Duration::MAX, 6);
        cache.store_listing("a/", listing_of(&["1", "2"]));
        cache.store_listing("b/", listing_of(&["1", "2"]));
        cache.store_listing("c/", listing_of(&["1", "2"]));
        assert!(cache.listing("a/").is_some(), "a/ used last");
        cache.store_listing("d/", listing_of(&["1", "2"]));
        assert!(cache.listing("b/").is_none(), "the least recently used listing left");
        assert!(cache.listing("a/").is_some() && cache.listing("c/").is_some() && cache.listing("d/").is_some());
        assert_eq!(cache.listed_entries(), 6);
        cache.store_listing("d/", listing_of(&["1"]));
        assert_eq!(cache.listed_entries(), 5, "a new listing of a directory replaces the old one");
        cache.forget_listing("a/");
        assert!(cache.listing("a/").is_none());
        assert_eq!(cache.listed_entries(), 3);
    }

    #[test]
    fn a_written_file_joins_its_directory_listing_in_order() {
        let cache = MetadataCache::new(MINUTE, MINUTE, MAX_LISTED_ENTRIES);
        cache.store_listing("", listing_of(&["a", "c"]));
        cache.store_missing("", "b");
        cache.add_entry("", "b", 99, dir("b/"));
        let listing = cache.listing("").expect("kept");
        let names: Vec<&str> = listing.entries().iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(cache.known("", "b"), Known::Present(99, dir("b/")));
        assert_eq!(cache.listed_entries(), 3);
    }

    #[test]
    fn negative_answers_stay_bounded() {
        let cache = MetadataCache::new(MINUTE, MINUTE, MAX_LISTED_ENTRIES);
        for i in 0..MAX_MISSING + 10 {
            cache.store_missing("", &i.to_string());
        }
        assert!(lock(&cache.missing).len() <= MAX_MISSING);
        assert_eq!(cache.known("", &(MAX_MISSING + 9).to_string()), Known::Missing, "the newest answer is kept");
    }
}
