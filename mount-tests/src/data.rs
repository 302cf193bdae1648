//! Deterministic pseudo-random content: the bytes of a test object follow from its seed and size,
//! so tests check what they read without keeping a copy of what they uploaded.

use bytes::Bytes;

/// SplitMix64: tiny, fast, and good enough to make every block of every object distinct.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The content of a test object. Each 8-byte word depends on the seed and its offset only, so any
/// range can be produced (or checked) without the bytes before it.
pub fn content(seed: u64, len: usize) -> Bytes {
    let mut out = vec![0u8; len];
    fill(seed, 0, &mut out);
    Bytes::from(out)
}

/// Writes the bytes of object `seed` starting at `offset` into `buf`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        let word_index = pos / 8;
        let mut state = seed ^ word_index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let word = splitmix64(&mut state).to_le_bytes();
        let within = (pos % 8) as usize;
        let n = (8 - within).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&word[within..within + n]);
        i += n;
        pos += n as u64;
    }
}

/// The offset of the first byte of `actual` that differs from object `seed` at `offset`.
pub fn first_mismatch(seed: u64, offset: u64, actual: &[u8]) -> Option<u64> {
    let mut expected = vec![0u8; actual.len()];
    fill(seed, offset, &mut expected);
    expected.iter().zip(actual).position(|(a, b)| a != b).map(|i| offset + i as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_range_matches_the_whole() {
        let whole = content(7, 1000);
        for (start, end) in [(0, 1000), (3, 17), (8, 16), (999, 1000), (5, 5)] {
            let mut part = vec![0; end - start];
            fill(7, start as u64, &mut part);
            assert_eq!(&whole[start..end], &part[..], "range {start}..{end}");
        }
    }

    #[test]
    fn seeds_differ_and_mismatches_are_found() {
        assert_ne!(content(1, 64), content(2, 64));
        let mut data = content(3, 100).to_vec();
        assert_eq!(first_mismatch(3, 0, &data), None);
        data[42] ^= 1;
        assert_eq!(first_mismatch(3, 0, &data), Some(42));
    }
}
