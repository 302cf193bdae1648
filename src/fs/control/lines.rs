//! Lines written to a control file: cut at newlines (a write may end mid-line, the next one goes
//! on with it), and each read as a path in the mount, absolute or relative to its root.

use std::path::{Component, Path};

/// A line longer than this is not a path: Linux's PATH_MAX, its terminating NUL included. Longer
/// lines are dropped as bad as they arrive, so a writer cannot make the daemon hold more.
const LONGEST_LINE: usize = libc::PATH_MAX as usize - 1;
/// The longest name a path's component may have (NAME_MAX).
const LONGEST_NAME: usize = 255;

/// What one line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A path under the mount's root, with no `.`, `..` or empty components, never empty.
    InMount(String),
    /// An empty line: the queue is cleared.
    Clear,
    /// A path that is not in the mount, not UTF-8, or too long.
    Bad,
}

/// The bytes of a line not ended yet, per open control file.
#[derive(Default)]
pub struct LineBuffer {
    partial: Vec<u8>,
    too_long: bool,
}

impl LineBuffer {
    /// Takes `data` and hands each line it ends to `line`, without its newline.
    pub fn feed(&mut self, data: &[u8], mut line: impl FnMut(Option<&[u8]>)) {
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = (&rest[..end], &rest[end + 1..]);
            if self.too_long || self.partial.len() + head.len() > LONGEST_LINE {
                line(None);
            } else if self.partial.is_empty() {
                line(Some(head));
            } else {
                self.partial.extend_from_slice(head);
                line(Some(&self.partial));
            }
            self.partial.clear();
            self.too_long = false;
            rest = tail;
        }
        if self.partial.len() + rest.len() > LONGEST_LINE {
            self.too_long = true;
            self.partial.clear();
        } else if !self.too_long {
            self.partial.extend_from_slice(rest);
        }
    }

    /// The last line, when the writer closes without ending it.
    pub fn finish(&mut self, line: impl FnOnce(Option<&[u8]>)) {
        if self.too_long {
            line(None);
        } else if !self.partial.is_empty() {
            line(Some(&self.partial));
        }
        self.partial.clear();
        self.too_long = false;
    }
}

