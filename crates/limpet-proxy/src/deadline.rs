//! Deadlines on a client connection that neither HTTP engine enforces as limpet wants:
//! Pingora 0.9.1 times out each read of a request head (60 s, restarted by every byte),
//! so a client sending one byte a second holds a connection forever (slowloris); hyper's
//! header timeout also runs while a kept-alive connection idles, and closes without a
//! `408`.
//!
//! [`Guarded`] wraps every client stream. While the connection waits for a request it
//! must start one within `client_idle_timeout` (else it is closed silently); once a
//! request's first byte arrived, its whole head must arrive within
//! `request_header_timeout`, else limpet answers 408 and closes; a head that reaches
//! `max_request_header_bytes` while the parser still asks for more gets 431. Both
//! deadlines re-arm for every request of a kept-alive connection.
//!
//! The guard keeps no copy of HTTP/1 framing. Where a head ends and when a response is
//! over is the engine's word, told through the connection's [`Phase`]
//! ([`Phase::head_parsed`], [`Phase::next_request`]): a head the parser takes (bare `\n`
//! line ends included) is complete for the deadlines too. Until then every read is one
//! the parser asked for because the head was not complete, so the bytes read are head.
//! The guard answers only in that phase, and never over response bytes not yet flushed:
//! never once a response is under way.
//!
//! HTTP/2 connections (ALPN h2, or h2c) pass the same two deadlines up to the end of
//! the client's preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`), with no HTTP/1 answer,
//! nor one to a client that stalls in the middle of a preface; after it, Pingora's
//! HTTP/2 idle timeout (set to `client_idle_timeout`) closes a connection with no stream
//! in flight. Pingora peeks for the h2c preface with a blocking `read_exact` on the
//! socket; [`Guarded`] answers that peek itself, under its deadlines, and replays the
//! bytes to the reader after.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::l4::ext::get_tcp_info;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::exchange::{raw_refusal, Refusal};
use crate::shared::Shared;

/// Where the connection is, as the guard sees it: the low two bits of [`Phase`]'s word;
/// the bits above count the requests of the connection, so that each one's wait arms
/// the timer afresh.
/// From accept (or the end of the previous response) to the first byte:
/// `client_idle_timeout`.
const IDLE: u32 = 0;
/// From a request's first byte until the parser has its head: `request_header_timeout`.
const HEAD: u32 = 1;
/// The rest of the exchange: no deadline of ours.
const BODY: u32 = 2;
const PHASE: u32 = 3;
/// `armed` when the timer is set for no phase: the next wait sets it afresh.
const UNARMED: u32 = u32::MAX;

/// The connection's phase, shared between its [`Guarded`] stream and the HTTP engine
/// that reads through it: the engine's parser is the one that knows where a head ends
/// and when a response is over, and says so here.
#[derive(Clone, Default)]
pub struct Phase(Arc<AtomicU32>);

impl Phase {
    fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, phase: u32) {
        let word = self.get();
        self.0.store((word & !PHASE) | phase, Ordering::Relaxed);
    }

    /// The parser has the request's head: the head deadline and size limit are over.
    pub fn head_parsed(&self) {
        self.set(BODY);
    }

    /// The response is over: the connection waits for its next request, under the idle
    /// deadline, then the head deadline from that request's first byte read.
    pub fn next_request(&self) {
        // The next multiple of four: the count goes up, the phase bits are IDLE's.
        self.0
            .store((self.get() | PHASE).wrapping_add(1), Ordering::Relaxed);
    }
}
/// The most [`Guarded::next_request`] reads at once (a typical request head).
const FIRST_READ: usize = 4096;

