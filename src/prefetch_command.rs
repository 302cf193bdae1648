//! `fetchfs prefetch`: the client of a mount's `.fetchfs/prefetch`. It finds the mount the paths
//! are in, expands directories (recursively, in name order), writes the files to the control file
//! relative to the mount's root, and with `--wait` follows the queue's state until they are
//! fetched, or until the cache's window is full (the rest then come as the job reads).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::PrefetchArgs;

/// The control file, under a mount's root.
const CONTROL: &str = ".fetchfs/prefetch";
const CONTROL_DIR: &str = ".fetchfs";
/// How often `--wait` reads the queue's state.
const POLL: Duration = Duration::from_millis(100);

pub fn run(args: &PrefetchArgs) -> Result<(), String> {
    let cwd = std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?;
    let listed = match &args.from {
        Some(from) => read_list(from)?,
        None => Vec::new(),
    };
    // The mount is the one the paths are in, wherever the command runs from.
    let first = match (args.paths.first(), listed.first()) {
        (Some(path), _) => cwd.join(path),
        (None, Some(path)) => cwd.join(path).parent().map_or_else(|| cwd.clone(), Path::to_path_buf),
        (None, None) if args.from.is_some() => return Err("the list names no files".into()),
        (None, None) => return Err("name files or directories to prefetch, or --from FILE".into()),
    };
    let root = mount_root(&first)?;
    let mut files = Files { root: root.clone(), parents: HashMap::new(), relative: Vec::new() };
    for path in &args.paths {
        files.add_path(&cwd.join(path))?;
    }
    for path in &listed {
        files.add_listed(&cwd.join(path))?;
    }
    if files.relative.is_empty() {
        return Err("no files to prefetch".into());
    }
    let before = state(&root)?;
    write_order(&root, &files.relative)?;
    let queued = files.relative.len() as u64;
    if !args.wait {
        println!("queued {queued} files in the mount at {}", root.display());
        return Ok(());
    }
    wait(&root, &before, queued)
}

/// The paths a list names, one a line (`-`: standard input), empty lines skipped.
fn read_list(list: &Path) -> Result<Vec<PathBuf>, String> {
    let reader: Box<dyn BufRead> = if list == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(list).map_err(|e| format!("{}: {e}", list.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut paths = Vec::new();
    for line in reader.split(b'\n') {
        let line = line.map_err(|e| format!("reading {}: {e}", list.display()))?;
        if !line.is_empty() {
            paths.push(PathBuf::from(std::ffi::OsStr::from_bytes(&line)));
        }
    }
    Ok(paths)
}

/// The root of the fetchfs mount holding `path`: the nearest directory above it with a control
/// file.
fn mount_root(path: &Path) -> Result<PathBuf, String> {
    let start = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    start
        .ancestors()
        .find(|dir| dir.join(CONTROL).is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} is not in a fetchfs mount (no {CONTROL} above it)", path.display()))
}

/// The files to queue, relative to the mount's root.
struct Files {
    root: PathBuf,
    /// Directories already resolved to their place under the root (`None`: outside it).
    parents: HashMap<PathBuf, Option<PathBuf>>,
    relative: Vec<PathBuf>,
}

impl Files {
    fn outside(&self, path: &Path) -> String {
        format!("{} is not in the fetchfs mount at {}", path.display(), self.root.display())
    }

    /// A file, or every file under a directory.
    fn add_path(&mut self, path: &Path) -> Result<(), String> {
        let canonical = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let inside = canonical.strip_prefix(&self.root).map_err(|_| self.outside(path))?.to_path_buf();
        if canonical.is_dir() {
            self.add_tree(&canonical, &inside)
        } else {
            self.relative.push(inside);
            Ok(())
        }
    }

    fn add_tree(&mut self, dir: &Path, inside: &Path) -> Result<(), String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
        let mut entries: Vec<_> = entries
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("listing {}: {e}", dir.display()))?
            .into_iter()
            .map(|entry| entry.file_name())
            .filter(|name| !(inside.as_os_str().is_empty() && name == CONTROL_DIR))
            .collect();
        entries.sort();
        for name in entries {
            let (path, relative) = (dir.join(&name), inside.join(&name));
            let kind = std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if kind.is_dir() {
                self.add_tree(&path, &relative)?;
            } else {
                self.relative.push(relative);
            }
        }
        Ok(())
    }

    /// The files listed in `list` (or standard input), relative to `cwd` unless absolute. Each
    /// directory holding them is resolved once (a dataset's files share few).
    /// A file named in a list: queued as named (a file not there yet is the mount's to count).
    fn add_listed(&mut self, path: &Path) -> Result<(), String> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(self.outside(path));
        };
        let place = match self.parents.get(parent) {
            Some(place) => place.clone(),
            None => {
                let place = std::fs::canonicalize(parent)
                    .ok()
                    .and_then(|dir| dir.strip_prefix(&self.root).ok().map(Path::to_path_buf));
                self.parents.insert(parent.to_path_buf(), place.clone());
                place
            }
        };
        let Some(place) = place else { return Err(self.outside(path)) };
        self.relative.push(place.join(name));
        Ok(())
    }
}

