//! What an object in the shared cache holds: a header naming the source bytes it stands for and a
//! tag over them, then the bytes. Anyone who can write the cache bucket can put anything there, so
//! what is read back is opened, never trusted: a header naming other bytes, or a tag that does not
//! match, is a miss. The tag is a BLAKE3 digest (catches corruption and mix-ups), or, with a key
//! every node holds, BLAKE3's keyed MAC (catches a writer without the key). BLAKE3 rather than
//! SHA-256 and HMAC-SHA256, which give the same guarantees: every byte a node fills or reads is
//! tagged, and SHA-256 was a quarter of a node's CPU reading from the cache.

use bytes::{BufMut, Bytes};

const MAGIC: &[u8; 8] = b"fetchfs2";
/// Context of the MAC key derived from the key file's bytes (of any length).
const KEY_CONTEXT: &str = "fetchfs shared cache 2026-12 block MAC key";
/// Magic, the source's identity, the offset, the length, the tag.
pub const HEADER_LEN: usize = 8 + 32 + 8 + 8 + 32;

/// A digest of what identifies one object version at its source (endpoint, bucket, key, ETag,
/// size): blocks of other versions can never be taken for its own.
pub type Identity = [u8; 32];

/// How blocks are tagged.
#[derive(Clone)]
pub enum Check {
    Digest,
    /// A MAC under a key derived from the cluster's secret.
    Keyed([u8; 32]),
}

impl Check {
    /// The keyed check for a secret every node holds.
    pub fn keyed(secret: &[u8]) -> Self {
        Check::Keyed(blake3::derive_key(KEY_CONTEXT, secret))
    }
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.write_str(match self {
            Check::Digest => "Digest",
            Check::Keyed(_) => "Keyed",
        })
    }
}

/// Why a cached object was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("it is not a block of fetchfs's shared cache")]
    NotABlock,
    #[error("it stands for other bytes (another object, version or offset)")]
    OtherBytes,
    #[error("its bytes do not match its tag (corrupted, or written without the key)")]
    BadTag,
}

pub fn identity(scope: &str, key: &str, etag: &str, size: u64) -> Identity {
    let mut hash = blake3::Hasher::new();
    for part in [scope.as_bytes(), key.as_bytes(), etag.as_bytes(), &size.to_be_bytes()] {
        hash.update(&(part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

fn tag(check: &Check, identity: &Identity, offset: u64, bytes: &[u8]) -> blake3::Hash {
    let mut hash = match check {
        Check::Digest => blake3::Hasher::new(),
        Check::Keyed(key) => blake3::Hasher::new_keyed(key),
    };
    hash.update(identity).update(&offset.to_be_bytes()).update(&(bytes.len() as u64).to_be_bytes()).update(bytes);
    hash.finalize()
}

/// A block's bytes gathered behind room for its header, so that sealing it copies nothing.
pub struct Unsealed(Vec<u8>);

impl Unsealed {
    /// Gathers into `buffer` (its contents are dropped, its memory kept).
    pub fn in_buffer(mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        buffer.resize(HEADER_LEN, 0);
        Self(buffer)
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    /// How many bytes were gathered so far.
    pub fn gathered(&self) -> usize {
        self.0.len() - HEADER_LEN
    }

    /// The cache object for these bytes at `offset` of the version `identity`.
    pub fn seal(mut self, check: &Check, identity: &Identity, offset: u64) -> Vec<u8> {
        let len = self.gathered() as u64;
        let tag = tag(check, identity, offset, &self.0[HEADER_LEN..]);
        let mut header = &mut self.0[..HEADER_LEN];
        header.put_slice(MAGIC);
        header.put_slice(identity);
        header.put_u64(offset);
        header.put_u64(len);
        header.put_slice(tag.as_bytes());
        self.0
    }
}

/// The bytes of a cache object, if it is the block at `offset` of `identity`, `len` long, and its
/// tag matches.
pub fn open(check: &Check, identity: &Identity, offset: u64, len: u64, sealed: Bytes) -> Result<Bytes, Refused> {
    if sealed.len() < HEADER_LEN || &sealed[..8] != MAGIC {
        return Err(Refused::NotABlock);
    }
    let field = |at: usize| u64::from_be_bytes(sealed[at..at + 8].try_into().unwrap_or([0; 8]));
    if &sealed[8..40] != identity || field(40) != offset || field(48) != len {
        return Err(Refused::OtherBytes);
    }
    let bytes = sealed.slice(HEADER_LEN..);
    // A comparison in constant time: the tag is a MAC when keyed.
    let stored = blake3::Hash::from_bytes(sealed[56..88].try_into().unwrap_or([0; 32]));
    if bytes.len() as u64 != len || tag(check, identity, offset, &bytes) != stored {
        return Err(Refused::BadTag);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(check: &Check, identity: &Identity, offset: u64, bytes: &[u8]) -> Bytes {
        let mut block = Unsealed::in_buffer(Vec::new());
        block.extend_from_slice(bytes);
        Bytes::from(block.seal(check, identity, offset))
    }

    fn version() -> Identity {
        identity("http://s3\nbucket", "data/shard-1.bin", "\"etag\"", 10)
    }

    #[test]
    fn a_sealed_block_opens_to_its_bytes() {
        for check in [Check::Digest, Check::keyed(b"secret")] {
            let sealed = seal(&check, &version(), 4, b"abcdef");
            assert_eq!(open(&check, &version(), 4, 6, sealed), Ok(Bytes::from_static(b"abcdef")));
        }
    }

    #[test]
    fn another_version_offset_or_length_is_other_bytes() {
        let sealed = seal(&Check::Digest, &version(), 4, b"abcdef");
        let other = identity("http://s3\nbucket", "data/shard-1.bin", "\"other\"", 10);
        assert_eq!(open(&Check::Digest, &other, 4, 6, sealed.clone()), Err(Refused::OtherBytes));
        assert_eq!(open(&Check::Digest, &version(), 0, 6, sealed.clone()), Err(Refused::OtherBytes));
        assert_eq!(open(&Check::Digest, &version(), 4, 5, sealed), Err(Refused::OtherBytes));
    }

    #[test]
    fn a_changed_byte_or_a_block_sealed_without_the_key_is_refused() {
        let sealed = seal(&Check::Digest, &version(), 4, b"abcdef");
        let mut changed = sealed.to_vec();
        *changed.last_mut().unwrap() ^= 1;
        assert_eq!(open(&Check::Digest, &version(), 4, 6, changed.into()), Err(Refused::BadTag));
        // A writer without the key can make a valid digest, not a valid MAC.
        let keyed = Check::keyed(b"secret");
        assert_eq!(open(&keyed, &version(), 4, 6, sealed), Err(Refused::BadTag));
        let wrong_key = seal(&Check::keyed(b"guess"), &version(), 4, b"abcdef");
        assert_eq!(open(&keyed, &version(), 4, 6, wrong_key), Err(Refused::BadTag));
        assert_eq!(open(&keyed, &version(), 4, 6, Bytes::from_static(b"short")), Err(Refused::NotABlock));
    }

    #[test]
    fn identities_differ_with_any_part() {
        let base = identity("s", "k", "e", 1);
        assert_ne!(base, identity("s", "k", "e", 2));
        assert_ne!(base, identity("s", "k", "f", 1));
        assert_ne!(identity("ab", "c", "e", 1), identity("a", "bc", "e", 1), "parts cannot run together");
    }
}
