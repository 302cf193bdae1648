//! Panics: in the daemon a panic is a defect, never an answer. The hook says so where the
//! operator's logs go (`--log-file` included) and counts it; a task that others wait on runs
//! `guarded`, so a panic ends that one task, and whoever waits on it is told it failed, instead of
//! a queue or a mount waiting for it for ever. A request's task needs no guard: its reply, dropped
//! by the unwinding, answers the kernel with EIO.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;

/// What the log line of a panic begins with (the mount tests look for it in every mount's log).
pub const LOGGED: &str = "a thread panicked";

static PANICS: AtomicU64 = AtomicU64::new(0);

/// Logs every panic of the process, after the default hook has printed it.
pub fn install_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        let thread = std::thread::current();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            at,
            "{LOGGED} (a defect of fetchfs: what it was doing failed, the mount goes on): {payload}"
        );
        default(info);
    }));
}

/// Panics since the daemon began.
pub fn count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// Runs `task`; `None` if it panicked (the hook has logged it).
pub async fn guarded<F: Future>(task: F) -> Option<F::Output> {
    AssertUnwindSafe(task).catch_unwind().await.ok()
}
