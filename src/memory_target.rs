//! The memory the daemon aims to stay under, and where that figure came from: `--memory-target`,
//! else a share of the container's memory limit (cgroup v2 `memory.max`, or v1
//! `memory.limit_in_bytes`, the tightest on the way from this process's group up to the root),
//! else of the machine's memory. The memory budget (`--cache-size`) defaults to what fits under it.

use std::path::{Path, PathBuf};

const MIB: u64 = 1024 * 1024;

/// The share of a container's limit (or the machine's memory) the daemon aims for, in quarters:
/// the rest is the kernel's (page cache of the disk cache's files, socket buffers) and the
/// allocator's slack.
const QUARTERS: u64 = 3;
/// What an idle daemon takes besides its budget (runtime, threads, the SDK, the inode table):
/// 17 MiB measured at rest, rounded up.
pub const BASELINE: u64 = 32 * MIB;

/// Where the memory target came from, as the startup line says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Container { limit: u64 },
    Machine { memory: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryTarget {
    pub bytes: u64,
    pub source: Source,
}

impl MemoryTarget {
    /// From `--memory-target` (bytes) when given, else from the container's limit, else from the
    /// machine's `memory`.
    pub fn choose(flag: Option<u64>, memory: u64) -> Self {
        if let Some(bytes) = flag {
            return Self { bytes, source: Source::Flag };
        }
        match container_limit(Path::new("/proc/self/cgroup"), Path::new("/sys/fs/cgroup")) {
            Some(limit) if limit < memory => Self { bytes: limit / 4 * QUARTERS, source: Source::Container { limit } },
            _ => Self { bytes: memory / 4 * QUARTERS, source: Source::Machine { memory } },
        }
    }

    /// The budget that fits under the target beside the daemon's baseline, at most `default`.
    pub fn budget(&self, default: u64) -> u64 {
        self.bytes.saturating_sub(BASELINE).min(default)
    }

    /// Why the budget is what it is, for the startup line.
    pub fn said(&self) -> String {
        match self.source {
            Source::Flag => format!("--memory-target {} MiB", self.bytes / MIB),
            Source::Container { limit } => format!("the container's memory limit of {} MiB", limit / MIB),
            Source::Machine { memory } => format!("the machine's {} MiB", memory / MIB),
        }
    }
}

/// The least budget a mount runs with: four parts of reads, and on a mount that writes, two
/// parts of 8 MiB for the files being written (a quarter of the budget).
const READ_ONLY_FLOOR: u64 = 32 * MIB;
const FLOOR: u64 = 64 * MIB;

/// The memory budget (`--cache-size`) when the flag does not give it, and why, when the target
/// made it smaller than `default`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    pub chosen: Option<String>,
}

impl Budget {
    pub fn under(target: &MemoryTarget, default: u64, read_only: bool) -> Self {
        let floor = if read_only { READ_ONLY_FLOOR } else { FLOOR };
        let fits = target.budget(default);
        if fits >= default {
            Self { bytes: default, chosen: None }
        } else if fits >= floor {
            Self { bytes: fits, chosen: Some(format!("to fit {}", target.said())) }
        } else {
            let why =
                format!("the least fetchfs runs with: {} leaves less (raise it, or give --cache-size)", target.said());
            Self { bytes: floor, chosen: Some(why) }
        }
    }
}

/// The tightest memory limit on this process's control group and its ancestors, from the
/// `cgroup` file (`/proc/self/cgroup`) and the hierarchy mounted at `root`.
fn container_limit(cgroup: &Path, root: &Path) -> Option<u64> {
    let groups = std::fs::read_to_string(cgroup).ok()?;
    let (dirs, file) = limit_files(&groups, root)?;
    dirs.iter().filter_map(|dir| parse_limit(&std::fs::read_to_string(dir.join(file)).ok()?)).min()
}

