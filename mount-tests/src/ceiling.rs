//! The raw ceiling: an object read with N parallel ranged GETs straight from the server, bodies
//! drained and discarded. Every benchmark compares fetchfs against it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;

#[derive(Clone, Copy, Debug)]
pub struct CeilingRun {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl CeilingRun {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Reads `size` bytes of `key` as `part_size` ranges, `connections` of them in flight at once.
pub async fn parallel_ranged_read(
    client: &Client,
    bucket: &str,
    key: &str,
    size: u64,
    connections: usize,
    part_size: u64,
) -> Result<CeilingRun, String> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (client, bucket, key, next) = (client.clone(), bucket.to_owned(), key.to_owned(), Arc::clone(&next));
        workers.spawn(async move {
            let mut bytes = 0u64;
            loop {
                let offset = next.fetch_add(part_size, Ordering::Relaxed);
                if offset >= size {
                    return Ok::<u64, String>(bytes);
                }
                let last = (offset + part_size).min(size) - 1;
                let out = client
                    .get_object()
                    .bucket(&bucket)
                    .key(&key)
                    .range(format!("bytes={offset}-{last}"))
                    .send()
                    .await
                    .map_err(|e| {
                        format!("GET {key} bytes {offset}-{last}: {}", aws_sdk_s3::error::DisplayErrorContext(e))
                    })?;
                let mut body = out.body;
                while let Some(chunk) = body.try_next().await.map_err(|e| format!("body of {key}: {e}"))? {
                    bytes += chunk.len() as u64;
                }
            }
        });
    }
    let mut bytes = 0;
    while let Some(joined) = workers.join_next().await {
        bytes += joined.map_err(|e| e.to_string())??;
    }
    Ok(CeilingRun { bytes, elapsed: start.elapsed() })
}
