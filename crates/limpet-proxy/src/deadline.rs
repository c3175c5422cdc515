//! Deadlines on a client connection that Pingora 0.9.1 does not enforce: it times out
//! each read of a request head (60 s, restarted by every byte), so a client sending one
//! byte a second holds a connection forever (slowloris), and a connection that never
//! sends a request lives 60 s whatever `client_idle_timeout` says.
//!
//! [`Guarded`] wraps an HTTP/1 client stream. While the connection waits for a request
//! it must start one within `client_idle_timeout` (else it is closed silently); once a
//! request's first byte arrived, its whole head (up to the blank line) must arrive within
//! `request_header_timeout`, else limpet answers 408 and closes. The head deadline re-arms
//! for every request of a kept-alive connection ([`Guard::await_request`]); between
//! requests Pingora's keep-alive timeout applies. HTTP/2 streams
//! are not wrapped: their framing is the h2 library's job.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::exchange::{raw_refusal, Refusal};
use crate::shared::Shared;

/// Where the connection is, as the guard sees it.
/// From accept to the first byte: `client_idle_timeout`.
const IDLE: u8 = 0;
/// From a request's first byte to its blank line: `request_header_timeout`.
const HEAD: u8 = 1;
/// The rest of the exchange: no deadline of ours.
const BODY: u8 = 2;
/// Between kept-alive requests: Pingora's keep-alive timeout (`client_idle_timeout`)
/// applies, not ours, since a pipelined request may already be buffered and served
/// without a read.
const WAIT: u8 = 3;

/// Shared between the wrapped stream and the loop that serves the connection's
/// requests, which re-arms it between requests.
#[derive(Debug, Default)]
pub struct Guard {
    phase: AtomicU8,
}

impl Guard {
    /// The connection now waits for its next request.
    pub fn await_request(&self) {
        self.phase.store(WAIT, Ordering::Relaxed);
    }
}

/// A client stream under the idle and request-head deadlines.
pub struct Guarded {
    inner: Stream,
    guard: Arc<Guard>,
    idle: Duration,
    head: Duration,
    timer: Pin<Box<Sleep>>,
    /// The phase the timer was set for.
    armed: u8,
    /// How much of "\r\n\r\n" the last bytes read end with.
    matched: u8,
    /// Bytes of the current request head so far, and the most allowed.
    head_bytes: usize,
    max_head: usize,
    /// Counts limpet's answers; the listener's HSTS value for them.
    shared: Arc<Shared>,
    hsts: Option<String>,
}

impl Guarded {
    /// Guards `inner`: a request must start within `idle`, its head must arrive within
    /// `head` and be at most `max_head` bytes.
    pub fn new(
        inner: Stream,
        guard: Arc<Guard>,
        (idle, head): (Duration, Duration),
        max_head: usize,
        (shared, hsts): (Arc<Shared>, Option<String>),
    ) -> Self {
        Self {
            shared,
            hsts,
            inner,
            guard,
            idle,
            head,
            timer: Box::pin(tokio::time::sleep(idle)),
            armed: IDLE,
            matched: 0,
            head_bytes: 0,
            max_head,
        }
    }
}

/// Where the head scan is: a partial "\r\n\r\n" carried from one read to the next, and
/// the head's size so far.
#[derive(Default)]
struct Scan {
    matched: u8,
    head_bytes: usize,
}

/// Follows the bytes just read: the first byte starts the head, the blank line ends
/// it. Returns the size of the head so far.
fn saw(guard: &Guard, scan: &mut Scan, bytes: &[u8]) -> usize {
    let mut phase = guard.phase.load(Ordering::Relaxed);
    if bytes.is_empty() || phase == BODY {
        return 0;
    }
    if phase == IDLE || phase == WAIT {
        phase = HEAD;
        *scan = Scan::default();
    }
    let matched = &mut scan.matched;
    for b in bytes {
        scan.head_bytes += 1;
        *matched = match (*matched, b) {
            (0 | 2, b'\r') => *matched + 1,
            (1 | 3, b'\n') => *matched + 1,
            (_, b'\r') => 1,
            _ => 0,
        };
        if *matched == 4 {
            phase = BODY;
            break;
        }
    }
    guard.phase.store(phase, Ordering::Relaxed);
    scan.head_bytes
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Guarded {
    /// Writes limpet's answer before closing. Best effort: it fits any socket buffer,
    /// and the connection closes anyway.
    fn answer(&mut self, cx: &mut Context<'_>, refusal: Refusal) {
        let bytes = raw_refusal(&self.shared, refusal, self.hsts.as_deref());
        let _ = Pin::new(&mut self.inner).poll_write(cx, &bytes);
        let _ = Pin::new(&mut self.inner).poll_flush(cx);
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let mut scan = Scan {
                    matched: this.matched,
                    head_bytes: this.head_bytes,
                };
                let size = saw(&this.guard, &mut scan, &buf.filled()[before..]);
                (this.matched, this.head_bytes) = (scan.matched, scan.head_bytes);
                if size > this.max_head {
                    // Refused while reading: nothing more of this head is buffered.
                    this.answer(cx, Refusal::HeaderTooLarge);
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "request head above max_request_header_bytes",
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let phase = this.guard.phase.load(Ordering::Relaxed);
        if phase == BODY || phase == WAIT {
            return Poll::Pending;
        }
        if phase != this.armed {
            let limit = if phase == IDLE { this.idle } else { this.head };
            this.timer.as_mut().reset(Instant::now() + limit);
            this.armed = phase;
        }
        if this.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if phase == HEAD {
            this.answer(cx, Refusal::RequestTimeout);
        }
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            if phase == HEAD {
                "request head not complete within request_header_timeout"
            } else {
                "no request within client_idle_timeout"
            },
        )))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora_core::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Guarded {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: &[&[u8]]) -> u8 {
        let guard = Guard::default();
        let mut scan = Scan::default();
        for c in chunks {
            saw(&guard, &mut scan, c);
        }
        guard.phase.load(Ordering::Relaxed)
    }

    #[test]
    fn the_blank_line_ends_the_head_across_reads() {
        assert_eq!(feed(&[]), IDLE);
        assert_eq!(feed(&[b"G"]), HEAD);
        assert_eq!(feed(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]), BODY);
        assert_eq!(feed(&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n\r", b"\n"]), BODY);
        assert_eq!(feed(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r"]), HEAD);
        assert_eq!(feed(&[b"a\r\r\n\r\n"]), BODY);
        // An h2c preface ends with a blank line too: h2 framing takes over.
        assert_eq!(feed(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]), BODY);
        let guard = Guard::default();
        let mut scan = Scan::default();
        assert_eq!(saw(&guard, &mut scan, b"GET / HTTP/1.1\r\n\r\n"), 18);
        guard.await_request();
        assert_eq!(guard.phase.load(Ordering::Relaxed), WAIT);
        assert_eq!(saw(&guard, &mut scan, b"GE"), 2, "a new head counts from zero");
        assert_eq!(
            guard.phase.load(Ordering::Relaxed),
            HEAD,
            "re-armed for the next request"
        );
        assert_eq!(saw(&guard, &mut scan, b"T"), 3);
    }
}
