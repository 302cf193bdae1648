//! Blocks a tier's fill queue dropped (it was full: the readers came first) are fetched again
//! from the source once that tier's readers have been quiet for a while, a few at a time, and
//! queued for it waiting for room. So a tier ends up with every block the node read; the node
//! pays the bytes of a dropped block twice, once.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;

use super::Fetcher;
use crate::cache::tier::{BlockOf, BlockTier};
use crate::store::ObjectStore;

/// How long no reader offered a tier a block before its dropped ones are fetched again.
pub const QUIET: Duration = Duration::from_secs(1);
/// Dropped blocks fetched again at once.
const AT_ONCE: usize = 4;

impl<S: ObjectStore> Fetcher<S> {
    /// Starts, once, the task that fetches again what the tiers dropped (on the runtime of the
    /// first fetch).
    pub(super) fn start_refilling(self: &Arc<Self>) {
        self.refilling.call_once(|| {
            tokio::spawn(refill_dropped(Arc::downgrade(self)));
        });
    }

    /// One dropped block from the source, pinned to its version, for `tier` alone. A version
    /// gone from the source, or any failure, leaves it out: it was only ever a cache's.
    async fn fetch_again(&self, tier: &dyn BlockTier, block: BlockOf) {
        if !tier.wants(&block) {
            return;
        }
        match self.fetch_range(&block.object, self.block_range(block.index, block.size)).await {
            Ok(bytes) => tier.refill(&block, bytes).await,
            Err(e) => tracing::debug!(key = %block.object.key, "{}: fetching a dropped block again: {e}", tier.name()),
        }
    }
}

/// Runs until the fetcher is gone: fetches again what each tier dropped whenever its readers
/// are quiet.
async fn refill_dropped<S: ObjectStore>(fetcher: Weak<Fetcher<S>>) {
    loop {
        tokio::time::sleep(QUIET / 4).await;
        let Some(fetcher) = fetcher.upgrade() else { return };
        for tier in fetcher.tiers.in_order() {
            loop {
                let blocks = tier.dropped_if_quiet(QUIET, AT_ONCE);
                if blocks.is_empty() {
                    break;
                }
                futures::stream::iter(blocks)
                    .for_each_concurrent(AT_ONCE, |block| fetcher.fetch_again(tier.as_ref(), block))
                    .await;
            }
        }
    }
}