/// A client stream under the idle and request-head deadlines.
pub struct Guarded {
    inner: Stream,
    /// IDLE, HEAD or BODY, and the request count. Shared with the engine, which owns
    /// the stream and says where heads and responses end ([`Phase`]); read and written
    /// by the connection's own task.
    phase: Phase,
    idle: Duration,
    head: Duration,
    timer: Pin<Box<Sleep>>,
    /// The phase word the timer was set for.
    armed: u32,
    /// Bytes were written and not flushed yet: limpet's own answer would land in the
    /// middle of them, so there is none.
    unflushed: bool,
    /// Set while a write waits on a client that reads nothing (made only then): after
    /// `client_idle_timeout` without progress the write fails and the connection
    /// closes, as HAProxy's `timeout client` does. Progress is the client's
    /// acknowledging bytes (`TCP_INFO`), not only a write completing: the kernel wakes
    /// a writer only once a third of a send buffer of up to megabytes has drained,
    /// which a slow but steady reader can take longer than the timeout to do.
    write_stall: Option<Pin<Box<Sleep>>>,
    /// Bytes the client had acknowledged when the stall timer was last set.
    stall_acked: Option<u64>,
    /// Bytes of the current request head read so far.
    head_bytes: usize,
    /// The current head is, so far, the start of an HTTP/2 preface: not answered as
    /// HTTP/1.
    preface: bool,
    /// The largest head allowed.
    max_head: usize,
    /// Counts limpet's answers; the listener's HSTS value for them.
    shared: Arc<Shared>,
    hsts: Option<String>,
    /// An HTTP/2 connection: no HTTP/1 answers, no head size limit (the h2 library
    /// bounds header blocks); its "head" is the preface.
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
            phase: Phase::default(),
            unflushed: false,
            write_stall: None,
            stall_acked: None,
            idle,
            head,
            timer: Box::pin(tokio::time::sleep(idle)),
            armed: IDLE,
            head_bytes: 0,
            preface: false,
            max_head,
        }
    }

    /// The handle through which an engine says where the connection is.
    pub fn phase(&self) -> Phase {
        self.phase.clone()
    }

    /// Whether the client chose HTTP/2 in the TLS handshake (ALPN).
    pub fn is_h2(&self) -> bool {
        self.h2
    }

    /// Whether the connection starts with the HTTP/2 preface (h2c with prior
    /// knowledge), read under the deadlines and kept for the reads that follow. If it
    /// does, the connection is HTTP/2 from here on.
    pub async fn starts_with_preface(&mut self) -> std::io::Result<bool> {
        let mut start = [0u8; H2_PREFACE.len()];
        self.try_peek(&mut start).await?;
        if start == H2_PREFACE {
            self.h2 = true;
            self.phase.set(BODY);
        }
        Ok(self.h2)
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
        self.phase.set(IDLE);
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

    /// Follows the bytes just read: the first byte of a request starts its head.
    fn saw(&mut self, bytes: &[u8]) {
        let phase = self.phase.get() & PHASE;
        if bytes.is_empty() || phase == BODY {
            return;
        }
        if phase == IDLE {
            self.phase.set(HEAD);
            self.head_bytes = 0;
            self.preface = true;
        }
        // Settled within the first bytes of a head; no compare after that.
        if self.preface {
            let rest = H2_PREFACE.get(self.head_bytes..).unwrap_or_default();
            let n = bytes.len().min(rest.len());
            self.preface = bytes.get(..n) == rest.get(..n);
        }
        self.head_bytes = self.head_bytes.saturating_add(bytes.len());
        if self.h2 && self.head_bytes >= H2_PREFACE.len() {
            self.phase.set(BODY);
        }
    }
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
        if self.h2 || self.preface || self.unflushed {
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
        let word = this.phase.get();
        let phase = word & PHASE;
        if phase == HEAD && !this.h2 && this.head_bytes >= this.max_head {
            // The parser asks for more of a head that is already at the limit: nothing
            // more of it is read.
            this.answer(cx, Refusal::HeaderTooLarge);
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head above max_request_header_bytes",
            )));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw(&buf.filled()[before..]);
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        if phase == BODY {
            return Poll::Pending;
        }
        if word != this.armed {
            let limit = if phase == IDLE { this.idle } else { this.head };
            this.timer.as_mut().reset(Instant::now() + limit);
            this.armed = word;
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

impl Guarded {
    /// Bytes of this connection the client has acknowledged, when the socket says.
    fn acked(&self) -> Option<u64> {
        get_tcp_info(self.inner.id()).ok().map(|i| i.tcpi_bytes_acked)
    }

    /// A write that made progress ends the stall; one that waits keeps its timer.
    fn write_progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.write_stall = None;
            return polled;
        }
        let idle = self.idle;
        if self.write_stall.is_none() {
            self.stall_acked = self.acked();
        }
        let timer = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let acked = self.acked();
        if acked.is_some() && acked != self.stall_acked {
            // The client is reading, only slowly: another period.
            self.stall_acked = acked;
            if let Some(timer) = self.write_stall.as_mut() {
                timer.as_mut().reset(Instant::now() + idle);
                let _ = timer.as_mut().poll(cx);
            }
            return Poll::Pending;
        }
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client read nothing for client_idle_timeout",
        )))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.unflushed = true;
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.write_progress(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        let flushed = ready!(self.write_progress(cx, polled));
        self.unflushed = flushed.is_err();
        Poll::Ready(flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.write_progress(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.unflushed = true;
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.write_progress(cx, polled)
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
