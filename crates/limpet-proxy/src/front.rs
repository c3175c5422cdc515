//! What every client connection goes through before Pingora's HTTP proxy sees it: the
//! connection limit, the PROXY header of a plain listener that expects one, and the
//! idle and request-head deadlines of [`crate::deadline`]. One [`Front`] per listener.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{GetSocketDigest, Stream};
use pingora_core::server::ShutdownWatch;

use crate::deadline::Guarded;
use crate::proxy_protocol::accept;
use crate::shared::{OpenConnection, Shared};

/// The application in front of a listener's HTTP proxy: reads the PROXY header first
/// when the listener expects one (plain listeners; TLS listeners read it before the
/// handshake in [`BeforeTls`]), then serves the connection's requests itself, under the
/// idle and request-head deadlines of [`crate::deadline`].
///
/// For HTTP/1 it runs the keep-alive loop that Pingora's own `ServerApp` would run,
/// with one difference: each request's session is made only once the request's first
/// bytes arrived ([`Guarded::next_request`]). A connection waiting for a request holds
/// its stream and this loop, not Pingora's session, header buffer and request futures.
pub struct Front<A> {
    pub shared: Arc<Shared>,
    pub listener: usize,
    /// Read a PROXY header before the first request.
    pub proxy_protocol: bool,
    pub inner: Arc<A>,
    /// limpet's HTTP/1 engine ([`crate::h1`]); `None` leaves HTTP/1 to Pingora's own
    /// proxy (`LIMPET_ENGINE=pingora`, kept for side-by-side measurements).
    pub h1: Option<Arc<crate::h1::H1>>,
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
        let options = self.inner.server_options();
        let (h2c, custom) = options.map_or((false, false), |o| (o.h2c, o.force_custom));
        if guarded.is_h2() || custom {
            return ServerApp::process_new(&self.inner, guarded, shutdown).await;
        }
        // One receiver for the connection's waits, not one per request.
        let mut down = shutdown.clone();
        if !until_request(&mut guarded, &mut down).await {
            return None;
        }
        if h2c {
            // Pingora's HTTP/2 path takes an h2c connection (its peek is answered from
            // the bytes just read).
            if guarded.starts_with_preface().await.ok()? {
                return ServerApp::process_new(&self.inner, guarded, shutdown).await;
            }
        }
        if let Some(h1) = &self.h1 {
            let peer = guarded
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
            h1.serve(guarded, peer, shutdown).await;
            return None;
        }
        let mut session = ServerSession::new_http1(guarded);
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        session.set_keepalive_reuses_remaining(options.and_then(|o| o.keepalive_request_limit));
        loop {
            let reused = self.inner.process_new_http(session, shutdown).await?;
            let (stream, settings) = reused.consume();
            let mut guarded = downcast(stream)?;
            if settings
                .as_ref()
                .is_some_and(HttpPersistentSettings::has_pipelined_prefix)
            {
                guarded.expect_head();
            } else if !until_request(&mut guarded, &mut down).await {
                return None;
            }
            session = ServerSession::new_http1(guarded);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// The stream `Front` wrapped, back from Pingora (which hands back the stream it was
/// given, so this does not fail).
fn downcast(stream: Stream) -> Option<Box<Guarded>> {
    stream.into_any().downcast::<Guarded>().ok()
}

/// Waits for the next request's first bytes; false when the client closed, a deadline
/// passed, or the server is shutting down (idle connections close at once, as
/// Pingora's own keep-alive wait does).
async fn until_request(guarded: &mut Guarded, down: &mut ShutdownWatch) -> bool {
    if *down.borrow() {
        return false;
    }
    tokio::select! {
        biased;
        first = guarded.next_request() => matches!(first, Ok(true)),
        _ = down.changed() => false,
    }
}
