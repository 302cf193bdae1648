//! The raw ceiling: an object read with N parallel ranged GETs straight from the server, bodies
//! drained and discarded. Every benchmark compares fetchfs against it. It is fetchfs's own
//! parallel ranged download (the one `fetchfs bench` runs), over its S3 store.

use std::sync::Arc;

use fetchfs::bench::download::{DownloadRun, parallel_ranged_read};
use fetchfs::object_id::ObjectId;
use fetchfs::store::ObjectStore;
use fetchfs::store::s3::{S3Settings, S3Store};

use crate::server::Credentials;

/// A store reading `bucket` at `endpoint` with `credentials`, which it takes from the environment
/// as fetchfs does. Only for tools whose other threads (the test server's) never read it.
pub async fn store(endpoint: &str, credentials: &Credentials, bucket: &str) -> Result<Arc<S3Store>, String> {
    // SAFETY: the tools call this once, and no other thread of theirs reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", &credentials.access_key);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", &credentials.secret_key);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let settings = S3Settings {
        bucket: bucket.into(),
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.into()),
        force_path_style: true,
        max_attempts: 3,
        ..Default::default()
    };
    S3Store::connect(&settings, Default::default()).await.map(Arc::new).map_err(|e| e.to_string())
}

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
