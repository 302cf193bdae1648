//! The thin FUSE adapter: decodes each kernel request, runs the filesystem logic (on the tokio
//! runtime when it may touch the network, in a task that owns the reply), and answers with data or
//! an errno. Nothing here decides anything about S3.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Waker};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use crate::errno::FsError;
use crate::fs::control::groups_of_process;
use crate::fs::{Access, Attr, AttrChange, Fs, Kind, Listing, User};
use crate::store::ObjectStore;

mod forgetting;
mod session;

use forgetting::{forget_name, forget_replaced};
pub use session::mount;
use session::{KERNEL_READAHEAD, negotiate_passthrough};

/// Largest read the kernel is asked to send at once.
const MAX_READ: u32 = 1024 * 1024;
fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: if a.kind == Kind::Directory { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: MAX_READ,
        flags: 0,
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Directory => FileType::Directory,
        Kind::File => FileType::RegularFile,
    }
}

/// Directory listings taken at `opendir`-time offsets: the kernel pages through one snapshot.
#[derive(Default)]
struct DirHandles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Listing>>>,
}

impl DirHandles {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Listing>>> {
        crate::sync::lock(&self.open)
    }
}

/// How an open inode's files are read. Decided at the inode's first open and kept until its last
/// release: the kernel refuses to mix passthrough and cached opens of one inode, and the backing
/// file must stay registered while any of them is open.
enum Serving {
    /// The kernel reads the disk cache's file itself.
    Passthrough(fuser::BackingId),
    /// Reads come to the daemon.
    Daemon,
}

struct OpenInode {
    serving: Serving,
    opens: u64,
}

