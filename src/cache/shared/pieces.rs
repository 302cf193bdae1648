//! Blocks that reach the node in pieces. The fetch layer asks for a stream's first bytes on their
//! own and the rest of their block as a span (so the first read waits only for its own bytes): no
//! single GET then carries that block whole. Its pieces are kept here, by version and block, until
//! they cover it; then it goes up like any other. A few blocks at a time, the least recently
//! touched let go first, so pieces no GET completes (the edges of random reads) cost little. Of a
//! block let go only where its pieces lay is remembered: when later pieces fill in the rest (a
//! loader copying shuffled slices out of a memory map reads each block's two halves far apart),
//! the node has read all of it, and it is worth fetching whole to send up.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::ops::Range;

use bytes::Bytes;

use super::sealed::Identity;

/// Blocks being pieced together at once.
const BLOCKS_KEPT: usize = 16;
/// Blocks let go whose pieces' places are remembered.
const PLACES_KEPT: usize = 4096;
/// Pieces one block may take before it is given up (a reader of tiny scattered ranges).
const PIECES_PER_BLOCK: usize = 64;

/// What a block's pieces came to, once they cover it.
#[derive(Debug, PartialEq)]
pub enum Covered {
    /// Its bytes, in order.
    Bytes(Vec<Bytes>),
    /// Every byte of it passed by, but some so long ago that they were let go.
    LetGo,
}

pub struct Pieces {
    blocks: lru::LruCache<(Identity, u64), BTreeMap<u64, Bytes>>,
    let_go: lru::LruCache<(Identity, u64), Vec<Range<u64>>>,
}

impl Default for Pieces {
    fn default() -> Self {
        let kept = |n| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Self { blocks: lru::LruCache::new(kept(BLOCKS_KEPT)), let_go: lru::LruCache::new(kept(PLACES_KEPT)) }
    }
}

impl Pieces {
    /// `bytes` at `at` within block `index` of the version, a block of `len` bytes. Returns what
    /// the block's pieces came to, once they cover all of it.
    pub fn add(&mut self, identity: Identity, index: u64, len: u64, at: u64, bytes: Bytes) -> Option<Covered> {
        if bytes.is_empty() || at >= len {
            return None;
        }
        let block = (identity, index);
        if !self.blocks.contains(&block)
            && let Some((evicted, pieces)) = self.blocks.push(block, BTreeMap::new())
        {
            self.let_go.get_or_insert_mut(evicted, Vec::new).extend(places(&pieces));
        }
        let pieces = self.blocks.get_or_insert_mut(block, BTreeMap::new);
        let longest = pieces.get(&at).map_or(0, Bytes::len);
        if bytes.len() > longest {
            pieces.insert(at, bytes);
        }
        if pieces.len() > PIECES_PER_BLOCK {
            self.blocks.pop(&block);
            self.let_go.pop(&block);
            return None;
        }
        if let Some(covered) = in_order(pieces, len) {
            self.blocks.pop(&block);
            self.let_go.pop(&block);
            return Some(Covered::Bytes(covered));
        }
        let let_go = self.let_go.peek(&block).into_iter().flatten().cloned();
        if !covers(places(pieces).chain(let_go).collect(), len) {
            return None;
        }
        self.blocks.pop(&block);
        self.let_go.pop(&block);
        Some(Covered::LetGo)
    }
}

/// Where in its block each piece lies.
fn places(pieces: &BTreeMap<u64, Bytes>) -> impl Iterator<Item = Range<u64>> + '_ {
    pieces.iter().map(|(&at, bytes)| at..at + bytes.len() as u64)
}

/// Whether `places` cover `0..len` without a gap.
fn covers(mut places: Vec<Range<u64>>, len: u64) -> bool {
    places.sort_unstable_by_key(|place| place.start);
    let mut cursor = 0;
    for place in places {
        if place.start > cursor {
            return false;
        }
        cursor = cursor.max(place.end);
    }
    cursor >= len
}

