//! Opening versions on a few threads of the disk's own, with a deadline: an `open` on the kernel's
//! thread must not hang on a stalled disk (a frozen or failing filesystem blocks creating files).
//! Past the deadline the caller goes on without the disk, and the disk is left alone for a while.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, Weak};

use super::{DiskCache, VersionFile};
use crate::object_id::ObjectId;

/// Threads opening versions; a stalled disk holds at most these.
const THREADS: usize = 4;

type Answer = SyncSender<Option<Arc<VersionFile>>>;

struct Job {
    object: ObjectId,
    size: u64,
    answer: Answer,
}

pub struct Opener {
    jobs: SyncSender<Job>,
}

impl Opener {
    /// Starts the threads, which end with the cache.
    pub fn start(cache: Weak<DiskCache>) -> std::io::Result<Self> {
        let (jobs, queue) = sync_channel::<Job>(64);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..THREADS {
            let (cache, queue) = (cache.clone(), Arc::clone(&queue));
            std::thread::Builder::new().name(format!("fetchfs-disk-open-{n}")).spawn(move || serve(&cache, &queue))?;
        }
        Ok(Self { jobs })
    }

    /// Asks for the version; the answer comes on the returned channel.
    pub fn ask(&self, object: &ObjectId, size: u64) -> Option<Receiver<Option<Arc<VersionFile>>>> {
        let (answer, answered) = sync_channel(1);
        self.jobs.try_send(Job { object: object.clone(), size, answer }).ok()?;
        Some(answered)
    }
}

fn serve(cache: &Weak<DiskCache>, queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let queue = crate::sync::lock(queue);
            queue.recv()
        };
        let Ok(job) = job else { return };
        let Some(cache) = cache.upgrade() else { return };
        let _ = job.answer.send(cache.open_version(&job.object, job.size));
    }
}
