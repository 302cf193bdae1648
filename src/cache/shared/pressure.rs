//! Whether the node's CPUs are contended, from the kernel's pressure stall information
//! (`/proc/pressure/cpu`): the share of the last window in which some runnable task waited for a
//! CPU. Fills wait while it is high: a low priority keeps the filling thread's own work behind the
//! readers', but not what its sends make others do (the kernel's receive path, a cache server on
//! the same cores), and on two cores that made a first node read at half its speed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a reading of the stall share holds.
const WINDOW: Duration = Duration::from_millis(100);
/// Above this share of a window with a task waiting for a CPU, fills wait. A node reading a far
/// bucket without a cache ran at 0.28-0.36; with fills sent as fast as they came, at 0.67-0.83.
/// Waiting above 0.4, a first node read at 0.75-0.93 of one without a cache; above 0.3, 0.90-0.99.
const CONTENDED: f64 = 0.3;
/// Longest a fill waits for the CPUs to calm: a node busy for good still fills, slowly.
const LONGEST_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct CpuPressure {
    /// Where the pressure is read; none: fills never wait.
    path: Option<PathBuf>,
    /// The last reading: when, and the microseconds stalled in all until then.
    last: Option<(Instant, u64)>,
    share: f64,
}

impl CpuPressure {
    pub fn of_this_machine() -> Self {
        Self::at("/proc/pressure/cpu".into())
    }

    /// Never contended: fills never wait (the unit tests' fills must not wait on how busy the
    /// machine running them is).
    #[cfg(test)]
    pub fn ignored() -> Self {
        Self { path: None, last: None, share: 0.0 }
    }

    fn at(path: PathBuf) -> Self {
        Self { path: Some(path), last: None, share: 0.0 }
    }

    /// Waits while the CPUs are contended, at most `LONGEST_WAIT`. Without pressure stall
    /// information (an older kernel, or it is turned off) it never waits.
    pub async fn wait_for_idle_cpu(&mut self) {
        let started = Instant::now();
        while let Some(share) = self.stalled_share().await {
            if share < CONTENDED || started.elapsed() >= LONGEST_WAIT {
                return;
            }
            tokio::time::sleep(WINDOW).await;
        }
    }

    /// The share of the latest window in which some task waited for a CPU.
    async fn stalled_share(&mut self) -> Option<f64> {
        let (at, before) = match self.last.filter(|(at, _)| at.elapsed() <= 2 * WINDOW) {
            Some((at, _)) if at.elapsed() < WINDOW => return Some(self.share),
            Some(sample) => sample,
            // None lately: a window from now, not one from when the node was idle.
            None => {
                let sample = (Instant::now(), self.stalled_micros()?);
                tokio::time::sleep(WINDOW).await;
                sample
            }
        };
        let total = self.stalled_micros()?;
        let now = Instant::now();
        let window = now.duration_since(at).as_secs_f64().max(f64::EPSILON);
        self.share = total.saturating_sub(before) as f64 / 1e6 / window;
        self.last = Some((now, total));
        Some(self.share)
    }

    fn stalled_micros(&self) -> Option<u64> {
        some_total(&std::fs::read_to_string(self.path.as_ref()?).ok()?)
    }
}

/// The `total=` of the `some` line: microseconds in which some task waited for a CPU.
fn some_total(pressure: &str) -> Option<u64> {
    let some = pressure.lines().find(|line| line.starts_with("some "))?;
    some.split_whitespace().find_map(|field| field.strip_prefix("total="))?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pressure_file(total: u64) -> String {
        format!(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total={total}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
        )
    }

    #[test]
    fn the_stalled_time_is_read_from_the_some_line() {
        assert_eq!(some_total(&pressure_file(8569474229)), Some(8569474229));
        assert_eq!(some_total("full avg10=0.00 total=5\n"), None);
        assert_eq!(some_total("some avg10=0.00 total=x\n"), None);
    }

    #[tokio::test]
    async fn fills_wait_while_the_cpus_are_contended_and_not_for_ever() {
        let dir = std::env::temp_dir().join(format!("fetchfs-pressure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let path = dir.join("cpu");
        std::fs::write(&path, pressure_file(0)).expect("written");

        // Nothing stalled: one window to take a reading, then no wait.
        let mut calm = CpuPressure::at(path.clone());
        let started = Instant::now();
        calm.wait_for_idle_cpu().await;
        assert!(started.elapsed() < LONGEST_WAIT, "waited {:?} with nothing stalled", started.elapsed());

        // Stalled all the time (the total climbs with the clock): waits, but no longer than the
        // longest wait and a window.
        let stalling = tokio::spawn({
            let path = path.clone();
            async move {
                let started = Instant::now();
                let next = path.with_extension("next");
                loop {
                    // Replaced whole, as the kernel's file reads: never seen half written.
                    let stalled = started.elapsed().as_micros() as u64;
                    let _ = std::fs::write(&next, pressure_file(stalled)).and_then(|()| std::fs::rename(&next, &path));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        let mut busy = CpuPressure::at(path.clone());
        let started = Instant::now();
        busy.wait_for_idle_cpu().await;
        let waited = started.elapsed();
        stalling.abort();
        assert!(waited >= LONGEST_WAIT, "waited only {waited:?} while every task was stalled");
        assert!(waited < LONGEST_WAIT * 5, "waited {waited:?}");

        // No pressure information: no wait at all.
        let mut absent = CpuPressure::at(dir.join("absent"));
        let started = Instant::now();
        absent.wait_for_idle_cpu().await;
        assert!(started.elapsed() < WINDOW, "waited {:?} without pressure information", started.elapsed());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
