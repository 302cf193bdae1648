//! The thread that seals blocks and sends them up to the shared cache, at a low CPU priority: a
//! fill is behind the reader, and gets the CPU the node's readers leave idle before theirs. On two
//! cores, sealing and sending (and a cache server on the same cores receiving) made a first node
//! read a 1 GiB object at 0.7-0.8 of a node without a cache. When the readers leave no CPU at all,
//! the fill queue fills up and blocks are dropped, as the queue promises. What the sends make
//! others do is not at this priority: for that, fills also wait out contended CPUs (`pressure`).

use std::future::Future;

/// Nice value of the filling thread: a tenth of a normal thread's share of a busy core (CFS
/// weights), not the lowest (19, a sixty-fourth), under which a node busy with its own work (a
/// training job's preprocessing) would fill nothing at all.
const FILL_PRIORITY: libc::c_int = 10;

/// Runs `fills` to its end on a thread of its own, with a runtime of its own (its connections'
/// I/O is driven there too, at its priority).
pub fn start(fills: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("fetchfs-fill".into()).spawn(move || {
        // SAFETY: gettid and setpriority only read and change this thread's scheduling.
        let lowered = unsafe {
            let thread = libc::gettid() as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, thread, FILL_PRIORITY)
        };
        if lowered != 0 {
            tracing::debug!("shared cache: the filling thread keeps its priority: {}", std::io::Error::last_os_error());
        }
        runtime.block_on(fills);
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nice values of this process's threads named `name`.
    fn nice_of_threads(name: &str) -> Vec<i64> {
        let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
        tasks
            .flatten()
            .filter(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == name))
            .filter_map(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
                // Field 19 (nice), the 17th after the command name's closing parenthesis.
                stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()
            })
            .collect()
    }

    #[test]
    fn fills_run_on_a_thread_of_lower_priority_than_the_readers() {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        start(async move {
            let _ = stopped.await;
        })
        .expect("the filling thread starts");
        let mut nice = Vec::new();
        for _ in 0..100 {
            nice = nice_of_threads("fetchfs-fill");
            if nice.contains(&i64::from(FILL_PRIORITY)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = stop.send(());
        assert!(nice.contains(&i64::from(FILL_PRIORITY)), "nice values of the filling threads: {nice:?}");
    }
}
