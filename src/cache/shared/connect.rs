//! Reaching the shared cache at mount, with one line for each way it can be unusable: its bucket
//! missing, out of reach, or not writable by this node (checked with a probe object, which is
//! written again in place by every mount and never deleted).

use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;

use super::SharedCacheSettings;
use super::sealed::Check;
use super::{CpuPressure, SharedCache, SharedCacheConfig};
use crate::metrics::SharedCacheMetrics;
use crate::store::s3::S3Store;
use crate::store::{ObjectStore, Replace, StoreError};

/// What the startup checks found wrong.
fn unusable(settings: &SharedCacheSettings, what: &str, e: StoreError) -> String {
    let endpoint = settings.s3.endpoint_url.as_deref().unwrap_or("AWS S3");
    format!("--shared-cache s3://{}/{} at {endpoint}: {what} ({e})", settings.s3.bucket, settings.prefix)
}

/// The shared cache, checked and ready.
pub async fn connect(
    settings: &SharedCacheSettings,
    scope: String,
    block: u64,
    queue_bytes: u64,
    retries: Counter,
    metrics: SharedCacheMetrics,
) -> Result<Arc<SharedCache<S3Store>>, String> {
    // Every block is sealed with a digest or a MAC of its own, checked on each read: signing or
    // checksumming its bytes as well would pass over each one twice more (here and at the server).
    let store = S3Store::connect(&settings.s3, retries.clone())
        .await
        .map_err(|e| unusable(settings, "cannot connect", e))?
        .without_payload_checks();
    match store.list_page(&settings.prefix, None, Some(1)).await {
        Ok(_) => {}
        Err(e @ StoreError::NoSuchBucket) => return Err(unusable(settings, "the bucket does not exist", e)),
        Err(e) => return Err(unusable(settings, "cannot list it", e)),
    }
    let probe = format!("{}.fetchfs-write-probe", settings.prefix);
    let written = store.put_object(&probe, Bytes::from_static(b"fetchfs checks it may write here\n"), Replace::Allowed);
    if let Err(e) = written.await {
        return Err(unusable(settings, "this node cannot write to it, and fills it as it reads", e));
    }
    let check = match &settings.key {
        Some(key) => Check::keyed(key),
        None => Check::Digest,
    };
    match &check {
        Check::Keyed(_) => {
            tracing::info!(bucket = %settings.s3.bucket, prefix = %settings.prefix, "shared cache: blocks carry a MAC under the key; blocks without it are refused")
        }
        Check::Digest => {
            tracing::warn!(bucket = %settings.s3.bucket, prefix = %settings.prefix, "shared cache without --shared-cache-key-file: blocks are checked against corruption and mix-ups, but anyone who can write the bucket can make the nodes serve their bytes")
        }
    }
    // Fills have connections of their own: the filling thread drives their I/O at its low
    // priority, and a lookup must not wait on a connection it drives.
    let fill_store = S3Store::connect(&settings.s3, retries)
        .await
        .map_err(|e| unusable(settings, "cannot connect", e))?
        .without_payload_checks();
    let pressure = CpuPressure::of_this_machine();
    let config = SharedCacheConfig { prefix: settings.prefix.clone(), scope, block, check, queue_bytes, pressure };
    SharedCache::start(Arc::new(store), Arc::new(fill_store), config, metrics)
}
