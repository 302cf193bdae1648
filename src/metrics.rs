//! The mount's counters, in Prometheus terms: what was fetched and how, what the cache and
//! readahead did, and which errors readers saw. Each layer counts its own events here; `serve`
//! answers scrapes with the text exposition format.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `list`, `head`, `get`, `put`, `create_upload`, `upload_part`, `complete_upload`,
    /// `abort_upload` or `delete`.
    pub op: &'static str,
    /// `ok`, or the kind of failure (`not_found`, `precondition_failed`, `access_denied`, ...).
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UploadLabels {
    /// `completed` or `aborted`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// `queued`, `fetched`, `hit`, `missed`, `skipped`, `wasted`, `bad`, `failed` or `dropped`
    /// (files); `fetched` or `wasted` (bytes).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrnoLabels {
    pub errno: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub bytes_fetched: Counter,
    pub uploaded_bytes: Counter,
    pub uploads: Family<UploadLabels, Counter>,
    pub upload_parts_spilled: Counter,
    pub requests: Family<RequestLabels, Counter>,
    pub retries: Counter,
    pub body_resumes: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_bytes: Gauge,
    pub readahead_window_bytes: Histogram,
    pub prefetched_unread_bytes: Counter,
    pub errors: Family<ErrnoLabels, Counter>,
    pub open_handles: Gauge,
    /// Panics since the daemon began (each a defect; see `panics`).
    pub panics: Gauge,
    pub inodes: Gauge,
    pub listed_entries: Gauge,
    pub disk: DiskMetrics,
    pub shared: SharedCacheMetrics,
    /// What the prefetch queue (`.fetchfs/prefetch`) did with the files it was given.
    pub queue_files: Family<QueueLabels, Counter>,
    pub queue_bytes: Family<QueueLabels, Counter>,
}

/// What the disk cache did (all zero without `--disk-cache`).
#[derive(Clone, Default)]
pub struct DiskMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub read_bytes: Counter,
    pub written_bytes: Counter,
    pub fills_skipped: Counter,
    pub evictions: Counter,
    pub files_dropped: Counter,
    pub passthrough_opens: Counter,
    pub stalls: Counter,
    pub bytes: Gauge,
    pub epoch_files: Counter,
    pub epoch_bytes: Counter,
}

impl DiskMetrics {
    fn register(&self, registry: &mut Registry) {
        let disk = registry.sub_registry_with_prefix("disk_cache");
        disk.register("hits", "Blocks read from the disk cache instead of S3", self.hits.clone());
        disk.register("misses", "Blocks fetched from S3 that the disk cache did not have", self.misses.clone());
        disk.register("read_bytes", "Bytes the daemon read from the disk cache", self.read_bytes.clone());
        disk.register("written_bytes", "Bytes written to the disk cache", self.written_bytes.clone());
        disk.register(
            "fills_skipped",
            "Blocks not written to the disk cache (queue full, disk full or failing)",
            self.fills_skipped.clone(),
        );
        disk.register("evictions", "Object versions evicted from the disk cache", self.evictions.clone());
        disk.register(
            "files_dropped",
            "Cache files found changed, truncated or torn, and started again",
            self.files_dropped.clone(),
        );
        disk.register(
            "passthrough_opens",
            "Opens answered with FUSE passthrough: the kernel reads the cache file itself",
            self.passthrough_opens.clone(),
        );
        disk.register(
            "stalls",
            "Reads and opens on the disk cache that passed their deadline (the network served them)",
            self.stalls.clone(),
        );
        disk.register("bytes", "Bytes the disk cache's files take on disk (at the last scan)", self.bytes.clone());
        disk.register(
            "epoch_files",
            "Files of directories read at random (an epoch) fetched to disk before they were opened",
            self.epoch_files.clone(),
        );
        disk.register("epoch_bytes", "Bytes of those files", self.epoch_bytes.clone());
    }
}

/// What the shared cache did (all zero without `--shared-cache`).
#[derive(Clone, Default)]
pub struct SharedCacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub read_bytes: Counter,
    pub written_bytes: Counter,
    pub fills_dropped: Counter,
    pub fills_completed: Counter,
    pub fills_failed: Counter,
    pub integrity_failures: Counter,
}