pub struct FuseAdapter<S> {
    fs: Arc<Fs<S>>,
    /// Inodes with files open, and how they are served.
    open_inodes: Mutex<HashMap<u64, OpenInode>>,
    /// Whether the kernel agreed to passthrough at `init`.
    passthrough: bool,
    runtime: Handle,
    dirs: Arc<DirHandles>,
    /// How long the kernel may keep names and attributes, and names found missing.
    ttl: Duration,
    negative_ttl: Duration,
    /// Tells the kernel to forget names whose object changed; set once the session exists.
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

impl<S: ObjectStore> FuseAdapter<S> {
    pub fn new(fs: Arc<Fs<S>>, runtime: Handle) -> Self {
        let ttl = fs.options().metadata_ttl;
        let negative_ttl = fs.options().negative_metadata_ttl;
        Self {
            fs,
            open_inodes: Mutex::default(),
            passthrough: false,
            runtime,
            dirs: Arc::default(),
            ttl,
            negative_ttl,
            notifier: Arc::default(),
        }
    }
}

/// A lookup answer that says "no such name" and lets the kernel keep saying it for `ttl`.
fn reply_missing(reply: ReplyEntry, ttl: Duration) {
    if ttl.is_zero() {
        return reply.error(Errno::ENOENT);
    }
    let none = Attr { ino: 0, kind: Kind::File, size: 0, mtime: SystemTime::UNIX_EPOCH, perm: 0, uid: 0, gid: 0 };
    reply.entry_with_ttls(&Duration::ZERO, &ttl, &file_attr(&none), Generation(0));
}

fn name_str(name: &OsStr) -> Option<&str> {
    name.to_str()
}

impl<S: ObjectStore> Filesystem for FuseAdapter<S> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // The kernel caps these at its own limits; a refusal keeps its value, which still works.
        let _ = config.set_max_readahead(KERNEL_READAHEAD);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        // Listings carry every entry's attributes, so `ls -l` and `find` need no LOOKUP per name;
        // the kernel picks READDIRPLUS when lookups follow a listing, plain READDIR otherwise.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO)
        {
            tracing::debug!("the kernel does not offer {missing:?}; listings are followed by lookups");
        }
        // Without it the kernel holds a directory's lock through each lookup in it, so workers
        // opening names from a file list wait one round trip each, one after another.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS) {
            tracing::warn!("the kernel does not offer {missing:?}; lookups in one directory run one at a time");
        }
        if self.fs.has_disk_cache() {
            self.passthrough = negotiate_passthrough(config);
        }
        // `open(O_TRUNC)` arrives as one OPEN with the flag, not an OPEN then a SETATTR of size 0:
        // replacing an object whole is one decision.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            tracing::warn!("the kernel does not offer {missing:?}; O_TRUNC opens are refused");
        }
        // Never FUSE_WRITEBACK_CACHE: the kernel would then keep its own idea of file sizes and
        // times, and it rules out passthrough.
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name_str(name).map(str::to_owned) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let (fs, ttl, negative_ttl) = (Arc::clone(&self.fs), self.ttl, self.negative_ttl);
        // A name a listing gave is answered on this thread, without a hop to the runtime.
        self.run_here_if_ready(async move {
            match fs.lookup(parent.0, &name).await {
                Ok(attr) => reply.entry(&ttl, &file_attr(&attr), Generation(0)),
                Err(FsError::NotFound) => {
                    fs.metrics().error(FsError::NotFound.errno_name());
                    reply_missing(reply, negative_ttl)
                }
                Err(e) => reply.error(failed(&fs, "lookup", &name, &e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.ttl, &file_attr(&attr)),
            Err(e) => reply.error(failed(&self.fs, "getattr", &format_args!("inode {}", ino.0), &e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let access = Access::of_flags(flags.0);
        let write = access != Access::Read;
        let opener = if write { process_of(req.pid()) } else { None };
        let in_passthrough = |inodes: &HashMap<u64, OpenInode>| {
            inodes.get(&ino.0).is_some_and(|open| matches!(open.serving, Serving::Passthrough(_)))
        };
        if write && in_passthrough(&self.lock_open_inodes()) {
            return reply.error(failed(
                &self.fs,
                "open for writing",
                &format_args!("inode {}", ino.0),
                &FsError::TextBusy,
            ));
        }
        if let Some(control) =
            self.fs.open_control(ino.0, User { uid: req.uid(), gid: req.gid() }, || groups_of_process(req.pid()))
        {
            return match control {
                // Its reads show the state now, and its writes are lines: no page cache.
                Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::FOPEN_DIRECT_IO),
                Err(e) => reply.error(failed(&self.fs, "open", &format_args!("inode {}", ino.0), &e)),
            };
        }
        // Opening may start fetching the files that come next, on the runtime.
        let _runtime = self.runtime.enter();
        let opened = match self.fs.open(ino.0, access, opener) {
            Ok(opened) => opened,
            Err(e) => return reply.error(failed(&self.fs, "open", &format_args!("inode {}", ino.0), &e)),
        };
        let mut inodes = self.lock_open_inodes();
        if opened.writing {
            inodes.entry(ino.0).or_insert(OpenInode { serving: Serving::Daemon, opens: 0 }).opens += 1;
            // The writer's handle bypasses the page cache: its bytes go to the upload only.
            return reply.opened(FileHandle(opened.handle), FopenFlags::FOPEN_DIRECT_IO);
        }
        let open = inodes.entry(ino.0).or_insert_with(|| {
            let backing = match &opened.local_copy {
                Some(file) if self.passthrough => match reply.open_backing(file) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        tracing::warn!("passthrough of inode {}: {e}; the daemon serves it from disk", ino.0);
                        None
                    }
                },
                _ => None,
            };
            OpenInode { serving: backing.map_or(Serving::Daemon, Serving::Passthrough), opens: 0 }
        });
        open.opens += 1;
        // A reader's close has nothing to finish: the kernel is told not to send its FLUSH (a
        // round trip per file in a `cat` of many small files).
        match &open.serving {
            Serving::Passthrough(id) => {
                self.fs.metrics().disk.passthrough_opens.inc();
                reply.opened_passthrough(FileHandle(opened.handle), FopenFlags::FOPEN_NOFLUSH, id);
            }
            // An inode stands for one object version, so its cached pages stay valid across opens.
            Serving::Daemon => {
                reply.opened(FileHandle(opened.handle), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH)
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        tracing::trace!(ino = ino.0, fh = fh.0, offset, size, "READ");
        let (fs, notifier) = (Arc::clone(&self.fs), Arc::clone(&self.notifier));
        self.run_here_if_ready(async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    reply.error(failed(&fs, "read", &format_args!("handle {} at {offset}", fh.0), &e));
                    if e == FsError::Stale {
                        forget_name(&fs, &notifier, ino);
                    }
                }
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Releasing may start completing the file on disk, on the runtime.
        let _runtime = self.runtime.enter();
        if let Some(unfinished) = self.fs.release(fh.0) {
            let (fs, notifier) = (Arc::clone(&self.fs), Arc::clone(&self.notifier));
            self.runtime.spawn(async move {
                let finished = fs.finish_released(unfinished).await;
                forget_replaced(&fs, &notifier, finished).await;
            });
        }
        let mut inodes = self.lock_open_inodes();
        if let Some(open) = inodes.get_mut(&ino.0) {
            open.opens = open.opens.saturating_sub(1);
            if open.opens == 0 {
                // Dropping the backing id unregisters the file from the kernel.
                inodes.remove(&ino.0);
            }
        }
        drop(inodes);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.getattr(ino.0) {
            Ok(attr) if attr.kind == Kind::Directory => {
                let handle = self.dirs.next.fetch_add(1, Ordering::Relaxed) + 1;
                reply.opened(FileHandle(handle), FopenFlags::empty());
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(failed(&self.fs, "opendir", &format_args!("inode {}", ino.0), &e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let snapshot = self.dirs.lock().get(&fh.0).cloned();
        let (fs, dirs) = (Arc::clone(&self.fs), Arc::clone(&self.dirs));
        self.runtime.spawn(async move {
            // The listing is taken when the kernel starts at offset 0 and reused for later pages.
            let entries = match snapshot {
                Some(entries) if offset > 0 => entries,
                _ => match fs.readdir(ino.0).await {
                    Ok(entries) => {
                        dirs.lock().insert(fh.0, Arc::clone(&entries));
                        entries
                    }
                    Err(e) => {
                        reply.error(failed(&fs, "readdir", &format_args!("inode {}", ino.0), &e));
                        return;
                    }
                },
            };
            // Offsets: 1 and 2 are `.` and `..`; entry i of the listing is i + 3. A large directory
            // is read in many calls, each starting where the last ended, so index rather than skip.
            let dots = [(ino.0, "."), (ino.0, "..")];
            let listed = entries.entries();
            let offset = offset as usize;
            let dots =
                dots.iter().enumerate().skip(offset).map(|(i, &(ino, name))| (i, ino, FileType::Directory, name));
            let rest = listed.iter().enumerate().skip(offset.saturating_sub(2));
            let rest = rest.map(|(i, (name, ino, entry))| (i + 2, *ino, file_type(entry.kind()), name.as_str()));
            for (i, child, kind, name) in dots.chain(rest) {
                if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let snapshot = self.dirs.lock().get(&fh.0).cloned();
        let (fs, dirs, ttl) = (Arc::clone(&self.fs), Arc::clone(&self.dirs), self.ttl);
        self.runtime.spawn(async move {
            let listing = match snapshot {
                Some(listing) if offset > 0 => listing,
                _ => match fs.readdir(ino.0).await {
                    Ok(listing) => {
                        dirs.lock().insert(fh.0, Arc::clone(&listing));
                        listing
                    }
                    Err(e) => return reply.error(failed(&fs, "readdirplus", &format_args!("inode {}", ino.0), &e)),
                },
            };
            let dir_attr = match fs.getattr(ino.0) {
                Ok(attr) => file_attr(&attr),
                Err(e) => return reply.error(failed(&fs, "readdirplus", &format_args!("inode {}", ino.0), &e)),
            };
            // Offsets as in readdir. The kernel takes no reference for `.` and `..`.
            let offset = offset as usize;
            for (i, name) in [".", ".."].iter().enumerate().skip(offset) {
                if reply.add(ino, i as u64 + 1, name, &ttl, &dir_attr, Generation(0)) {
                    return reply.ok();
                }
            }
            for (i, (name, child, entry)) in listing.entries().iter().enumerate().skip(offset.saturating_sub(2)) {
                let attr = fs.listed_entry(ino.0, name, *child, entry);
                if reply.add(INodeNo(attr.ino), i as u64 + 3, name, &ttl, &file_attr(&attr), Generation(0)) {
                    // Did not fit: the kernel never saw it, so it holds no reference to give back.
                    fs.forget(attr.ino, 1);
                    break;
                }
            }
            reply.ok();
        });
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.dirs.lock().remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A bucket has no fixed size: report a large, empty-looking filesystem so tools that check
        // free space do not refuse to read.
        const BLOCKS: u64 = 1 << 40;
        reply.statfs(BLOCKS, BLOCKS, BLOCKS, 1 << 30, 1 << 30, 4096, 255, 4096);
    }

    // The write path: new files, written front to back, become uploads (see `fs`); what S3 cannot
    // do (rename, links, device nodes) is refused with an errno that says so.

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let metadata = mode.is_some() || uid.is_some() || gid.is_some() || atime.is_some() || mtime.is_some();
        match self.fs.setattr(ino.0, AttrChange { metadata, size }) {
            Ok(attr) => reply.attr(&self.ttl, &file_attr(&attr)),
            Err(e) => reply.error(failed(&self.fs, "setattr", &format_args!("inode {}", ino.0), &e)),
        }
    }

    fn mknod(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _r: u32, reply: ReplyEntry) {
        reply.error(self.unsupported("mknod", "device nodes and fifos cannot be objects"));
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        let Some(name) = name_str(name).map(str::to_owned) else { return reply.error(Errno::EINVAL) };
        let (fs, ttl) = (Arc::clone(&self.fs), self.ttl);
        self.runtime.spawn(async move {
            match fs.mkdir(parent.0, &name).await {
                Ok(attr) => reply.entry(&ttl, &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(failed(&fs, "mkdir", &name, &e)),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name_str(name).map(str::to_owned) else { return reply.error(Errno::ENOENT) };
        let fs = Arc::clone(&self.fs);
        self.runtime.spawn(async move {
            match fs.unlink(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(&fs, "unlink", &name, &e)),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name_str(name).map(str::to_owned) else { return reply.error(Errno::ENOENT) };
        let fs = Arc::clone(&self.fs);
        self.runtime.spawn(async move {
            match fs.rmdir(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(&fs, "rmdir", &name, &e)),
            }
        });
    }

    fn symlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, _target: &Path, reply: ReplyEntry) {
        reply.error(self.unsupported("symlink", "S3 has no links"));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(name), Some(new_name)) = (name_str(name).map(str::to_owned), name_str(newname).map(str::to_owned))
        else {
            return reply.error(Errno::ENOENT);
        };
        let flags = crate::fs::RenameFlags {
            no_replace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
        };
        let fs = Arc::clone(&self.fs);
        self.runtime.spawn(async move {
            match fs.rename(parent.0, &name, newparent.0, &new_name, flags).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(&fs, "rename", &name, &e)),
            }
        });
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(self.unsupported("link", "S3 has no links"));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(name) = name_str(name).map(str::to_owned) else { return reply.error(Errno::EINVAL) };
        let (fs, ttl, opener) = (Arc::clone(&self.fs), self.ttl, process_of(req.pid()));
        self.runtime.spawn(async move {
            match fs.create(parent.0, &name, opener).await {
                Ok((attr, handle)) => reply.created(
                    &ttl,
                    &file_attr(&attr),
                    Generation(0),
                    FileHandle(handle),
                    FopenFlags::FOPEN_DIRECT_IO,
                ),
                Err(e) => reply.error(failed(&fs, "create", &name, &e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (fs, data) = (Arc::clone(&self.fs), data.to_vec());
        self.runtime.spawn(async move {
            match fs.write(fh.0, offset, &data).await {
                Ok(written) => reply.written(written),
                Err(e) => reply.error(failed(&fs, "write", &format_args!("handle {} at {offset}", fh.0), &e)),
            }
        });
    }

    fn flush(&self, req: &Request, _ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // Only a file being written cares who closes it: reads' closes skip the lookup in /proc.
        let process = if self.fs.is_writer(fh.0) { process_of(req.pid()) } else { None };
        let (fs, notifier) = (Arc::clone(&self.fs), Arc::clone(&self.notifier));
        // Sent for writers and control files (readers are opened without FLUSH); a control file's
        // close has nothing to wait for and is answered here.
        self.run_here_if_ready(async move {
            match fs.flush(fh.0, process).await {
                Ok(finished) => {
                    forget_replaced(&fs, &notifier, finished).await;
                    reply.ok();
                }
                Err(e) => reply.error(failed(&fs, "close", &format_args!("handle {}", fh.0), &e)),
            }
        });
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let (fs, notifier) = (Arc::clone(&self.fs), Arc::clone(&self.notifier));
        self.runtime.spawn(async move {
            match fs.fsync(fh.0).await {
                Ok(finished) => {
                    forget_replaced(&fs, &notifier, finished).await;
                    reply.ok();
                }
                Err(e) => reply.error(failed(&fs, "fsync", &format_args!("handle {}", fh.0), &e)),
            }
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.fs.allocate(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(failed(&self.fs, "fallocate", &format_args!("inode {}", ino.0), &e)),
        }
    }
}

impl<S: ObjectStore> FuseAdapter<S> {
    /// Runs `work` on this thread as far as it goes without waiting, and on the runtime from
    /// there: a read of blocks already fetched (most of a sequential reader's) is answered at once,
    /// not after a hop to a runtime thread (measured: 90-200 us per READ, a third of its time).
    fn run_here_if_ready(&self, work: impl Future<Output = ()> + Send + 'static) {
        let _runtime = self.runtime.enter();
        let mut work = Box::pin(work);
        // A future polled again with another waker replaces the one it registered: the runtime's
        // poll takes over from this one.
        if work.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending() {
            self.runtime.spawn(work);
        }
    }

    fn lock_open_inodes(&self) -> MutexGuard<'_, HashMap<u64, OpenInode>> {
        crate::sync::lock(&self.open_inodes)
    }

    /// What S3 cannot hold: EROFS on a read-only mount, else EPERM, with the reason logged.
    fn unsupported(&self, op: &str, why: &'static str) -> Errno {
        if !self.fs.writable() {
            return Errno::EROFS;
        }
        failed(&self.fs, op, &"", &FsError::NotPermitted(why))
    }
}

/// A failure the reader will see as the returned errno; the operator sees why in the log, and it
/// is counted. A missing name is routine (shells probe for files), so it is logged at debug level.
fn failed<S: ObjectStore>(fs: &Fs<S>, op: &str, what: &dyn std::fmt::Display, e: &FsError) -> Errno {
    fs.metrics().error(e.errno_name());
    match e {
        FsError::NotFound => tracing::debug!("{op} {what}: {e}"),
        _ => tracing::warn!("{op} {what}: {e}"),
    }
    errno(e)
}

/// The process of the thread that sent a request (FUSE names the thread): what a `close` is
/// compared by, since a program may open a file in one thread and close it in another.
fn process_of(thread: u32) -> Option<u32> {
    if thread == 0 {
        // Outside the daemon's pid namespace.
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{thread}/status")).ok();
    let group =
        status.and_then(|s| s.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok()));
    Some(group.unwrap_or(thread))
}