/// Reads a line (`None`: too long) as a path in the mount at `mountpoint`.
pub fn parse(line: Option<&[u8]>, mountpoint: &Path) -> Line {
    let Some(line) = line else { return Line::Bad };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Line::Clear;
    }
    let Ok(text) = std::str::from_utf8(line) else { return Line::Bad };
    let path = Path::new(text);
    let relative = if path.is_absolute() {
        match path.strip_prefix(mountpoint) {
            Ok(inside) => inside,
            Err(_) => return Line::Bad,
        }
    } else {
        path
    };
    let mut parts: Vec<&str> = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => match part.to_str() {
                Some(part) if part.len() <= LONGEST_NAME => parts.push(part),
                _ => return Line::Bad,
            },
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Line::Bad;
                }
            }
            Component::Prefix(_) => return Line::Bad,
        }
    }
    if parts.is_empty() { Line::Bad } else { Line::InMount(parts.join("/")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(writes: &[&[u8]]) -> Vec<Option<String>> {
        let mut buffer = LineBuffer::default();
        let mut out = Vec::new();
        for write in writes {
            buffer.feed(write, |l| out.push(l.map(|l| String::from_utf8_lossy(l).into_owned())));
        }
        buffer.finish(|l| out.push(l.map(|l| String::from_utf8_lossy(l).into_owned())));
        out
    }

    #[test]
    fn lines_may_be_cut_anywhere_between_writes() {
        assert_eq!(
            lines_of(&[b"a/b", b"c\nd\n\ne", b"f"]),
            [Some("a/bc".into()), Some("d".into()), Some(String::new()), Some("ef".into())]
        );
        assert_eq!(lines_of(&[b"x\n"]), [Some("x".to_owned())], "an ended last line is not read twice");
    }

    #[test]
    fn a_line_too_long_is_one_bad_line() {
        let long = vec![b'a'; LONGEST_LINE + 1];
        let out = lines_of(&[&long[..10], &long[10..], b"\nok\n"]);
        assert_eq!(out, [None, Some("ok".into())]);
    }

    #[test]
    fn paths_are_read_against_the_mount_root() {
        let mnt = Path::new("/mnt/data");
        let parse = |s: &str| parse(Some(s.as_bytes()), mnt);
        assert_eq!(parse("train/0001.jpg"), Line::InMount("train/0001.jpg".into()));
        assert_eq!(parse("/mnt/data/train/./0001.jpg"), Line::InMount("train/0001.jpg".into()));
        assert_eq!(parse("./a//b/../c\r"), Line::InMount("a/c".into()));
        assert_eq!(parse(""), Line::Clear);
        assert_eq!(parse("\r"), Line::Clear);
        assert_eq!(parse("/mnt/other/x"), Line::Bad, "outside the mount");
        assert_eq!(parse("/mnt/database/x"), Line::Bad, "a sibling sharing the name's start");
        assert_eq!(parse("../x"), Line::Bad, "above the root");
        assert_eq!(parse("/mnt/data"), Line::Bad, "the root itself is no file");
        assert_eq!(parse("a/.."), Line::Bad);
        assert_eq!(super::parse(Some(b"\xff\xfe"), mnt), Line::Bad);
        assert_eq!(super::parse(None, mnt), Line::Bad);
        assert_eq!(parse(&format!("d/{}", "n".repeat(255))), Line::InMount(format!("d/{}", "n".repeat(255))));
        assert_eq!(parse(&format!("d/{}", "n".repeat(256))), Line::Bad, "a component over NAME_MAX");
    }

    mod any_input {
        use super::*;
        use crate::fs::prefetch_queue::queue::{MAX_QUEUED_BYTES, Queue};
        use proptest::prelude::*;

        /// A line as writers send them: a path, any bytes, or a long run of components.
        fn line() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                "[a-z0-9./]{0,40}\r?".prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..300),
                (3000usize..9000, 1usize..300).prop_map(|(len, part)| {
                    let component = "c".repeat(part);
                    let mut path = String::new();
                    while path.len() < len {
                        path.push_str(&component);
                        path.push('/');
                    }
                    path.into_bytes()
                }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            #[test]
            fn every_line_is_queued_cleared_or_counted_and_none_grows_memory(
                lines in proptest::collection::vec(line(), 0..40),
                cuts in proptest::collection::vec(0usize..20_000, 0..12),
            ) {
                let mut text: Vec<u8> = Vec::new();
                for line in &lines {
                    text.extend_from_slice(line);
                    text.push(b'\n');
                }
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
                cuts.sort_unstable();
                let mut buffer = LineBuffer::default();
                let mut queue = Queue::default();
                let (mut clears, mut longest) = (0u64, 0usize);
                let mut take = |line: Option<&[u8]>, queue: &mut Queue| {
                    match parse(line, Path::new("/mnt/data")) {
                        Line::InMount(key) => {
                            longest = longest.max(key.len());
                            queue.push(&key);
                        }
                        Line::Clear => {
                            clears += 1;
                            queue.clear();
                        }
                        Line::Bad => queue.bad_line(),
                    }
                };
                let mut from = 0;
                for cut in cuts.into_iter().chain([text.len()]) {
                    buffer.feed(&text[from..cut], |l| take(l, &mut queue));
                    prop_assert!(buffer.partial.len() <= LONGEST_LINE, "a line in the making is bounded");
                    from = cut;
                }
                buffer.finish(|l| take(l, &mut queue));
                let c = queue.counts();
                prop_assert_eq!(c.queued + c.bad + c.dropped + clears, lines.len() as u64);
                prop_assert!(longest <= LONGEST_LINE);
                prop_assert!(queue.key_bytes() <= MAX_QUEUED_BYTES);
            }
        }
    }

    #[test]
    fn a_line_over_path_max_is_bad_and_one_at_it_is_read() {
        let at_limit = format!("{}f", "a/".repeat((LONGEST_LINE - 1) / 2));
        let over = format!("q/{}f", "a/".repeat(17_000));
        let text = format!("{at_limit}\n{over}\nok\n");
        let out = lines_of(&[text.as_bytes()]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_deref().map(str::len), Some(at_limit.len()));
        assert_eq!((&out[1], &out[2]), (&None, &Some("ok".to_owned())));
    }
}
