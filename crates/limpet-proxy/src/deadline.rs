//! Deadlines on a client connection that Pingora 0.9.1 does not enforce: it times out
//! each read of a request head (60 s, restarted by every byte), so a client sending one
//! byte a second holds a connection forever (slowloris), and a connection that never
//! sends a request lives 60 s whatever `client_idle_timeout` says.
//!
//! [`Guarded`] wraps every client stream. While the connection waits for a request it
//! must start one within `client_idle_timeout` (else it is closed silently); once a
//! request's first byte arrived, its whole head (up to the blank line) must arrive within
//! `request_header_timeout`, else limpet answers 408 and closes. Both deadlines re-arm for
//! every request of a kept-alive connection ([`Guarded::next_request`]), which waits for
//! the request's first bytes before Pingora sets up anything for it. A pipelined request
//! already read with the one before it is under Pingora's keep-alive timeout instead.
//!
//! HTTP/2 connections (ALPN h2, or h2c) pass the same two deadlines up to the end of
//! the client's preface (`PRI * HTTP/2.0\r\n\r\n`, whose blank line ends the "head"),
//! with no HTTP/1 answer; after it, Pingora's HTTP/2 idle timeout (set to
//! `client_idle_timeout`) closes a connection with no stream in flight. Pingora peeks for
//! the h2c preface with a blocking `read_exact` on the socket; [`Guarded`] answers that
//! peek itself, under its deadlines, and replays the bytes to the reader after.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
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
/// The rest of the exchange, and a pipelined request read with the one before it: no
/// deadline of ours.
const BODY: u8 = 2;
/// `armed` when the timer is set for no phase: the next wait sets it afresh.
const UNARMED: u8 = u8::MAX;
/// The most [`Guarded::next_request`] reads at once: what Pingora's own first read of a
/// request head takes.
const FIRST_READ: usize = 4096;

/// A client stream under the idle and request-head deadlines.
pub struct Guarded {
    inner: Stream,
    /// IDLE, HEAD or BODY.
    phase: u8,
    idle: Duration,
    head: Duration,
    timer: Pin<Box<Sleep>>,
    /// The phase the timer was set for.
    armed: u8,
    /// Where the current request head is.
    scan: Scan,
    /// The largest head allowed.
    max_head: usize,
    /// Counts limpet's answers; the listener's HSTS value for them.
    shared: Arc<Shared>,
    hsts: Option<String>,
    /// An HTTP/2 connection: no HTTP/1 answers, no head size limit (the h2 library
    /// bounds header blocks).
    h2: bool,
    /// Bytes read ahead by [`Peek::try_peek`], given to the next reads first.
    replay: Vec<u8>,
    replay_at: usize,
}

impl Guarded {
    /// Guards `inner`: a request must start within `idle`, its head must arrive within
    /// `head` and be at most `max_head` bytes.
    pub fn new(
        inner: Stream,
        (idle, head): (Duration, Duration),
        max_head: usize,
        (shared, hsts): (Arc<Shared>, Option<String>),
    ) -> Self {
        let h2 = inner.selected_alpn_proto() == Some(ALPN::H2);
        Self {
            shared,
            hsts,
            h2,
            replay: Vec::new(),
            replay_at: 0,
            inner,
            phase: IDLE,
            idle,
            head,
            timer: Box::pin(tokio::time::sleep(idle)),
            armed: IDLE,
            scan: Scan::default(),
            max_head,
        }
    }

    /// Whether the client chose HTTP/2 in the TLS handshake (ALPN).
    pub fn is_h2(&self) -> bool {
        self.h2
    }

    /// Whether the connection starts with the HTTP/2 preface (h2c with prior
    /// knowledge), read under the deadlines and kept for the reads that follow.
    pub async fn starts_with_preface(&mut self) -> std::io::Result<bool> {
        let mut start = [0u8; H2_PREFACE.len()];
        self.try_peek(&mut start).await?;
        Ok(start == H2_PREFACE)
    }

    /// Waits for the first bytes of the connection's next request, under the idle
    /// deadline and then the head deadline, afresh for every request; they are kept for
    /// the reads that follow. A waiting connection thus holds no request buffer and none
    /// of Pingora's request state. `Ok(false)`: the client closed; `Err`: a deadline
    /// passed (after a 408 once the head had started) or the connection broke.
    pub async fn next_request(&mut self) -> std::io::Result<bool> {
        if self.replay_at < self.replay.len() {
            return Ok(true);
        }
        self.phase = IDLE;
        self.armed = UNARMED;
        std::future::poll_fn(|cx| {
            // On the stack for this poll only: nothing is held while the client is
            // silent. Left uninitialised: zeroing 4 KiB twice a request costs more than
            // the read.
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut rb = ReadBuf::uninit(&mut chunk);
            ready!(self.poll_guarded(cx, &mut rb))?;
            self.replay = rb.filled().to_vec();
            self.replay_at = 0;
            Poll::Ready(Ok(!self.replay.is_empty()))
        })
        .await
    }
}

