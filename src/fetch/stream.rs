//! One stream of reads of an object version: its readahead window, and the spans (parts of blocks) fetched
//! ahead for it.

use crate::sync::lock;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use super::readahead::ReadaheadWindow;
use super::spans::{SpanCharge, SpanFill, SpanPart, Spans};

#[derive(Default)]
pub struct ReadStream {
    window: Mutex<ReadaheadWindow>,
    spans: Mutex<Spans>,
}

impl ReadStream {
    /// A new stream that begins where a jump from `from` lands: it starts from `from`'s window,
    /// so what `from`'s last run did predicts what this one will do, and fetches its own spans.
    pub fn continuing(from: &ReadStream) -> Self {
        Self { window: Mutex::new(from.window().clone()), spans: Mutex::default() }
    }

    pub fn window(&self) -> MutexGuard<'_, ReadaheadWindow> {
        lock(&self.window)
    }

    /// Where the reader is: the end of its furthest read.
    pub fn position(&self) -> u64 {
        self.window().position()
    }

    pub(super) fn start_span(&self, range: Range<u64>, charge: SpanCharge) -> SpanFill {
        lock(&self.spans).start(range, charge)
    }

    pub(super) fn take_span(&self, wanted: &Range<u64>) -> Option<SpanPart> {
        lock(&self.spans).take(wanted)
    }

    /// What was fetched ahead for its reader goes (its window stays, for the next open to start
    /// from).
    pub fn forget_spans(&self) {
        lock(&self.spans).clear();
    }
}
