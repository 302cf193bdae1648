//! Control files: `.fetchfs/` at the mount's root, not listed, holding files a program writes to
//! to steer the mount. `.fetchfs/prefetch` takes the order a job will read files in (see
//! `prefetch_queue`) and reads back the queue's state as text. A bucket's keys under `.fetchfs/`
//! at the root are hidden.

pub mod lines;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::handles::Handle;
use super::inode::{CONTROL_DIR_INO, Entry, Ino, PREFETCH_INO, ROOT_INO};
use super::{Attr, Fs, Kind, User, lock};
use crate::errno::FsError;
use crate::store::{ObjectMeta, ObjectStore};
use lines::{Line, LineBuffer};

/// The control directory's name at the root.
pub const CONTROL_DIR: &str = ".fetchfs";
const PREFETCH: &str = "prefetch";
/// An open control file: the line being written, and the state text this descriptor reads.
pub(in crate::fs) struct ControlHandle {
    /// Who opened it: the kernel checks the control file's own mode (`default_permissions`);
    /// what a line names is checked against the mount's modes for this user.
    caller: User,
    /// The caller's supplementary groups: the kernel counts them too.
    groups: Vec<u32>,
    lines: LineBuffer,
    shown: Option<Bytes>,
}

/// What the mount's control files share: whether hidden keys were warned of.
#[derive(Default)]
pub struct ControlFiles {
    warned_hidden: AtomicBool,
}

impl ControlFiles {
    /// Says once that keys under `.fetchfs/` at the root cannot be seen through the mount.
    pub fn warn_hidden(&self, prefix: &str) {
        if !self.warned_hidden.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the bucket has keys under {prefix}{CONTROL_DIR}/: they are hidden, the mount's control files live there"
            );
        }
    }
}

/// The supplementary groups of process `pid`, from `/proc/PID/status` (none when it is gone).
pub fn groups_of_process(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    groups_in_status(&status)
}

