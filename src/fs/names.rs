//! Which parts of S3 keys can be file names here. Keys that cannot (empty components, `.`, `..`,
//! NUL, longer than a name may be) are skipped by listings and lookups, never fatal.

/// Longest file name Linux accepts, in bytes.
const NAME_MAX: usize = 255;

pub use crate::object_id::LONGEST_KEY;

/// A name longer than Linux allows: `ENAMETOOLONG`, not a name that is merely not a key.
pub fn is_too_long(name: &str) -> bool {
    name.len() > NAME_MAX
}

pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= NAME_MAX
        && !name.contains('/')
        && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_and_odd_names_pass() {
        for name in ["a", "with space", "ünï 文件", "plus+sign", "100%", ".hidden", "..."] {
            assert!(is_valid_name(name), "{name:?}");
        }
    }

    #[test]
    fn names_that_would_escape_or_break_are_refused() {
        let long = "x".repeat(256);
        for name in ["", ".", "..", "a/b", "nul\0byte", long.as_str()] {
            assert!(!is_valid_name(name), "{name:?}");
        }
    }
}
