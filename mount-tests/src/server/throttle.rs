//! Per-connection bandwidth caps: a socket wrapper whose writes (responses) and reads (request
//! bodies: uploads) are paced to the rates the knobs say at the moment of each, so a test can
//! change them while connections are open.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::knobs::Knobs;

/// Resolution of tokio's timer: a sleep ends at the first tick after its deadline.
pub(super) const TIMER_TICK: Duration = Duration::from_millis(1);

/// Whether pacing must wait before the next transfer: only when it is ahead of its rate by more
/// than a timer tick, because a shorter wait would last a whole tick (a 1-byte response paced
/// behind its own headers took a millisecond more).
fn must_wait(not_before: Instant) -> bool {
    not_before > Instant::now() + TIMER_TICK
}

/// Most bytes written at once under a cap: 10 ms worth at the current rate, so pacing is smooth
/// rather than bursty.
fn slice_for(rate: u64) -> usize {
    usize::try_from((rate / 100).max(1024)).unwrap_or(usize::MAX)
}

pub struct Throttled<S> {
    inner: S,
    knobs: Arc<Knobs>,
    /// Earliest moment the next write may start; pushed forward by each write's share of the rate.
    not_before: Instant,
    sleep: Pin<Box<Sleep>>,
    /// The same, for reads.
    read_not_before: Instant,
    read_sleep: Pin<Box<Sleep>>,
}

impl<S> Throttled<S> {
    pub fn new(inner: S, knobs: Arc<Knobs>) -> Self {
        let now = Instant::now();
        Self {
            inner,
            knobs,
            not_before: now,
            sleep: Box::pin(tokio::time::sleep_until(now)),
            read_not_before: now,
            read_sleep: Box::pin(tokio::time::sleep_until(now)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let Some(rate) = self.knobs.upload_bandwidth() else {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        };
        if must_wait(self.read_not_before) {
            let deadline = self.read_not_before;
            self.read_sleep.as_mut().reset(deadline);
            ready!(self.read_sleep.as_mut().poll(cx));
        }
        let len = buf.remaining().min(slice_for(rate));
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(len));
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut limited))?;
        let read = limited.filled().len();
        buf.advance(read);
        let start = self.read_not_before.max(Instant::now() - TIMER_TICK);
        self.read_not_before = start + Duration::from_secs_f64(read as f64 / rate as f64);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let Some(rate) = self.knobs.bandwidth() else {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        };
        if must_wait(self.not_before) {
            let deadline = self.not_before;
            self.sleep.as_mut().reset(deadline);
            ready!(self.sleep.as_mut().poll(cx));
        }
        let len = buf.len().min(slice_for(rate));
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..len]))?;
        // Idle time earns no credit: pacing restarts from now, not from the last deadline.
        let start = self.not_before.max(Instant::now() - TIMER_TICK);
        self.not_before = start + Duration::from_secs_f64(written as f64 / rate as f64);
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.knobs.bandwidth().is_none() {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