fn groups_in_status(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|groups| groups.split_whitespace().filter_map(|g| g.parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether `mode` lets `caller` (with supplementary `groups`) do `what` (4 read, 1 search), for
/// files owned by `uid`:`gid`.
fn allows(mode: u16, uid: u32, gid: u32, caller: User, groups: &[u32], what: u16) -> bool {
    let bits = if caller.uid == uid {
        mode >> 6
    } else if caller.gid == gid || groups.contains(&gid) {
        mode >> 3
    } else {
        mode
    };
    caller.uid == 0 || bits & what == what
}

impl<S: ObjectStore> Fs<S> {
    /// A control inode's attributes: the directory can be searched, the file written by the
    /// mount's owner, and by anyone when other users may use the mount.
    pub(super) fn control_attr(&self, ino: Ino) -> Option<Attr> {
        let o = &self.options;
        let (kind, perm) = match ino {
            CONTROL_DIR_INO => (Kind::Directory, if o.shared { 0o555 } else { 0o500 }),
            PREFETCH_INO => (Kind::File, if o.shared { 0o666 } else { 0o600 }),
            _ => return None,
        };
        Some(Attr { ino, kind, size: 0, mtime: self.mounted_at, perm, uid: o.owner.uid, gid: o.owner.gid })
    }

    /// The lookup of a control name, if `name` in `parent` is one (or is in the control
    /// directory).
    pub(super) fn control_lookup(&self, parent: Ino, name: &str) -> Option<Result<Attr, FsError>> {
        match (parent, name) {
            (ROOT_INO, CONTROL_DIR) => self.control_attr(CONTROL_DIR_INO).map(Ok),
            (CONTROL_DIR_INO, PREFETCH) => self.control_attr(PREFETCH_INO).map(Ok),
            (CONTROL_DIR_INO, _) => Some(Err(FsError::NotFound)),
            _ => None,
        }
    }

    /// The control directory's listing.
    pub(super) fn control_listing(&self) -> super::Listing {
        let meta = ObjectMeta {
            key: format!("{CONTROL_DIR}/{PREFETCH}"),
            size: 0,
            etag: crate::object_id::ETag::new(""),
            last_modified: self.mounted_at,
        };
        super::Listing::new(vec![(PREFETCH.to_owned(), PREFETCH_INO, Entry::File(meta))])
    }

    /// Opens a control file for `caller`, if `ino` is one: its reads and writes bypass the page
    /// cache. The caller's `groups` are asked for only then (reading `/proc` on every open cost a
    /// small file's read a twentieth of its CPU).
    pub fn open_control(
        &self,
        ino: Ino,
        caller: User,
        groups: impl FnOnce() -> Vec<u32>,
    ) -> Option<Result<u64, FsError>> {
        match ino {
            PREFETCH_INO => {
                let opened = ControlHandle { caller, groups: groups(), lines: LineBuffer::default(), shown: None };
                Some(Ok(self.handles.add(Handle::Control(Arc::new(Mutex::new(opened))))))
            }
            CONTROL_DIR_INO => Some(Err(FsError::IsADirectory)),
            _ => None,
        }
    }

    /// A read of a control file: the queue's state, taken when the descriptor reads from 0.
    pub(super) fn read_control(&self, control: &Mutex<ControlHandle>, offset: u64, len: u32) -> Bytes {
        let mut opened = lock(control);
        if offset == 0 || opened.shown.is_none() {
            opened.shown = Some(Bytes::from(self.queue_state()));
        }
        let shown = opened.shown.clone().unwrap_or_default();
        let start = (offset as usize).min(shown.len());
        let end = start.saturating_add(len as usize).min(shown.len());
        shown.slice(start..end)
    }

    /// A write to a control file: whole lines go to the queue, the rest waits for the next write.
    pub(super) fn write_control(&self, control: &Mutex<ControlHandle>, data: &[u8]) -> u32 {
        let mut lines = Vec::new();
        let (caller, groups) = {
            let mut opened = lock(control);
            opened.lines.feed(data, |line| lines.push(lines::parse(line, &self.options.mountpoint)));
            (opened.caller, opened.groups.clone())
        };
        self.queue_lines(lines, caller, &groups);
        data.len() as u32
    }

    /// A close of a control file: a last line without its newline counts.
    pub(super) fn close_control(&self, control: &Mutex<ControlHandle>) {
        let mut lines = Vec::new();
        let (caller, groups) = {
            let mut opened = lock(control);
            opened.lines.finish(|line| lines.push(lines::parse(line, &self.options.mountpoint)));
            (opened.caller, opened.groups.clone())
        };
        self.queue_lines(lines, caller, &groups);
    }

    fn queue_lines(&self, lines: Vec<Line>, caller: User, groups: &[u32]) {
        if lines.is_empty() {
            return;
        }
        let o = &self.options;
        let may_read =
            allows(o.dir_mode, o.uid, o.gid, caller, groups, 1) && allows(o.file_mode, o.uid, o.gid, caller, groups, 4);
        let keys = lines.into_iter().map(|line| match line {
            Line::InMount(path) if may_read && !self.is_control_path(&path) => {
                Line::InMount(format!("{}{path}", o.root_prefix))
            }
            Line::InMount(_) => Line::Bad,
            other => other,
        });
        self.prefetch.take_lines(keys, self);
    }

    /// Whether `name` in `parent` is the control directory or in it: nothing is made, moved or
    /// deleted there, whatever the bucket holds.
    pub(super) fn is_reserved(&self, parent: Ino, name: &str) -> bool {
        (parent == ROOT_INO && name == CONTROL_DIR) || parent == CONTROL_DIR_INO
    }

    fn is_control_path(&self, path: &str) -> bool {
        path == CONTROL_DIR || path.starts_with(&format!("{CONTROL_DIR}/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_queued_only_by_users_the_modes_let_read() {
        let owner = User { uid: 1000, gid: 1000 };
        let other = User { uid: 1001, gid: 1001 };
        let group = User { uid: 1002, gid: 1000 };
        assert!(allows(0o600, 1000, 1000, owner, &[], 4));
        assert!(!allows(0o640, 1000, 1000, other, &[], 4));
        assert!(allows(0o640, 1000, 1000, group, &[], 4));
        assert!(allows(0o640, 1000, 1000, other, &[27, 1000], 4), "a member by a supplementary group");
        assert!(!allows(0o640, 1000, 1000, other, &[27], 4));
        assert!(!allows(0o750, 1000, 1000, other, &[], 1));
        assert!(allows(0o700, 1000, 1000, User { uid: 0, gid: 0 }, &[], 4), "root reads all");
    }

    #[test]
    fn supplementary_groups_are_read_from_the_process_status() {
        let status = "Name:\tpython3\nGid:\t1001\t1001\t1001\t1001\nGroups:\t27 1000 1005 \nNSpid:\t9\n";
        assert_eq!(groups_in_status(status), [27, 1000, 1005]);
        assert_eq!(groups_in_status("Groups:\t\n"), Vec::<u32>::new());
        let mine = groups_of_process(std::process::id());
        // SAFETY: getgroups with a zero count only returns how many there are.
        let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        assert_eq!(mine.len(), usize::try_from(count).unwrap_or(0), "this process's own groups: {mine:?}");
    }
}
