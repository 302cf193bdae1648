//! Run-time switches of the test server (latency, bandwidth, faults) and its counters. Tests hold
//! an `Arc<Knobs>` and change them between steps; the server reads them on every request, so a
//! change applies to the next request (and, for the bandwidth cap, to the next write).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// An error status the server can be told to answer with instead of serving a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    /// 503 with S3's `SlowDown` code, as S3 throttles.
    SlowDown,
    /// 500 with S3's `InternalError` code.
    InternalError,
    /// 403 with S3's `InvalidObjectState` code, as S3 answers a GET of an object archived in
    /// Glacier or Deep Archive.
    InvalidObjectState,
}

/// Which requests an injected fault hits. Request numbers count every request the server receives
/// from the moment the rule is set, starting at 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultTrigger {
    /// Only the Nth request after the rule is set.
    Nth(u64),
    /// Each request independently with this probability (0.0..=1.0).
    Fraction(f64),
    /// Every UploadPart request: a multipart upload fails past any number of retries.
    EveryPartUpload,
    /// Every DeleteObject request.
    EveryDelete,
    /// Every PutObject request (not parts, not copies).
    EveryPut,
}

/// What a request is, as far as the fault rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestKind {
    PartUpload,
    Put,
    Delete,
    Other,
}

/// What happens to a GET's body on its way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFault {
    /// Close the connection after this many body bytes of each GET response.
    ResetAfter(u64),
    /// Hold each GET response this long after its headers, before its first body byte.
    Stall(Duration),
}

#[derive(Clone, Copy, Debug)]
struct StatusFault {
    status: FaultStatus,
    trigger: FaultTrigger,
    /// Value of the request counter when the rule was set.
    base: u64,
}

