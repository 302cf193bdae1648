//! The raw ceiling: an object read with N parallel ranged GETs straight from the server, bodies
//! drained and discarded. Every benchmark compares fetchfs against it. It is fetchfs's own
//! parallel ranged download (the one `fetchfs bench` runs), over its S3 store.

use std::sync::Arc;

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