/// The directories whose `file` holds a limit on this process's group: the memory controller's
/// (v1) or the unified hierarchy's (v2), from the group up to the root.
fn limit_files(groups: &str, root: &Path) -> Option<(Vec<PathBuf>, &'static str)> {
    // Lines of `ID:CONTROLLERS:PATH`.
    let entries: Vec<(&str, &str, &str)> = groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .collect();
    let v1 = entries.iter().find(|(_, controllers, _)| controllers.split(',').any(|c| c == "memory"));
    let (base, path, file) = match v1 {
        Some(&(_, _, path)) => (root.join("memory"), path, "memory.limit_in_bytes"),
        None => {
            let &(_, _, path) = entries.iter().find(|(id, controllers, _)| *id == "0" && controllers.is_empty())?;
            // The unified hierarchy is at the root on v2-only hosts, or beside v1 as `unified`.
            let base = if root.join("cgroup.controllers").exists() { root.to_path_buf() } else { root.join("unified") };
            (base, path, "memory.max")
        }
    };
    let mut dirs = Vec::new();
    let mut at = Some(Path::new(path));
    while let Some(dir) = at {
        dirs.push(base.join(dir.strip_prefix("/").unwrap_or(dir)));
        at = dir.parent();
    }
    Some((dirs, file))
}

/// A limit file's value: `max` (v2) or a figure near `i64::MAX` (v1's "no limit") is none.
fn parse_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < u64::MAX / 4).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fetchfs-memory-target-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("directories");
        std::fs::write(path, text).expect("written");
    }

    #[test]
    fn a_v1_limit_is_the_tightest_from_the_group_up() {
        let dir = scratch("v1");
        let root = dir.join("sys");
        write(&dir.join("cgroup"), "5:cpu:/\n4:memory:/pods/job\n0::/\n");
        write(&root.join("memory/memory.limit_in_bytes"), "9223372036854771712\n");
        write(&root.join("memory/pods/memory.limit_in_bytes"), "1073741824\n");
        write(&root.join("memory/pods/job/memory.limit_in_bytes"), "9223372036854771712\n");
        assert_eq!(container_limit(&dir.join("cgroup"), &root), Some(1 << 30), "the parent's limit binds");
        write(&root.join("memory/pods/job/memory.limit_in_bytes"), "134217728\n");
        assert_eq!(container_limit(&dir.join("cgroup"), &root), Some(128 << 20));
    }

    #[test]
    fn a_v2_limit_is_read_from_memory_max_and_max_is_none() {
        let dir = scratch("v2");
        let root = dir.join("sys");
        write(&dir.join("cgroup"), "0::/kubepods/pod1\n");
        write(&root.join("cgroup.controllers"), "cpu memory\n");
        write(&root.join("kubepods/pod1/memory.max"), "max\n");
        assert_eq!(container_limit(&dir.join("cgroup"), &root), None);
        write(&root.join("kubepods/memory.max"), "268435456\n");
        assert_eq!(container_limit(&dir.join("cgroup"), &root), Some(256 << 20));
    }

    #[test]
    fn the_budget_fits_under_the_target_and_never_exceeds_the_default() {
        let target = MemoryTarget { bytes: 96 * MIB, source: Source::Container { limit: 128 * MIB } };
        assert_eq!(target.budget(512 * MIB), 64 * MIB);
        assert_eq!(target.said(), "the container's memory limit of 128 MiB");
        let roomy = MemoryTarget { bytes: 18 << 30, source: Source::Machine { memory: 24 << 30 } };
        assert_eq!(roomy.budget(512 * MIB), 512 * MIB);
        assert_eq!(Budget::under(&roomy, 512 * MIB, false), Budget { bytes: 512 * MIB, chosen: None });
        let under = Budget::under(&target, 512 * MIB, false);
        assert_eq!(under.bytes, 64 * MIB);
        assert_eq!(under.chosen.as_deref(), Some("to fit the container's memory limit of 128 MiB"));
        let tight = MemoryTarget { bytes: 48 * MIB, source: Source::Flag };
        assert_eq!(Budget::under(&tight, 512 * MIB, false).bytes, FLOOR, "never below what a mount runs with");
        assert_eq!(Budget::under(&tight, 512 * MIB, true).bytes, READ_ONLY_FLOOR);
    }
}