/// The pieces that cover `0..len` in order, trimmed so that none overlaps the one before, if they
/// cover it without a gap.
fn in_order(pieces: &BTreeMap<u64, Bytes>, len: u64) -> Option<Vec<Bytes>> {
    let mut covered = Vec::new();
    let mut cursor = 0;
    for (&at, bytes) in pieces {
        if at > cursor {
            return None;
        }
        let end = (at + bytes.len() as u64).min(len);
        if end > cursor {
            covered.push(bytes.slice((cursor - at) as usize..(end - at) as usize));
            cursor = end;
        }
        if cursor == len {
            return Some(covered);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Identity = [7; 32];

    fn joined_bytes(covered: Covered) -> Vec<u8> {
        let Covered::Bytes(pieces) = covered else { panic!("{covered:?}: the bytes were let go") };
        pieces.iter().flat_map(|p| p.iter().copied()).collect()
    }

    #[test]
    fn pieces_in_any_order_make_the_block_once_they_cover_it() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut pieces = Pieces::default();
        assert_eq!(pieces.add(ID, 3, 100, 40, Bytes::copy_from_slice(&data[40..100])), None);
        assert_eq!(pieces.add(ID, 3, 100, 10, Bytes::copy_from_slice(&data[10..50])), None, "a gap below 10");
        let whole = pieces.add(ID, 3, 100, 0, Bytes::copy_from_slice(&data[0..20])).expect("covered");
        assert_eq!(joined_bytes(whole), data, "overlaps trimmed, in order");
        assert_eq!(pieces.add(ID, 3, 100, 0, Bytes::copy_from_slice(&data[0..20])), None, "taken once");
    }

    #[test]
    fn other_blocks_and_versions_do_not_mix() {
        let mut pieces = Pieces::default();
        assert_eq!(pieces.add(ID, 0, 10, 0, Bytes::from_static(b"abcde")), None);
        assert_eq!(pieces.add(ID, 1, 10, 5, Bytes::from_static(b"fghij")), None);
        assert_eq!(pieces.add([8; 32], 0, 10, 5, Bytes::from_static(b"fghij")), None);
        let whole = pieces.add(ID, 0, 10, 5, Bytes::from_static(b"FGHIJ")).expect("covered");
        assert_eq!(joined_bytes(whole), b"abcdeFGHIJ");
    }

    #[test]
    fn only_the_most_recent_blocks_are_kept() {
        let mut pieces = Pieces::default();
        for index in 0..=BLOCKS_KEPT as u64 {
            pieces.add(ID, index, 10, 0, Bytes::from_static(b"abcde"));
        }
        assert_eq!(
            pieces.add(ID, 0, 10, 5, Bytes::from_static(b"fghij")),
            Some(Covered::LetGo),
            "block 0's bytes were let go, but all of it passed by"
        );
        let last = pieces.add(ID, BLOCKS_KEPT as u64, 10, 5, Bytes::from_static(b"fghij"));
        assert_eq!(joined_bytes(last.expect("covered")), b"abcdefghij");
    }

    #[test]
    fn a_block_let_go_is_not_covered_by_pieces_that_leave_a_gap() {
        let mut pieces = Pieces::default();
        pieces.add(ID, 0, 100, 0, Bytes::from(vec![1; 30]));
        for index in 1..=BLOCKS_KEPT as u64 {
            pieces.add(ID, index, 100, 0, Bytes::from(vec![1; 30]));
        }
        assert_eq!(pieces.add(ID, 0, 100, 40, Bytes::from(vec![1; 60])), None, "30..40 never passed by");
        assert_eq!(pieces.add(ID, 0, 100, 25, Bytes::from(vec![1; 20])), Some(Covered::LetGo));
        assert_eq!(
            pieces.add(ID, 0, 100, 0, Bytes::from(vec![1; 100])),
            Some(Covered::Bytes(vec![Bytes::from(vec![1; 100])])),
            "then once more, whole"
        );
    }
}
