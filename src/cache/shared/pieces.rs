//! Blocks that reach the node in pieces. The fetch layer asks for a stream's first bytes on their
//! own and the rest of their block as a span (so the first read waits only for its own bytes): no
//! single GET then carries that block whole. Its pieces are kept here, by version and block, until
//! they cover it; then it goes up like any other. A few blocks at a time, the least recently
//! touched dropped first, so pieces no GET completes (the edges of random reads) cost little.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use bytes::Bytes;

use super::sealed::Identity;

/// Blocks being pieced together at once.
const BLOCKS_KEPT: usize = 16;
/// Pieces one block may take before it is given up (a reader of tiny scattered ranges).
const PIECES_PER_BLOCK: usize = 64;

pub struct Pieces {
    blocks: lru::LruCache<(Identity, u64), BTreeMap<u64, Bytes>>,
}

impl Default for Pieces {
    fn default() -> Self {
        Self { blocks: lru::LruCache::new(NonZeroUsize::new(BLOCKS_KEPT).unwrap_or(NonZeroUsize::MIN)) }
    }
}

impl Pieces {
    /// `bytes` at `at` within block `index` of the version, a block of `len` bytes. Returns the
    /// block's pieces, in order, once they cover all of it.
    pub fn add(&mut self, identity: Identity, index: u64, len: u64, at: u64, bytes: Bytes) -> Option<Vec<Bytes>> {
        if bytes.is_empty() || at >= len {
            return None;
        }
        let block = (identity, index);
        let pieces = self.blocks.get_or_insert_mut(block, BTreeMap::new);
        let longest = pieces.get(&at).map_or(0, Bytes::len);
        if bytes.len() > longest {
            pieces.insert(at, bytes);
        }
        if pieces.len() > PIECES_PER_BLOCK {
            self.blocks.pop(&block);
            return None;
        }
        let covered = in_order(pieces, len)?;
        self.blocks.pop(&block);
        Some(covered)
    }
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

    fn joined_bytes(pieces: Vec<Bytes>) -> Vec<u8> {
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
        assert_eq!(pieces.add(ID, 0, 10, 5, Bytes::from_static(b"fghij")), None, "block 0 was let go");
        assert!(pieces.add(ID, BLOCKS_KEPT as u64, 10, 5, Bytes::from_static(b"fghij")).is_some());
    }
}
