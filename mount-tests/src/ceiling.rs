//! The raw ceilings: an object read with N parallel ranged GETs straight from the server, bodies
//! drained and discarded (fetchfs's own parallel ranged download, the one `fetchfs bench` runs,
//! over its S3 store), and an object written as a multipart upload with N parts in flight. Every
//! benchmark compares fetchfs against them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use fetchfs::bench::download::{DownloadRun, parallel_ranged_read};
use fetchfs::object_id::ObjectId;
use fetchfs::store::ObjectStore;
use fetchfs::store::s3::S3Store;

/// Reads all of `key` as `part_size` ranges, `connections` GETs in flight at once.
pub async fn read_all(
    store: &Arc<S3Store>,
    key: &str,
    connections: usize,
    part_size: u64,
) -> Result<DownloadRun, String> {
    let meta = store.head(key).await.map_err(|e| format!("HEAD {key}: {e}"))?;
    let object = Arc::new(ObjectId { key: key.into(), etag: meta.etag });
    parallel_ranged_read(store, &object, meta.size, connections, part_size, None)
        .await
        .map_err(|e| format!("{key}: {e}"))
}

/// Median time from sending a 1-byte GET at each of `offsets` to its first body byte, one after
/// another on a warm connection: the floor of a 1-byte `pread` through a mount.
pub async fn first_byte_median(store: &Arc<S3Store>, key: &str, offsets: &[u64]) -> Result<Duration, String> {
    let meta = store.head(key).await.map_err(|e| format!("HEAD {key}: {e}"))?;
    let mut times = Vec::with_capacity(offsets.len());
    for &offset in offsets {
        let started = Instant::now();
        let mut body =
            store.get_range(key, offset..offset + 1, &meta.etag).await.map_err(|e| format!("GET {key}: {e}"))?;
        let first = body.next().await;
        times.push(started.elapsed());
        first.ok_or_else(|| format!("GET {key} at {offset}: no body"))?.map_err(|e| format!("GET {key}: {e}"))?;
        while body.next().await.is_some() {}
    }
    times.sort();
    times.get(times.len() / 2).copied().ok_or_else(|| "no offsets".to_string())
}

/// Writes `data` to `key` as one multipart upload of `part_size` parts, `connections` parts in
/// flight at once, straight to the server: the ceiling of writing through fetchfs. MB/s.
pub async fn upload_all(
    store: &Arc<S3Store>,
    key: &str,
    data: bytes::Bytes,
    connections: usize,
    part_size: usize,
) -> Result<f64, String> {
    use fetchfs::store::Replace;
    let start = std::time::Instant::now();
    let upload = store.create_upload(key).await.map_err(|e| format!("create upload {key}: {e}"))?;
    let mut in_flight: tokio::task::JoinSet<Result<fetchfs::store::UploadedPart, fetchfs::store::StoreError>> =
        tokio::task::JoinSet::new();
    let mut parts = Vec::new();
    for (i, start_byte) in (0..data.len()).step_by(part_size).enumerate() {
        while in_flight.len() >= connections.max(1) {
            if let Some(done) = in_flight.join_next().await {
                parts.push(done.map_err(|e| e.to_string())?.map_err(|e| format!("upload part: {e}"))?);
            }
        }
        let (store, key, upload) = (Arc::clone(store), key.to_owned(), upload.clone());
        let body = data.slice(start_byte..(start_byte + part_size).min(data.len()));
        in_flight.spawn(async move { store.upload_part(&key, &upload, i as u32 + 1, body).await });
    }
    while let Some(done) = in_flight.join_next().await {
        parts.push(done.map_err(|e| e.to_string())?.map_err(|e| format!("upload part: {e}"))?);
    }
    parts.sort_by_key(|p| p.number);
    store.complete_upload(key, &upload, parts, Replace::Allowed).await.map_err(|e| format!("complete {key}: {e}"))?;
    Ok(data.len() as f64 / 1e6 / start.elapsed().as_secs_f64())
}
