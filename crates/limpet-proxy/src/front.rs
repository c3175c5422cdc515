//! What every client connection goes through before an HTTP engine sees it: the
//! connection limit, the PROXY header of a plain listener that expects one, and the
//! idle and request-head deadlines of [`crate::deadline`]. One [`Front`] per listener.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::{GetSocketDigest, Stream};
use pingora_core::server::ShutdownWatch;

use crate::deadline::Guarded;
use crate::h1::H1;
use crate::proxy_protocol::accept;
use crate::shared::{OpenConnection, Shared};

/// The application in front of a listener: reads the PROXY header first when the
/// listener expects one (plain listeners; TLS listeners read it before the handshake
/// in [`BeforeTls`](crate::BeforeTls)), waits for the first request's bytes under the
/// idle deadline, then hands the connection to its engine: HTTP/2 (ALPN h2, or the h2c
/// preface on a listener that takes it) to Pingora's proxy (`inner`), HTTP/1 to
/// limpet's own engine ([`H1`]).
///
/// A connection that has not sent a request yet holds its stream and this future
/// only, not an engine's buffers.
pub struct Front<A> {
    pub shared: Arc<Shared>,
    pub listener: usize,
    /// Read a PROXY header before the first request.
    pub proxy_protocol: bool,
    /// Pingora's HTTP proxy, for HTTP/2.
    pub inner: Arc<A>,
    /// limpet's HTTP/1 engine ([`crate::h1`]).
    pub h1: Arc<H1>,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Front<A> {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // Above max_connections the connection closes at once; established ones stay.
        let (_open, mut guarded) = {
            // One snapshot for the connection's set-up (an Arc: the PROXY read awaits).
            let snap = self.shared.current.load_full();
            let open = OpenConnection::admit(&self.shared, &snap, self.listener)?;
            if self.proxy_protocol {
                // The whole header within client_idle_timeout, as a request's start: a
                // peer that sends nothing, or stalls mid-header, cannot hold a slot.
                let idle = snap.config.server.client_idle_timeout;
                let header = accept(&self.shared, &snap, self.listener, stream.as_mut());
                tokio::time::timeout(idle, header).await.ok()?.ok()?;
            }
            let server = &snap.config.server;
            let hsts = snap.listeners.get(self.listener).and_then(|l| l.hsts.clone());
            let guarded = Box::new(Guarded::new(
                stream,
                (server.client_idle_timeout, server.request_header_timeout),
                server.max_request_header_bytes,
                (self.shared.clone(), hsts),
            ));
            (open, guarded)
        };
        if guarded.is_h2() {
            return ServerApp::process_new(&self.inner, guarded, shutdown).await;
        }
        // Stopping: a connection that has not sent a request closes now.
        let mut down = shutdown.clone();
        if *down.borrow() {
            return None;
        }
        let first = tokio::select! {
            biased;
            first = guarded.next_request() => matches!(first, Ok(true)),
            _ = down.changed() => false,
        };
        if !first {
            return None;
        }
        let h2c = self.inner.server_options().is_some_and(|o| o.h2c);
        // Pingora's HTTP/2 path takes an h2c connection (its peek is answered from the
        // bytes just read).
        if h2c && guarded.starts_with_preface().await.ok()? {
            return ServerApp::process_new(&self.inner, guarded, shutdown).await;
        }
        let peer = guarded
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        self.h1.serve(guarded, peer, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