impl SharedCacheMetrics {
    fn register(&self, registry: &mut Registry) {
        let shared = registry.sub_registry_with_prefix("shared_cache");
        shared.register("hits", "Blocks read from the shared cache instead of the source", self.hits.clone());
        shared.register("misses", "Blocks the shared cache did not have", self.misses.clone());
        shared.register("read_bytes", "Bytes read from the shared cache", self.read_bytes.clone());
        shared.register(
            "written_bytes",
            "Bytes written to the shared cache (headers included)",
            self.written_bytes.clone(),
        );
        shared.register(
            "fills_dropped",
            "Blocks not sent to the shared cache because its queue was full",
            self.fills_dropped.clone(),
        );
        shared.register(
            "fills_completed",
            "Blocks dropped from the full queue, fetched again from the source and sent up once the node was idle",
            self.fills_completed.clone(),
        );
        shared.register(
            "fills_failed",
            "Blocks the shared cache refused or that failed to go up",
            self.fills_failed.clone(),
        );
        shared.register(
            "integrity_failures",
            "Cached blocks refused: another version's, corrupted, or not tagged with the key",
            self.integrity_failures.clone(),
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("fetchfs");
        let bytes_fetched = Counter::default();
        registry.register("fetched_bytes", "Body bytes received from S3", bytes_fetched.clone());
        let uploaded_bytes = Counter::default();
        registry.register(
            "uploaded_bytes",
            "Body bytes sent to S3 (PUTs and parts) and accepted",
            uploaded_bytes.clone(),
        );
        let uploads = Family::<UploadLabels, Counter>::default();
        registry.register("uploads", "Files written to S3, by outcome (completed or aborted)", uploads.clone());
        let upload_parts_spilled = Counter::default();
        registry.register(
            "upload_parts_spilled",
            "Upload parts kept on disk while being filled, the memory for writing being taken",
            upload_parts_spilled.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "S3 requests by operation and outcome (after retries)", requests.clone());
        let retries = Counter::default();
        registry.register("retries", "S3 request attempts that were retries", retries.clone());
        let body_resumes = Counter::default();
        registry.register(
            "body_resumes",
            "Response bodies cut off and resumed from the last byte",
            body_resumes.clone(),
        );
        let cache_hits = Counter::default();
        registry.register("cache_hits", "Blocks readers found cached or already being fetched", cache_hits.clone());
        let cache_misses = Counter::default();
        registry.register("cache_misses", "Blocks readers had to fetch", cache_misses.clone());
        let cache_bytes = Gauge::default();
        registry.register("cache_bytes", "Bytes of block data held in the cache", cache_bytes.clone());
        let readahead_window_bytes = Histogram::new(exponential_buckets(1024.0 * 1024.0, 2.0, 10));
        registry.register(
            "readahead_window_bytes",
            "Readahead window sizes, each time a sequential reader's window changes",
            readahead_window_bytes.clone(),
        );
        let prefetched_unread_bytes = Counter::default();
        registry.register(
            "prefetched_unread_bytes",
            "Bytes fetched ahead of readers and evicted without being read",
            prefetched_unread_bytes.clone(),
        );
        let errors = Family::<ErrnoLabels, Counter>::default();
        registry.register("errors", "Errors returned to readers, by errno", errors.clone());
        let open_handles = Gauge::default();
        registry.register("open_handles", "Files open now", open_handles.clone());
        let panics = Gauge::default();
        registry.register("panics", "Panics since the daemon began (each a defect of fetchfs)", panics.clone());
        let inodes = Gauge::default();
        registry.register("inodes", "Inodes the kernel holds", inodes.clone());
        let listed_entries = Gauge::default();
        registry.register("listed_entries", "Entries of the directory listings kept", listed_entries.clone());
        let disk = DiskMetrics::default();
        disk.register(&mut registry);
        let shared = SharedCacheMetrics::default();
        shared.register(&mut registry);
        let queue_files = Family::<QueueLabels, Counter>::default();
        registry.register(
            "prefetch_queue_files",
            "Files given to .fetchfs/prefetch, by what became of them",
            queue_files.clone(),
        );
        let queue_bytes = Family::<QueueLabels, Counter>::default();
        registry.register(
            "prefetch_queue_bytes",
            "Bytes the prefetch queue fetched ahead, and those never read",
            queue_bytes.clone(),
        );
        Self {
            registry,
            bytes_fetched,
            uploaded_bytes,
            uploads,
            upload_parts_spilled,
            requests,
            retries,
            body_resumes,
            cache_hits,
            cache_misses,
            cache_bytes,
            readahead_window_bytes,
            prefetched_unread_bytes,
            errors,
            open_handles,
            panics,
            inodes,
            listed_entries,
            disk,
            shared,
            queue_files,
            queue_bytes,
        }
    }
}

impl Metrics {
    pub fn request(&self, op: &'static str, status: &'static str) {
        self.requests.get_or_create(&RequestLabels { op, status }).inc();
    }

    pub fn error(&self, errno: &'static str) {
        self.errors.get_or_create(&ErrnoLabels { errno }).inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Serves `GET /metrics` (any path, in fact) on `addr` until the runtime stops; `refresh` updates
/// the gauges that are read off the filesystem's state just before each scrape.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    refresh: impl Fn() + Send + Sync + 'static,
) -> std::io::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::service::service_fn;

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let refresh = Arc::new(refresh);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics endpoint: accepting a connection: {e}");
                    continue;
                }
            };
            let (metrics, refresh) = (Arc::clone(&metrics), Arc::clone(&refresh));
            let service = service_fn(move |_request| {
                refresh();
                let response = hyper::Response::builder()
                    .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                    .body(Full::new(Bytes::from(metrics.render())));
                async move { response }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                    tracing::debug!("metrics endpoint: {e}");
                }
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_rendered_with_its_labels() {
        let metrics = Metrics::default();
        metrics.bytes_fetched.inc_by(1234);
        metrics.request("get", "ok");
        metrics.error("ESTALE");
        metrics.readahead_window_bytes.observe(8.0 * 1024.0 * 1024.0);
        let text = metrics.render();
        for line in [
            "fetchfs_fetched_bytes_total 1234",
            "fetchfs_requests_total{op=\"get\",status=\"ok\"} 1",
            "fetchfs_errors_total{errno=\"ESTALE\"} 1",
            "fetchfs_readahead_window_bytes_count 1",
            "fetchfs_cache_bytes 0",
            "fetchfs_open_handles 0",
            "fetchfs_panics 0",
            "fetchfs_disk_cache_passthrough_opens_total 0",
            "fetchfs_disk_cache_epoch_files_total 0",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
