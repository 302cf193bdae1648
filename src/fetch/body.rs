//! Response bodies that survive being cut off. The SDK retries a request that fails before its
//! body starts; once bytes flow, a reset connection, an early end or a stall is ours to handle: the
//! rest of the range is asked for again from the last byte received, pinned to the same ETag.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;

use crate::object_id::ObjectId;
use crate::store::{BodyStream, ObjectStore, StoreError};

/// How long a body may go without a byte, and how often in a row it may be resumed without a
/// byte arriving in between (a body that keeps making progress is resumed as often as it is cut).
#[derive(Clone, Copy, Debug)]
pub struct BodyPolicy {
    pub idle_timeout: Duration,
    pub max_resumes: u32,
}

impl Default for BodyPolicy {
    fn default() -> Self {
        Self { idle_timeout: Duration::from_secs(10), max_resumes: 5 }
    }
}

pub struct ResumingBody<S> {
    store: Arc<S>,
    object: Arc<ObjectId>,
    next: u64,
    end: u64,
    body: BodyStream,
    policy: BodyPolicy,
    resumes_left: u32,
    resumes: Counter,
}

impl<S: ObjectStore> ResumingBody<S> {
    /// Starts a GET of `range` of `object`; `resumes` counts every resumption.
    pub async fn open(
        store: Arc<S>,
        object: Arc<ObjectId>,
        range: Range<u64>,
        policy: BodyPolicy,
        resumes: Counter,
    ) -> Result<Self, StoreError> {
        let body = store.get_range(&object.key, range.clone(), &object.etag).await?;
        Ok(Self {
            store,
            object,
            next: range.start,
            end: range.end,
            body,
            policy,
            resumes_left: policy.max_resumes,
            resumes,
        })
    }

    /// The next bytes of the range, in order; `None` once all of it has arrived.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        loop {
            if self.next >= self.end {
                return Ok(None);
            }
            let cut_off = match tokio::time::timeout(self.policy.idle_timeout, self.body.next()).await {
                Ok(Some(Ok(mut chunk))) => {
                    chunk.truncate((self.end - self.next).min(chunk.len() as u64) as usize);
                    self.next += chunk.len() as u64;
                    if !chunk.is_empty() {
                        self.resumes_left = self.policy.max_resumes;
                    }
                    return Ok(Some(chunk));
                }
                // The object changed, is gone, or is refused: asking again cannot help.
                Ok(Some(Err(
                    e @ (StoreError::PreconditionFailed | StoreError::NotFound | StoreError::AccessDenied(_)),
                ))) => {
                    return Err(e);
                }
                Ok(Some(Err(e))) => e,
                Ok(None) => StoreError::Other(format!("the response ended {} bytes early", self.end - self.next)),
                Err(_) => StoreError::Other(format!("no data for {} s", self.policy.idle_timeout.as_secs())),
            };
            if self.resumes_left == 0 {
                return Err(cut_off);
            }
            self.resumes_left -= 1;
            self.resumes.inc();
            tracing::debug!(key = %self.object.key, from = self.next, "body cut off ({cut_off}); resuming");
            self.body = self.store.get_range(&self.object.key, self.next..self.end, &self.object.etag).await?;
        }
    }
}
