//! Byte ranges a stream fetched ahead that are not whole blocks: the rest of the block a run
//! starts in, and the part of its last block that a predicted run reaches into. Whole blocks go to
//! the shared block cache; these belong to the one stream that asked for them, and go once read,
//! once newer ones push them out (a stream keeps `KEPT`) or when the file is closed. All streams'
//! spans together hold at most their share of the memory budget (`SpanBudget`).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::watch;

use crate::store::StoreError;

/// Spans kept per stream: the current run's first and last, and the last run's, whose end the
/// kernel may still be reading after the reader has jumped.
const KEPT: usize = 4;

#[derive(Clone, Debug)]
enum State {
    Fetching,
    Fetched(Bytes),
    /// The GET failed: each reader fetches its part itself, with its own retries and error.
    Failed,
}

struct Span {
    range: Range<u64>,
    state: watch::Receiver<State>,
    /// Bytes of it not yet handed to a reader.
    unread: u64,
    /// Its bytes' share of the budget, given back when the span goes.
    _charge: SpanCharge,
}

/// The bytes the spans of all streams may hold at once.
#[derive(Clone)]
pub struct SpanBudget {
    held: Arc<AtomicU64>,
    cap: u64,
}

impl SpanBudget {
    pub fn new(cap: u64) -> Self {
        Self { held: Arc::default(), cap }
    }

    /// A charge of `bytes`, or `None` if the spans hold their whole share already.
    pub fn charge(&self, bytes: u64) -> Option<SpanCharge> {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.cap)
            })
            .ok()
            .map(|_| SpanCharge { held: Arc::clone(&self.held), bytes })
    }
}

pub struct SpanCharge {
    held: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for SpanCharge {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Spans {
    spans: VecDeque<Span>,
}

impl Spans {
    /// Registers `range` as being fetched, its bytes held under `charge`; the fetch delivers it
    /// through the returned fill.
    pub fn start(&mut self, range: Range<u64>, charge: SpanCharge) -> SpanFill {
        let (fill, state) = watch::channel(State::Fetching);
        if self.spans.len() == KEPT {
            self.spans.pop_front();
        }
        self.spans.push_back(Span { unread: range.end - range.start, range, state, _charge: charge });
        SpanFill(fill)
    }

    /// The part of `wanted`, from its start, that a span holds or is fetching. A span is dropped
    /// once all its bytes have been handed out.
    pub fn take(&mut self, wanted: &Range<u64>) -> Option<SpanPart> {
        let i = self.spans.iter().position(|s| s.range.contains(&wanted.start))?;
        let span = &mut self.spans[i];
        let part = wanted.start..wanted.end.min(span.range.end);
        span.unread = span.unread.saturating_sub(part.end - part.start);
        let taken = SpanPart { span_start: span.range.start, part, state: span.state.clone() };
        if span.unread == 0 {
            self.spans.remove(i);
        }
        Some(taken)
    }

    pub fn clear(&mut self) {
        self.spans.clear();
    }
}

/// Where the fetch of a span delivers its outcome. Dropped without one (its task ended early),
/// the span's readers fetch their parts themselves.
pub struct SpanFill(watch::Sender<State>);

impl SpanFill {
    pub fn fetched(self, outcome: Result<Bytes, StoreError>) {
        self.0.send_replace(match outcome {
            Ok(bytes) => State::Fetched(bytes),
            Err(e) => {
                tracing::debug!("a span fetched ahead failed ({e}); its readers fetch it themselves");
                State::Failed
            }
        });
    }
}

/// A reader's part of a span.
pub struct SpanPart {
    span_start: u64,
    part: Range<u64>,
    state: watch::Receiver<State>,
}

impl SpanPart {
    pub fn range(&self) -> Range<u64> {
        self.part.clone()
    }

    /// The part's bytes once the span has arrived, or `None` if its fetch failed.
    pub async fn bytes(mut self) -> Option<Bytes> {
        let state = self.state.wait_for(|s| !matches!(s, State::Fetching)).await.ok()?;
        let State::Fetched(bytes) = &*state else { return None };
        let from = usize::try_from(self.part.start - self.span_start).ok()?;
        let to = usize::try_from(self.part.end - self.span_start).ok()?;
        (to <= bytes.len()).then(|| bytes.slice(from..to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unbounded() -> SpanCharge {
        SpanBudget::new(u64::MAX).charge(0).expect("no cap")
    }

    #[tokio::test]
    async fn a_reader_gets_its_part_of_a_span_once_it_arrives() {
        let mut spans = Spans::default();
        let fill = spans.start(100..200, unbounded());
        let part = spans.take(&(150..300)).expect("the span holds the start of the read");
        assert_eq!(part.range(), 150..200, "only the bytes the span has");
        let waiting = tokio::spawn(part.bytes());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the span has not arrived");
        fill.fetched(Ok(Bytes::from((100..200u8).collect::<Vec<u8>>())));
        let bytes = waiting.await.expect("task").expect("bytes");
        assert_eq!(&bytes[..], &(150..200u8).collect::<Vec<u8>>()[..]);
    }

    #[tokio::test]
    async fn a_failed_or_abandoned_span_leaves_the_read_to_its_reader() {
        let mut spans = Spans::default();
        let failed = spans.start(0..10, unbounded());
        let abandoned = spans.start(10..20, unbounded());
        let (first, second) = (spans.take(&(0..10)).expect("span"), spans.take(&(10..20)).expect("span"));
        failed.fetched(Err(StoreError::Other("reset".into())));
        drop(abandoned);
        assert!(first.bytes().await.is_none());
        assert!(second.bytes().await.is_none());
    }

    #[test]
    fn a_span_goes_once_read_and_the_oldest_when_too_many() {
        let mut spans = Spans::default();
        let _fill = spans.start(0..10, unbounded());
        assert!(spans.take(&(0..4)).is_some());
        assert!(spans.take(&(4..10)).is_some());
        assert!(spans.take(&(5..6)).is_none(), "all of it was handed out");
        let _fills: Vec<SpanFill> =
            (1..=KEPT as u64 + 1).map(|i| spans.start(i * 100..i * 100 + 10, unbounded())).collect();
        assert!(spans.take(&(100..101)).is_none(), "the oldest was pushed out");
        assert!(spans.take(&(200..201)).is_some());
        assert!(spans.take(&(50..60)).is_none(), "no span there");
    }

    #[test]
    fn spans_hold_no_more_than_their_budget_and_give_it_back_when_they_go() {
        let budget = SpanBudget::new(100);
        let mut spans = Spans::default();
        let _first = spans.start(0..60, budget.charge(60).expect("within the budget"));
        assert!(budget.charge(60).is_none(), "over the budget");
        let _second = spans.start(100..140, budget.charge(40).expect("the rest of it"));
        assert!(spans.take(&(0..60)).is_some());
        assert!(budget.charge(60).is_some(), "a span read whole gave its share back");
        spans.clear();
        assert!(budget.charge(100).is_some(), "and so did a cleared one");
    }
}
