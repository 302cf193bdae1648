//! The interface of a tier: a place below the memory cache where blocks of object versions are
//! kept (the disk, the shared cache). The fetch layer asks the tiers in order before the source
//! (`fetch/below.rs`), and offers each tier what came from further down, to keep behind the
//! reader through its fill queue (`fill_queue`). A tier knows nothing of the others nor of the
//! source; what it dropped is fetched again by the fetch layer, which has the source.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::buffers::BufferPool;
pub use super::fill_queue::BlockOf;

pub trait BlockTier: Send + Sync {
    /// Its name, for logs.
    fn name(&self) -> &'static str;

    /// Bytes `within` block `block` (offsets in the object), in a buffer of `buffers` taken once
    /// the bytes are at hand (a lookup waiting on the network holds none), if this tier holds the
    /// block and answers in time; `None` sends the reader further down.
    fn read<'a>(
        &'a self,
        block: &'a BlockOf,
        within: Range<u64>,
        buffers: &'a Arc<BufferPool>,
    ) -> BoxFuture<'a, Option<Bytes>>;

    /// Every byte of a block that came from further down, to keep: queued behind the reader, or
    /// dropped (and remembered) when the tier's queue is full.
    fn offer(&self, block: &BlockOf, bytes: &Bytes);

    /// Bytes at `at` within a block, received apart from the rest of it (a reader's own bytes).
    /// A tier that keeps only whole blocks lets them go.
    fn offer_piece(&self, _block: &BlockOf, _at: u64, _bytes: Bytes) {}

    /// Whether it still lacks a block it dropped (another way may have brought it since).
    fn wants(&self, _block: &BlockOf) -> bool {
        true
    }

    /// A block it dropped, fetched again: queued once there is room.
    fn refill<'a>(&'a self, block: &'a BlockOf, bytes: Bytes) -> BoxFuture<'a, ()>;

    /// Up to `n` blocks it dropped, to fetch again, once no reader offered it one for `quiet`.
    fn dropped_if_quiet(&self, quiet: Duration, n: usize) -> Vec<BlockOf>;

    /// Fills queued or being written: what an unmount waits for.
    fn fills_pending(&self) -> usize;
}
