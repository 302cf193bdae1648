//! Blocks the fill queue dropped (it was full: the node's readers came first) go up later, once
//! the node's readers have been quiet for a while: fetched again from the source, a few at a time.
//! So the cache ends up with every block a node read, and the next node reads none of them from
//! the source; the node that dropped them pays their bytes twice, once.

use std::ops::Range;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;

use super::{Dropped, SharedCache};
use crate::object_id::ETag;
use crate::store::ObjectStore;

/// How long no reader filled a block before dropped ones are fetched again.
pub const QUIET: Duration = Duration::from_secs(1);
/// Dropped blocks fetched again at once.
const AT_ONCE: usize = 4;

/// Runs until the cache is gone: sends dropped blocks up whenever the readers are quiet.
pub async fn complete_dropped<S: ObjectStore, C: ObjectStore>(source: Arc<S>, shared: Weak<SharedCache<C>>) {
    loop {
        tokio::time::sleep(QUIET / 4).await;
        let Some(shared) = shared.upgrade() else { return };
        loop {
            let blocks = shared.dropped_if_quiet(QUIET, AT_ONCE);
            if blocks.is_empty() {
                break;
            }
            futures::stream::iter(blocks)
                .for_each_concurrent(AT_ONCE, |block| fetch_again(&*source, &shared, block))
                .await;
        }
    }
}

/// One dropped block from the source, pinned to its version, queued to go up (room in the queue
/// is waited for first, so no block is fetched to be dropped again). A version gone from the
/// source, or any failure, leaves the block out: it was only ever a cache's.
async fn fetch_again<S: ObjectStore, C: ObjectStore>(source: &S, shared: &SharedCache<C>, block: Dropped) {
    let Some(room) = shared.room().await else { return };
    let (offset, len) = shared.block_span(block.index, block.size);
    let range: Range<u64> = offset..offset + len;
    let etag = ETag::new(block.etag.clone());
    let Ok(mut body) = source.get_range(&block.key, range, &etag).await else { return };
    let mut bytes = shared.unsealed();
    while (bytes.gathered() as u64) < len {
        match body.next().await {
            Some(Ok(chunk)) => bytes.extend_from_slice(&chunk[..chunk.len().min(len as usize - bytes.gathered())]),
            _ => return,
        }
    }
    shared.refill(room, block, bytes);
}
