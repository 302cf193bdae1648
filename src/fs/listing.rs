//! What recent listings and lookups said, for as long as the metadata TTLs allow: the entries of
//! each listed directory (in listing order, with the numbers readdir gave them), and the names
//! found missing. Lookups and opens after a listing are answered from here, without a request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
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

pub struct MetadataCache {
    ttl: Duration,
    negative_ttl: Duration,
    listings: Mutex<HashMap<Ino, Arc<Listing>>>,
    missing: Mutex<HashMap<(Ino, String), Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Values behind these locks are replaced whole; a poisoned lock still holds a valid map.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MetadataCache {
    pub fn new(ttl: Duration, negative_ttl: Duration) -> Self {
        Self { ttl, negative_ttl, listings: Mutex::default(), missing: Mutex::default() }
    }

    /// The listing of `dir`, while it is fresh.
    pub fn listing(&self, dir: Ino) -> Option<Arc<Listing>> {
        lock(&self.listings).get(&dir).filter(|l| l.at.elapsed() < self.ttl).cloned()
    }

    pub fn store_listing(&self, dir: Ino, listing: Arc<Listing>) {
        let mut listings = lock(&self.listings);
        listings.retain(|_, l| l.at.elapsed() < self.ttl);
        listings.insert(dir, listing);
        lock(&self.missing).retain(|(parent, _), _| *parent != dir);
    }

    pub fn known(&self, dir: Ino, name: &str) -> Known {
        if let Some(listing) = self.listing(dir) {
            return match listing.get(name) {
                Some((ino, entry)) => Known::Present(ino, entry),
                None if self.negative_ttl.is_zero() => Known::Unknown,
                None => Known::Missing,
            };
        }
        let missing = lock(&self.missing);
        match missing.get(&(dir, name.to_owned())) {
            Some(at) if at.elapsed() < self.negative_ttl => Known::Missing,
            _ => Known::Unknown,
        }
    }

    pub fn store_missing(&self, dir: Ino, name: &str) {
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
        missing.insert((dir, name.to_owned()), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(prefix: &str) -> Entry {
        Entry::Directory { prefix: prefix.into() }
    }

    #[test]
    fn a_fresh_listing_answers_for_present_and_missing_names() {
        let cache = MetadataCache::new(Duration::from_secs(60), Duration::from_secs(60));
        cache.store_listing(1, Arc::new(Listing::new(vec![("a".into(), 7, dir("a/"))])));
        assert_eq!(cache.known(1, "a"), Known::Present(7, dir("a/")));
        assert_eq!(cache.known(1, "b"), Known::Missing);
        assert_eq!(cache.known(2, "a"), Known::Unknown);
    }

    #[test]
    fn expired_answers_are_unknown() {
        let cache = MetadataCache::new(Duration::ZERO, Duration::ZERO);
        cache.store_listing(1, Arc::new(Listing::new(vec![("a".into(), 7, dir("a/"))])));
        cache.store_missing(1, "b");
        assert_eq!(cache.known(1, "a"), Known::Unknown);
        assert_eq!(cache.known(1, "b"), Known::Unknown);
    }

    #[test]
    fn negative_answers_have_their_own_ttl() {
        let cache = MetadataCache::new(Duration::from_secs(60), Duration::ZERO);
        cache.store_listing(1, Arc::new(Listing::new(vec![])));
        assert_eq!(cache.known(1, "x"), Known::Unknown, "a listing does not answer 'missing' without a negative TTL");
        let cache = MetadataCache::new(Duration::ZERO, Duration::from_secs(60));
        cache.store_missing(1, "x");
        assert_eq!(cache.known(1, "x"), Known::Missing);
    }

    #[test]
    fn negative_answers_stay_bounded() {
        let cache = MetadataCache::new(Duration::from_secs(60), Duration::from_secs(60));
        for i in 0..MAX_MISSING + 10 {
            cache.store_missing(1, &i.to_string());
        }
        assert!(lock(&cache.missing).len() <= MAX_MISSING);
        assert_eq!(cache.known(1, &(MAX_MISSING + 9).to_string()), Known::Missing, "the newest answer is kept");
    }
}
