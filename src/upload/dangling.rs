//! Multipart uploads started here and not yet ended, noted in a journal on local disk, so that the
//! ones a killed daemon left behind are aborted by the next mount of the same bucket (until it is
//! aborted, a dangling upload keeps its parts, and S3 bills them).
//!
//! Each daemon appends to a journal of its own and holds a lock on it for as long as it runs. A
//! journal nobody holds belongs to a daemon that is gone, so every upload it lists without an end
//! is dangling: no guess from its age is needed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};

use crate::store::{ObjectStore, StoreError, UploadId};

const HEADER: &str = "fetchfs uploads of";

/// Where journals live: systemd's state directory for the unit, else the user's state directory.
pub fn journal_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").and_then(|d| std::env::split_paths(&d).next()) {
        return Some(dir.join("uploads"));
    }
    let state = match std::env::var_os("XDG_STATE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".local/state"),
    };
    Some(state.join("fetchfs/uploads"))
}

/// Names the journals of one bucket (at one endpoint) in a file name.
fn file_prefix(bucket: &str) -> String {
    format!("{:08x}-", crc32fast::hash(bucket.as_bytes()))
}

/// A key on one line: `%` and line breaks escaped.
fn escape(key: &str) -> String {
    key.replace('%', "%25").replace('\n', "%0A").replace('\r', "%0D")
}

fn unescape(line: &str) -> String {
    line.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")
}

/// Takes the lock that says a daemon is using the journal; false if another holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: flock reads the descriptor only; `file` keeps it open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) { Ok(false) } else { Err(e) }
}

/// This daemon's journal.
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Uploads started and not yet ended.
    open: AtomicI64,
}

impl Journal {
    /// Creates this daemon's journal for `bucket` (an endpoint and a bucket name) in `dir`, locked
    /// before it gets its name, so no other daemon can take it for a dead one's.
    pub fn create(dir: &Path, bucket: &str) -> io::Result<Self> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let name = format!("{}{}-{}", file_prefix(bucket), std::process::id(), unique_suffix());
        let (hidden, path) = (dir.join(format!(".{name}")), dir.join(format!("{name}.log")));
        let mut file = OpenOptions::new().create_new(true).append(true).mode(0o600).open(&hidden)?;
        try_lock(&file)?;
        writeln!(file, "{HEADER} {bucket}")?;
        std::fs::rename(&hidden, &path)?;
        Ok(Self { file, path, open: AtomicI64::new(0) })
    }

    /// One line, in one `write` to a file opened for appending: lines never interleave.
    fn note(&self, line: String) {
        if let Err(e) = (&self.file).write_all(line.as_bytes()) {
            tracing::warn!("noting an upload in {}: {e}", self.path.display());
        }
    }

    pub fn started(&self, key: &str, upload: &UploadId) {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.note(format!("start\t{}\t{}\n", upload.0, escape(key)));
    }

    pub fn ended(&self, upload: &UploadId) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.note(format!("end\t{}\n", upload.0));
    }
}

impl Drop for Journal {
    /// At a clean exit with every upload ended, nothing is left to note.
    fn drop(&mut self) {
        if self.open.load(Ordering::Relaxed) == 0 {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{nanos:08x}")
}

/// The uploads a journal lists without an end (key and id), if it is of `bucket`.
fn unended(text: &str, bucket: &str) -> Option<Vec<(String, UploadId)>> {
    let mut lines = text.lines();
    if lines.next()?.strip_prefix(HEADER)?.trim_start() != bucket {
        return None;
    }
    let mut open = BTreeMap::new();
    for line in lines {
        let mut fields = line.splitn(3, '\t');
        match (fields.next(), fields.next(), fields.next()) {
            (Some("start"), Some(id), Some(key)) => {
                open.insert(id.to_owned(), unescape(key));
            }
            (Some("end"), Some(id), None) => {
                open.remove(id);
            }
            // A line cut short by a kill: its upload, if it started, was never used.
            _ => {}
        }
    }
    Some(open.into_iter().map(|(id, key)| (key, UploadId(id))).collect())
}

/// Aborts the uploads that daemons now gone left behind for `bucket`, and removes their journals.
/// Returns how many were aborted.
pub async fn abort_left_behind<S: ObjectStore>(store: &S, dir: &Path, bucket: &str) -> usize {
    let prefix = file_prefix(bucket);
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut aborted = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(&prefix) || !name.ends_with(".log") {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else { continue };
        match try_lock(&file) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::debug!("locking {}: {e}", path.display());
                continue;
            }
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let Some(uploads) = unended(&text, bucket) else { continue };
        let mut all_ended = true;
        for (key, upload) in uploads {
            match store.abort_upload(&key, &upload).await {
                Ok(()) | Err(StoreError::NotFound) => {
                    tracing::info!(%key, "aborted an upload a stopped fetchfs left unfinished");
                    aborted += 1;
                }
                Err(e) => {
                    all_ended = false;
                    tracing::warn!(%key, "aborting an upload a stopped fetchfs left unfinished: {e}; the next mount tries again");
                }
            }
        }
        if all_ended {
            let _ = std::fs::remove_file(&path);
        }
    }
    aborted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_lists_what_started_and_did_not_end() {
        let text = "fetchfs uploads of http://h:1/b\nstart\tu1\ta\nstart\tu2\tdir/b%0Ac%25\nend\tu1\nstart\tu3";
        let open = unended(text, "http://h:1/b").unwrap();
        assert_eq!(open, vec![("dir/b\nc%".to_owned(), UploadId("u2".into()))]);
        assert_eq!(unended(text, "http://h:1/other"), None, "another bucket's journal is not touched");
    }

    #[test]
    fn keys_survive_escaping() {
        for key in ["plain", "100%", "a\nb", "%0A", "x\r\n%25y"] {
            assert_eq!(unescape(&escape(key)), key);
        }
    }

    #[tokio::test]
    async fn a_dead_daemons_uploads_are_aborted_and_a_live_ones_are_not() {
        use crate::store::memory::MemoryStore;
        let dir = std::env::temp_dir().join(format!("fetchfs-journal-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = MemoryStore::new();
        let bucket = "http://127.0.0.1:1/b";
        let live = Journal::create(&dir, bucket).unwrap();
        let live_upload = store.create_upload("live").await.unwrap();
        live.started("live", &live_upload);
        // A daemon killed mid-upload: its journal stays, unlocked.
        let dead_upload = store.create_upload("dead").await.unwrap();
        let dead_path = dir.join(format!("{}1-0.log", file_prefix(bucket)));
        std::fs::write(&dead_path, format!("{HEADER} {bucket}\nstart\t{}\tdead\n", dead_upload.0)).unwrap();
        assert_eq!(store.uploads_in_progress(), 2);
        let aborted = abort_left_behind(&store, &dir, bucket).await;
        assert_eq!((aborted, store.uploads_in_progress()), (1, 1), "only the dead daemon's upload");
        assert!(!dead_path.exists(), "its journal is gone");
        assert!(live.path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
