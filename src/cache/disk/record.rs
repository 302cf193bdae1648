//! The record kept beside a version's data file: which object version the file holds, what the
//! data file looked like when fetchfs last wrote it (so a change made behind its back is noticed),
//! and which blocks hold their bytes. Encoded with a checksum, so a torn or garbled record reads
//! as no record at all.

const MAGIC: &[u8; 8] = b"FFSDISK1";

/// Inode number, length and modification time of a data file, as `fstat` gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub ino: u64,
    pub len: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

impl FileStamp {
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            ino: metadata.ino(),
            len: metadata.len(),
            mtime_sec: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
        }
    }
}

/// Which of an object version's blocks are present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSet {
    blocks: u64,
    bits: Vec<u8>,
}

impl BlockSet {
    pub fn empty(blocks: u64) -> Self {
        Self { blocks, bits: vec![0; blocks.div_ceil(8) as usize] }
    }

    pub fn contains(&self, index: u64) -> bool {
        index < self.blocks && self.bits[(index / 8) as usize] & (1 << (index % 8)) != 0
    }

    pub fn insert(&mut self, index: u64) {
        if index < self.blocks {
            self.bits[(index / 8) as usize] |= 1 << (index % 8);
        }
    }

    pub fn is_complete(&self) -> bool {
        (0..self.blocks).all(|i| self.contains(i))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Mount scope, key, ETag and size of the version the data file holds.
    pub identity: String,
    pub block_size: u64,
    pub stamp: FileStamp,
    pub present: BlockSet,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.identity.len() + self.present.bits.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.identity.len() as u64).to_le_bytes());
        out.extend_from_slice(self.identity.as_bytes());
        for value in [self.block_size, self.stamp.ino, self.stamp.len, self.present.blocks] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        for value in [self.stamp.mtime_sec, self.stamp.mtime_nsec] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(&self.present.bits);
        let checksum = crc32fast::hash(&out);
        out.extend_from_slice(&checksum.to_le_bytes());
        out
    }

    /// The record in `bytes`, or `None` if they are not a whole, intact record.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (body, checksum) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32fast::hash(body).to_le_bytes() != checksum {
            return None;
        }
        let mut reader = Reader(body);
        if reader.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let identity_len = usize::try_from(reader.u64()?).ok()?;
        let identity = String::from_utf8(reader.take(identity_len)?.to_vec()).ok()?;
        let (block_size, ino, len, blocks) = (reader.u64()?, reader.u64()?, reader.u64()?, reader.u64()?);
        let (mtime_sec, mtime_nsec) = (reader.u64()? as i64, reader.u64()? as i64);
        let bits = reader.take(usize::try_from(blocks.div_ceil(8)).ok()?)?.to_vec();
        if !reader.0.is_empty() {
            return None;
        }
        Some(Self {
            identity,
            block_size,
            stamp: FileStamp { ino, len, mtime_sec, mtime_nsec },
            present: BlockSet { blocks, bits },
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(identity: String, blocks: u64, present: &[u64]) -> Record {
        let mut set = BlockSet::empty(blocks);
        present.iter().for_each(|&i| set.insert(i));
        let stamp = FileStamp { ino: 12, len: blocks * 4096, mtime_sec: 1_700_000_000, mtime_nsec: 5 };
        Record { identity, block_size: 4096, stamp, present: set }
    }

    proptest! {
        #[test]
        fn a_record_reads_back_as_written(identity in ".{0,64}", blocks in 0u64..300, present in proptest::collection::vec(0u64..300, 0..40)) {
            let written = record(identity, blocks, &present);
            prop_assert_eq!(Record::decode(&written.encode()), Some(written));
        }

        #[test]
        fn a_torn_or_changed_record_is_no_record(cut in 0usize..60, flip in 0usize..60) {
            let bytes = record("scope\nkey\n\"e\"\n9".into(), 20, &[1, 3]).encode();
            prop_assert_eq!(Record::decode(&bytes[..cut.min(bytes.len() - 1)]), None);
            let mut changed = bytes.clone();
            let at = flip % changed.len();
            changed[at] ^= 0x40;
            prop_assert_eq!(Record::decode(&changed), None);
        }
    }

    #[test]
    fn only_a_set_with_every_block_is_complete() {
        let mut set = BlockSet::empty(10);
        assert!(!set.is_complete());
        (0..10).for_each(|i| set.insert(i));
        assert!(set.is_complete());
        assert!(!set.contains(10), "past the end is never present");
        assert!(BlockSet::empty(0).is_complete(), "an empty object is whole");
    }
}
