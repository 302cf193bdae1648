//! The parallel ranged download: an object read as part-sized ranged GETs, N in flight at once,
//! bodies drained and counted. The raw ceiling of the benchmarks and `fetchfs bench` both use it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::object_id::ObjectId;
use crate::store::{ObjectStore, StoreError};

#[derive(Clone, Copy, Debug)]
pub struct DownloadRun {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl DownloadRun {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Reads `object` (of `size` bytes) from its start as `part_size` ranges, `connections` GETs in
/// flight at once: once through, or with a `limit`, over and over until it has passed (parts under
/// way then finish), so a small object still keeps every connection busy for the whole time.
pub async fn parallel_ranged_read<S: ObjectStore>(
    store: &Arc<S>,
    object: &Arc<ObjectId>,
    size: u64,
    connections: usize,
    part_size: u64,
    limit: Option<Duration>,
) -> Result<DownloadRun, StoreError> {
    use futures::StreamExt;
    let next = Arc::new(AtomicU64::new(0));
    let parts = size.div_ceil(part_size.max(1));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (store, object, next) = (Arc::clone(store), Arc::clone(object), Arc::clone(&next));
        workers.spawn(async move {
            let mut bytes = 0u64;
            loop {
                if limit.is_some_and(|limit| start.elapsed() >= limit) {
                    return Ok(bytes);
                }
                let mut part = next.fetch_add(1, Ordering::Relaxed);
                if part >= parts {
                    if limit.is_none() || parts == 0 {
                        return Ok(bytes);
                    }
                    part %= parts;
                }
                let offset = part * part_size;
                let range = offset..(offset + part_size).min(size);
                let mut body = store.get_range(&object.key, range, &object.etag).await?;
                while let Some(chunk) = body.next().await {
                    bytes += chunk?.len() as u64;
                }
            }
        });
    }
    let mut bytes = 0;
    while let Some(joined) = workers.join_next().await {
        bytes += joined.map_err(|e| StoreError::Other(format!("a download task failed: {e}")))??;
    }
    Ok(DownloadRun { bytes, elapsed: start.elapsed() })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn reads_every_byte_once_in_parts() {
        let store = Arc::new(MemoryStore::new());
        let etag = store.put("k", Bytes::from(vec![1u8; 10_000_001]));
        let object = Arc::new(ObjectId { key: "k".into(), etag });
        let run = parallel_ranged_read(&store, &object, 10_000_001, 4, 1 << 20, None).await.unwrap();
        assert_eq!(run.bytes, 10_000_001);
        assert_eq!(store.counts().gets, 10, "ceil(size / part) GETs");
    }

    #[tokio::test]
    async fn with_a_time_limit_a_small_object_is_read_again_until_it_passes() {
        let store = Arc::new(MemoryStore::new());
        let etag = store.put("k", Bytes::from(vec![1u8; 100_000]));
        let object = Arc::new(ObjectId { key: "k".into(), etag });
        let limit = Duration::from_millis(50);
        let run = parallel_ranged_read(&store, &object, 100_000, 4, 30_000, Some(limit)).await.unwrap();
        assert!(run.elapsed >= limit);
        assert!(run.bytes > 100_000 && run.bytes % 10_000 == 0, "whole parts, more than once: {}", run.bytes);
    }
}
