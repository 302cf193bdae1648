//! Identity of an object version, shared by the store and everything above it: a key alone is not
//! enough, since the object behind it can be replaced while a file is open.

use std::fmt;

/// Longest key S3 stores, in bytes.
pub const LONGEST_KEY: usize = 1024;

/// An entity tag as S3 reports it, quotes included (`"<md5>"` or `"<md5>-<parts>"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other`, as a response header gives it, names the same version: compared without
    /// quotes or a weak prefix (`W/`), which proxies and some servers add or drop.
    pub fn matches(&self, other: &str) -> bool {
        fn bare(tag: &str) -> &str {
            tag.trim().trim_start_matches("W/").trim_matches('"')
        }
        bare(&self.0) == bare(other)
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One version of one object: reads pinned to it never see another version's bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectId {
    pub key: String,
    pub etag: ETag,
}

#[cfg(test)]
mod tests {
    use super::ETag;

    #[test]
    fn etags_match_without_quotes_or_a_weak_prefix() {
        let tag = ETag::new("\"abc-2\"");
        assert!(tag.matches("\"abc-2\""));
        assert!(tag.matches("abc-2"));
        assert!(tag.matches("W/\"abc-2\""));
        assert!(!tag.matches("\"abc-3\""));
        assert!(!tag.matches(""));
    }
}