/// Writes the files, one a line, to the mount's control file.
fn write_order(root: &Path, files: &[PathBuf]) -> Result<(), String> {
    let control = root.join(CONTROL);
    let failed = |e: std::io::Error| format!("writing to {}: {e}", control.display());
    let file = std::fs::OpenOptions::new().append(true).open(&control).map_err(failed)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    for file in files {
        out.write_all(file.as_os_str().as_bytes()).map_err(failed)?;
        out.write_all(b"\n").map_err(failed)?;
    }
    out.flush().map_err(failed)
}

/// The queue's state: one `name value` a line.
fn state(root: &Path) -> Result<HashMap<String, u64>, String> {
    let control = root.join(CONTROL);
    let text = std::fs::read_to_string(&control).map_err(|e| format!("reading {}: {e}", control.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
        .collect())
}

fn value(state: &HashMap<String, u64>, name: &str) -> u64 {
    state.get(name).copied().unwrap_or(0)
}

/// What `--wait` saw: `ready` files, `cached` of them held already, `bytes` fetched for the
/// others in `seconds`. A rate is given only of what was fetched: files held already cost nothing.
fn ready_line(ready: u64, cached: u64, bytes: u64, seconds: f64) -> String {
    let fetched = ready - cached.min(ready);
    let files = |n: u64| if n == 1 { "1 file".to_owned() } else { format!("{n} files") };
    let mut line = format!("{} ready in {seconds:.1} s", files(ready));
    if fetched > 0 {
        let _ = write!(
            line,
            ": fetched {fetched} ({}) at {:.0} files/s, {}",
            amount(bytes),
            fetched as f64 / seconds,
            rate(bytes as f64 / seconds)
        );
    }
    if cached > 0 {
        let _ = write!(line, "{}{cached} held already", if fetched > 0 { ", " } else { ": " });
    }
    line
}

/// Bytes in the unit that shows them: KiB under a MiB.
fn amount(bytes: u64) -> String {
    if bytes < 1 << 20 { format!("{} KiB", bytes.div_ceil(1024)) } else { format!("{} MiB", bytes >> 20) }
}

/// Bytes a second: kB/s under a MB/s, a decimal under 10 MB/s.
fn rate(per_second: f64) -> String {
    let mb = per_second / 1e6;
    match mb {
        _ if mb < 1.0 => format!("{:.0} kB/s", per_second / 1e3),
        _ if mb < 10.0 => format!("{mb:.1} MB/s"),
        _ => format!("{mb:.0} MB/s"),
    }
}

/// Follows the queue until it has nothing left to fetch, or waits for reads to make room.
fn wait(root: &Path, before: &HashMap<String, u64>, queued: u64) -> Result<(), String> {
    let since = |now: &HashMap<String, u64>, name: &str| value(now, name).saturating_sub(value(before, name));
    let settled = |now: &HashMap<String, u64>| {
        ["fetched", "bad", "failed", "missed", "skipped"].iter().map(|name| since(now, name)).sum::<u64>()
    };
    let progress = ProgressBar::new(queued);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} files {msg} ({elapsed})")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let now = loop {
        let now = state(root)?;
        let bytes = since(&now, "fetched_bytes");
        let seconds = started.elapsed().as_secs_f64().max(1e-3);
        progress.set_position(settled(&now).min(queued));
        progress.set_message(format!("{}, {}", amount(bytes), rate(bytes as f64 / seconds)));
        let idle = value(&now, "in_flight") == 0;
        if idle && (value(&now, "pending") == 0 || value(&now, "waiting_for_reads") == 1) {
            break now;
        }
        std::thread::sleep(POLL);
    };
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64().max(1e-3);
    let (ready, bytes, bad) = (since(&now, "fetched"), since(&now, "fetched_bytes"), since(&now, "bad"));
    let cached = since(&now, "cached");
    println!(
        "{}{}",
        ready_line(ready, cached, bytes, seconds),
        if bad > 0 { format!("; {bad} named no file (see the mount's log)") } else { String::new() }
    );
    if value(&now, "pending") > 0 {
        println!(
            "the cache's window ({} MiB) is full: the other {} files are fetched as these are read",
            value(&now, "window_limit_bytes") >> 20,
            value(&now, "pending")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ready_line;

    #[test]
    fn a_rate_is_given_only_of_what_was_fetched() {
        assert_eq!(ready_line(1000, 1000, 0, 0.05), "1000 files ready in 0.1 s: 1000 held already");
        assert_eq!(
            ready_line(10, 4, 6 << 20, 2.0),
            "10 files ready in 2.0 s: fetched 6 (6 MiB) at 3 files/s, 3.1 MB/s, 4 held already"
        );
        assert_eq!(ready_line(1, 0, 1 << 20, 1.0), "1 file ready in 1.0 s: fetched 1 (1 MiB) at 1 files/s, 1.0 MB/s");
        assert_eq!(
            ready_line(100, 0, 4500, 0.1),
            "100 files ready in 0.1 s: fetched 100 (5 KiB) at 1000 files/s, 45 kB/s"
        );
        assert_eq!(
            ready_line(1000, 0, 100 << 20, 2.0),
            "1000 files ready in 2.0 s: fetched 1000 (100 MiB) at 500 files/s, 52 MB/s"
        );
        assert_eq!(ready_line(0, 0, 0, 0.2), "0 files ready in 0.2 s");
    }
}