/// Where the head scan is: a partial "\r\n\r\n" carried from one read to the next, the
/// head's size so far, and whether it is still an HTTP/2 preface (whose "head" ends at
/// its second blank line).
#[derive(Default)]
struct Scan {
    matched: u8,
    head_bytes: usize,
    not_preface: bool,
}

/// Follows the bytes just read: the first byte starts the head, the blank line ends
/// it. Returns the size of the head so far.
fn saw(phase: &mut u8, scan: &mut Scan, bytes: &[u8]) -> usize {
    if bytes.is_empty() || *phase == BODY {
        return 0;
    }
    if *phase == IDLE {
        *phase = HEAD;
        *scan = Scan::default();
    }
    for &b in bytes {
        // Settled within the first bytes of an HTTP/1 head; no compare after that.
        if !scan.not_preface {
            scan.not_preface = H2_PREFACE.get(scan.head_bytes) != Some(&b);
        }
        scan.head_bytes += 1;
        scan.matched = match (scan.matched, b) {
            (0 | 2, b'\r') => scan.matched + 1,
            (1 | 3, b'\n') => scan.matched + 1,
            (_, b'\r') => 1,
            _ => 0,
        };
        if scan.matched == 4 {
            if !scan.not_preface && scan.head_bytes < H2_PREFACE.len() {
                // "PRI * HTTP/2.0\r\n\r\n": the preface goes on to "SM\r\n\r\n".
                scan.matched = 0;
                continue;
            }
            *phase = BODY;
            break;
        }
    }
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
        if self.h2 {
            return;
        }
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
        if this.replay_at < this.replay.len() {
            let n = buf.remaining().min(this.replay.len() - this.replay_at);
            buf.put_slice(&this.replay[this.replay_at..this.replay_at + n]);
            this.replay_at += n;
            if this.replay_at == this.replay.len() {
                this.replay = Vec::new();
                this.replay_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        this.poll_guarded(cx, buf)
    }
}

impl Guarded {
    /// Reads from the client under the deadlines, following the request head.
    fn poll_guarded(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let size = saw(&mut this.phase, &mut this.scan, &buf.filled()[before..]);
                if size > this.max_head && !this.h2 {
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
        let phase = this.phase;
        if phase == BODY {
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

/// The client preface of an HTTP/2 connection with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[async_trait]
impl Peek for Guarded {
    /// Pingora 0.9.1 peeks only to tell an h2c preface from HTTP/1. The bytes are read
    /// under the deadlines (a silent client is closed, a slow one answered 408) and kept
    /// for the reads that follow. The peek ends early, with what it has, as soon as the
    /// bytes cannot be the preface or the client stops sending: a short HTTP/1 request
    /// is not held waiting for bytes that never come.
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let mut chunk = [0u8; 64];
        while self.replay.len() < buf.len() && H2_PREFACE.starts_with(&self.replay) {
            let want = (buf.len() - self.replay.len()).min(chunk.len());
            let n = std::future::poll_fn(|cx| {
                let mut rb = ReadBuf::new(&mut chunk[..want]);
                self.poll_guarded(cx, &mut rb).map_ok(|()| rb.filled().len())
            })
            .await?;
            if n == 0 {
                break;
            }
            self.replay.extend_from_slice(&chunk[..n]);
        }
        let n = self.replay.len().min(buf.len());
        buf[..n].copy_from_slice(&self.replay[..n]);
        buf[n..].fill(0);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: &[&[u8]]) -> u8 {
        let mut phase = IDLE;
        let mut scan = Scan::default();
        for c in chunks {
            saw(&mut phase, &mut scan, c);
        }
        phase
    }

    #[test]
    fn the_blank_line_ends_the_head_across_reads() {
        assert_eq!(feed(&[]), IDLE);
        assert_eq!(feed(&[b"G"]), HEAD);
        assert_eq!(feed(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]), BODY);
        assert_eq!(feed(&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n\r", b"\n"]), BODY);
        assert_eq!(feed(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r"]), HEAD);
        assert_eq!(feed(&[b"a\r\r\n\r\n"]), BODY);
        // An HTTP/2 preface is a head up to its second blank line; h2 framing follows.
        assert_eq!(feed(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]), BODY);
        assert_eq!(feed(&[b"PRI * HTTP/2.0\r\n\r\n"]), HEAD);
        assert_eq!(feed(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r", b"\n\0\0"]), BODY);
        assert_eq!(
            feed(&[b"GET / HTTP/1.1\r\n\r\n"]),
            BODY,
            "18 bytes, not a preface"
        );
        let mut phase = IDLE;
        let mut scan = Scan::default();
        assert_eq!(saw(&mut phase, &mut scan, b"GET / HTTP/1.1\r\n\r\n"), 18);
        assert_eq!(phase, BODY);
        assert_eq!(saw(&mut phase, &mut scan, b"GET"), 0, "a body is not a head");
        phase = IDLE;
        assert_eq!(
            saw(&mut phase, &mut scan, b"GE"),
            2,
            "a new head counts from zero"
        );
        assert_eq!(phase, HEAD, "re-armed for the next request");
        assert_eq!(saw(&mut phase, &mut scan, b"T"), 3);
    }
}
