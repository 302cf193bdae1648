//! What an object in the shared cache holds: a header naming the source bytes it stands for and a
//! tag over them, then the bytes. Anyone who can write the cache bucket can put anything there, so
//! what is read back is opened, never trusted: a header naming other bytes, or a tag that does not
//! match, is a miss. The tag is a SHA-256 digest (catches corruption and mix-ups), or, with a key
//! every node holds, an HMAC (catches a writer without the key).

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"fetchfs1";
/// Magic, the source's identity, the offset, the length, the tag.
pub const HEADER_LEN: usize = 8 + 32 + 8 + 8 + 32;

/// A digest of what identifies one object version at its source (endpoint, bucket, key, ETag,
/// size): blocks of other versions can never be taken for its own.
pub type Identity = [u8; 32];

/// How blocks are tagged.
#[derive(Clone)]
pub enum Check {
    Digest,
    Hmac(Vec<u8>),
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.write_str(match self {
            Check::Digest => "Digest",
            Check::Hmac(_) => "Hmac",
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
    let mut hash = Sha256::new();
    for part in [scope.as_bytes(), key.as_bytes(), etag.as_bytes(), &size.to_be_bytes()] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

fn tag(check: &Check, identity: &Identity, offset: u64, bytes: &[u8]) -> [u8; 32] {
    let fields = [identity.as_slice(), &offset.to_be_bytes(), &(bytes.len() as u64).to_be_bytes(), bytes];
    match check {
        Check::Digest => {
            let mut hash = Sha256::new();
            fields.iter().for_each(|f| hash.update(f));
            hash.finalize().into()
        }
        Check::Hmac(key) => {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return [0; 32] };
            fields.iter().for_each(|f| mac.update(f));
            mac.finalize().into_bytes().into()
        }
    }
}

/// The cache object for `bytes` at `offset` of the version `identity`.
pub fn seal(check: &Check, identity: &Identity, offset: u64, bytes: &[u8]) -> Bytes {
    let mut sealed = BytesMut::with_capacity(HEADER_LEN + bytes.len());
    sealed.put_slice(MAGIC);
    sealed.put_slice(identity);
    sealed.put_u64(offset);
    sealed.put_u64(bytes.len() as u64);
    sealed.put_slice(&tag(check, identity, offset, bytes));
    sealed.put_slice(bytes);
    sealed.freeze()
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
    if bytes.len() as u64 != len || tag(check, identity, offset, &bytes) != sealed[56..88] {
        return Err(Refused::BadTag);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version() -> Identity {
        identity("http://s3\nbucket", "data/shard-1.bin", "\"etag\"", 10)
    }

    #[test]
    fn a_sealed_block_opens_to_its_bytes() {
        for check in [Check::Digest, Check::Hmac(b"secret".to_vec())] {
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
        // A writer without the key can make a valid digest, not a valid HMAC.
        let keyed = Check::Hmac(b"secret".to_vec());
        assert_eq!(open(&keyed, &version(), 4, 6, sealed), Err(Refused::BadTag));
        let wrong_key = seal(&Check::Hmac(b"guess".to_vec()), &version(), 4, b"abcdef");
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