#[derive(Default)]
pub struct Knobs {
    first_byte_delay_us: AtomicU64,
    /// Bytes per second per connection; 0 means unlimited.
    bandwidth: AtomicU64,
    /// The same, for request bodies (uploads).
    upload_bandwidth: AtomicU64,
    /// UploadPart requests still to be answered by closing the connection.
    part_resets: AtomicU64,
    status_fault: Mutex<Option<StatusFault>>,
    body_fault: Mutex<Option<BodyFault>>,
    /// GETs answered as a server or proxy that does not honour these headers would.
    ignore_range: AtomicBool,
    ignore_if_match: AtomicBool,
    express_etags: AtomicBool,
    requests_seen: AtomicU64,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every value behind these locks is replaced whole, so a poisoned lock still holds a valid one.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Knobs {
    /// Delay before each response's first byte (on top of whatever the work takes).
    pub fn set_first_byte_delay(&self, delay: Duration) {
        self.first_byte_delay_us.store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn first_byte_delay(&self) -> Duration {
        Duration::from_micros(self.first_byte_delay_us.load(Ordering::Relaxed))
    }

    /// Caps each connection's sending rate, in bytes per second; `None` lifts the cap.
    pub fn set_bandwidth(&self, bytes_per_second: Option<u64>) {
        self.bandwidth.store(bytes_per_second.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn bandwidth(&self) -> Option<u64> {
        Some(self.bandwidth.load(Ordering::Relaxed)).filter(|&b| b > 0)
    }

    /// Caps each connection's receiving rate (request bodies), in bytes per second.
    pub fn set_upload_bandwidth(&self, bytes_per_second: Option<u64>) {
        self.upload_bandwidth.store(bytes_per_second.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn upload_bandwidth(&self) -> Option<u64> {
        Some(self.upload_bandwidth.load(Ordering::Relaxed)).filter(|&b| b > 0)
    }

    /// The next `n` UploadPart requests are answered by closing the connection, as a reset would.
    pub fn reset_next_part_uploads(&self, n: u64) {
        self.part_resets.store(n, Ordering::Relaxed);
    }

    pub(crate) fn take_part_reset(&self) -> bool {
        self.part_resets.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    }

    /// Answers the requests picked by `trigger` with `status`; replaces any earlier rule.
    pub fn set_status_fault(&self, status: FaultStatus, trigger: FaultTrigger) {
        let base = self.requests_seen.load(Ordering::SeqCst);
        *lock(&self.status_fault) = Some(StatusFault { status, trigger, base });
    }

    pub fn set_body_fault(&self, fault: Option<BodyFault>) {
        *lock(&self.body_fault) = fault;
    }

    /// Answers GETs with the whole object (200, no Content-Range), whatever Range asks for.
    pub fn set_ignore_range(&self, ignore: bool) {
        self.ignore_range.store(ignore, Ordering::Relaxed);
    }

    pub(crate) fn ignores_range(&self) -> bool {
        self.ignore_range.load(Ordering::Relaxed)
    }

    /// Serves GETs whatever version If-Match names (as the s3s-fs server does).
    pub fn set_ignore_if_match(&self, ignore: bool) {
        self.ignore_if_match.store(ignore, Ordering::Relaxed);
    }

    pub(crate) fn ignores_if_match(&self) -> bool {
        self.ignore_if_match.load(Ordering::Relaxed)
    }

    /// Gives PUTs ETags that are not the MD5 of their bodies, as S3 Express One Zone's directory
    /// buckets do (here a random one per PUT): a near cache server on the benchmark's two cores
    /// then spends on MD5 none of the CPU the node reading beside it needs.
    pub fn set_express_etags(&self, express: bool) {
        self.express_etags.store(express, Ordering::Relaxed);
    }

    pub(crate) fn express_etags(&self) -> bool {
        self.express_etags.load(Ordering::Relaxed)
    }

    /// Turns off every fault, delay and cap (counters are kept).
    pub fn clear(&self) {
        self.set_first_byte_delay(Duration::ZERO);
        self.set_bandwidth(None);
        self.set_upload_bandwidth(None);
        self.reset_next_part_uploads(0);
        *lock(&self.status_fault) = None;
        self.set_body_fault(None);
        self.set_ignore_range(false);
        self.set_ignore_if_match(false);
        self.set_express_etags(false);
    }

    /// Called once per incoming request: numbers it and says whether it must fail.
    pub(crate) fn admit_request(&self, kind: RequestKind) -> Option<FaultStatus> {
        let number = self.requests_seen.fetch_add(1, Ordering::SeqCst) + 1;
        let rule = (*lock(&self.status_fault))?;
        let hit = match rule.trigger {
            FaultTrigger::Nth(n) => number - rule.base == n,
            FaultTrigger::Fraction(p) => fastrand::f64() < p,
            FaultTrigger::EveryPartUpload => kind == RequestKind::PartUpload,
            FaultTrigger::EveryDelete => kind == RequestKind::Delete,
            FaultTrigger::EveryPut => kind == RequestKind::Put,
        };
        hit.then_some(rule.status)
    }

    pub(crate) fn body_fault(&self) -> Option<BodyFault> {
        *lock(&self.body_fault)
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// What the server did, for tests to read and reset.
#[derive(Default)]
pub struct Counters {
    requests: Mutex<BTreeMap<&'static str, u64>>,
    body_bytes_sent: AtomicU64,
    connections_opened: AtomicU64,
    injected_faults: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Requests served by S3 operation name (`GetObject`, `ListObjectsV2`, ...), including those
    /// that ended in an S3 error, excluding those answered by an injected fault.
    pub requests: BTreeMap<&'static str, u64>,
    pub body_bytes_sent: u64,
    pub connections_opened: u64,
    pub injected_faults: u64,
}

impl CounterSnapshot {
    pub fn requests_of(&self, operation: &str) -> u64 {
        self.requests.get(operation).copied().unwrap_or(0)
    }
}

impl Counters {
    pub(crate) fn count_request(&self, operation: &'static str) {
        *lock(&self.requests).entry(operation).or_default() += 1;
    }

    pub(crate) fn count_body_bytes(&self, n: u64) {
        self.body_bytes_sent.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn count_connection(&self) {
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_injected_fault(&self) {
        self.injected_faults.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            requests: lock(&self.requests).clone(),
            body_bytes_sent: self.body_bytes_sent.load(Ordering::Relaxed),
            connections_opened: self.connections_opened.load(Ordering::Relaxed),
            injected_faults: self.injected_faults.load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        lock(&self.requests).clear();
        self.body_bytes_sent.store(0, Ordering::Relaxed);
        self.connections_opened.store(0, Ordering::Relaxed);
        self.injected_faults.store(0, Ordering::Relaxed);
    }
}
