//! Connections to backends for the HTTP/1 engine: streams from Pingora's connector
//! (TCP, TLS with the pool's verification and client certificate, ALPN), spoken to by
//! hyper's HTTP/1 or HTTP/2 client, and kept for reuse per peer.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::Result;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::body::UpBody;

/// Idle connections kept per peer, at most (each holds hyper's buffers and a task).
const IDLE_PER_PEER: usize = 64;
/// An idle connection unused this long is closed (HAProxy's `pool-purge-delay` is
/// 5 s): a burst's connections do not outlive it by much.
const IDLE_FOR: Duration = Duration::from_secs(10);
/// How often idle connections are looked over.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How requests are sent on a connection.
pub enum Sender {
    H1(http1::SendRequest<UpBody>),
    H2(http2::SendRequest<UpBody>),
}

/// A connection to a backend, ready for one request.
pub struct Conn {
    sender: Sender,
    /// Bytes read from the backend on this connection so far.
    read: Arc<AtomicU64>,
    /// It served a request before this one.
    pub reused: bool,
    key: u64,
    /// Connection-level HTTP/1 upgrades (WebSocket) were asked for.
    upgrades: bool,
}

impl Conn {
    /// Bytes the backend has sent on this connection so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    pub fn is_h2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }

    pub async fn send(
        &mut self,
        req: Request<UpBody>,
    ) -> std::result::Result<Response<Incoming>, hyper::Error> {
        match &mut self.sender {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
        }
    }
}

struct Idle {
    sender: Sender,
    read: Arc<AtomicU64>,
    since: Instant,
}

/// The backend connections of one listener's engine.
pub struct Upstreams {
    connector: TransportConnector,
    idle: Mutex<HashMap<u64, Vec<Idle>>>,
    /// The sweeper of idle connections runs (started with the first one kept).
    sweeping: AtomicBool,
}

impl Upstreams {
    pub fn new() -> Self {
        Self {
            connector: TransportConnector::new(None),
            idle: Mutex::new(HashMap::new()),
            sweeping: AtomicBool::new(false),
        }
    }

    /// A connection to `peer`: an idle one that is ready, or a new one (always new
    /// when `fresh`, or for an upgrade, which takes the connection over).
    pub async fn get(&self, peer: &HttpPeer, fresh: bool, upgrade: bool) -> Result<Conn> {
        let key = peer.reuse_hash();
        if !fresh && !upgrade {
            if let Some(conn) = self.take(key) {
                return Ok(conn);
            }
        }
        // Boxed: connecting (TCP, TLS, the handshake) holds kilobytes of state that the
        // common case, a reused connection, would otherwise carry and copy too.
        Box::pin(self.connect(peer, key, upgrade)).await
    }

    /// A new connection to `peer`.
    async fn connect(&self, peer: &HttpPeer, key: u64, upgrade: bool) -> Result<Conn> {
        let stream = self.connector.new_stream(peer).await?;
        let h2 = match stream.selected_alpn_proto() {
            Some(alpn) => alpn == ALPN::H2,
            None => !peer.is_tls() && peer.options.alpn == ALPN::H2,
        };
        let read = Arc::new(AtomicU64::new(0));
        let io = TokioIo::new(Metered {
            inner: stream,
            read: read.clone(),
        });
        let handshake = |e: hyper::Error| {
            pingora_error::Error::because(pingora_error::ErrorType::ConnectError, "HTTP handshake", e)
        };
        let sender = if h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(handshake)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let sender = Sender::H2(sender);
            if let Ok(mut idle) = self.idle.lock() {
                // One HTTP/2 connection per peer carries every request.
                idle.entry(key).or_default().push(Idle {
                    sender: clone_h2(&sender),
                    read: read.clone(),
                    since: Instant::now(),
                });
            }
            sender
        } else {
            let (sender, conn) = http1::Builder::new()
                .max_buf_size(1024 * 1024)
                .handshake(io)
                .await
                .map_err(handshake)?;
            if upgrade {
                tokio::spawn(async move {
                    let _ = conn.with_upgrades().await;
                });
            } else {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            Sender::H1(sender)
        };
        Ok(Conn {
            sender,
            read,
            reused: false,
            key,
            upgrades: upgrade,
        })
    }

    fn take(&self, key: u64) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&key)?;
        list.retain(Idle::usable);
        let at = list.iter().position(|c| match &c.sender {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        })?;
        let (sender, read) = match &list[at].sender {
            Sender::H2(_) => {
                // Shared, not taken: in use as long as requests come.
                list[at].since = Instant::now();
                (clone_h2(&list[at].sender), list[at].read.clone())
            }
            Sender::H1(_) => {
                let c = list.swap_remove(at);
                (c.sender, c.read)
            }
        };
        Some(Conn {
            sender,
            read,
            reused: true,
            key,
            upgrades: false,
        })
    }

    /// Puts an HTTP/1 connection back once its response head came: it is ready again
    /// when the response body has been read, and only then taken.
    pub fn put(self: &Arc<Self>, conn: Conn) {
        let Sender::H1(_) = conn.sender else {
            return;
        };
        if conn.upgrades {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(conn.key).or_default();
            if list.len() < IDLE_PER_PEER {
                list.push(Idle {
                    sender: conn.sender,
                    read: conn.read,
                    since: Instant::now(),
                });
            }
        }
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }
}

impl Idle {
    /// Still open, and not idle for too long.
    fn usable(&self) -> bool {
        let closed = match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        };
        !closed && self.since.elapsed() < IDLE_FOR
    }
}

/// Closes idle connections unused for [`IDLE_FOR`], every [`SWEEP_EVERY`], for as long
/// as the engine exists.
async fn sweep(upstreams: Weak<Upstreams>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(upstreams) = upstreams.upgrade() else {
            return;
        };
        let swept = upstreams.idle.lock().map(|mut idle| {
            idle.retain(|_, list| {
                list.retain(Idle::usable);
                !list.is_empty()
            });
        });
        drop(swept);
    }
}

impl Default for Upstreams {
    fn default() -> Self {
        Self::new()
    }
}

fn clone_h2(sender: &Sender) -> Sender {
    match sender {
        Sender::H2(s) => Sender::H2(s.clone()),
        Sender::H1(_) => unreachable!("only HTTP/2 senders are shared"),
    }
}

/// A backend stream that counts the bytes read from it: whether a backend sent any
/// byte of its response decides whether a failed request may go elsewhere.
struct Metered {
    inner: Stream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Metered {
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
