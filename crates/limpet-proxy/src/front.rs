//! What every client connection goes through before Pingora's HTTP proxy sees it: the
//! connection limit, the PROXY header of a plain listener that expects one, and the
//! idle and request-head deadlines of [`crate::deadline`]. One [`Front`] per listener.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;

use crate::deadline::{Guard, Guarded};
use crate::proxy_protocol::accept;
use crate::shared::{OpenConnection, Shared};

/// The application in front of a listener's HTTP proxy: reads the PROXY header first
/// when the listener expects one (plain listeners; TLS listeners read it before the
/// handshake in [`BeforeTls`]), then serves the connection's requests itself, under the
/// idle and request-head deadlines of [`crate::deadline`].
pub struct Front<A> {
    pub shared: Arc<Shared>,
    pub listener: usize,
    /// Read a PROXY header before the first request.
    pub proxy_protocol: bool,
    pub inner: Arc<A>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Front<A> {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // Above max_connections the connection closes at once; established ones stay.
        // One snapshot for the connection's set-up (an Arc: the PROXY read awaits).
        let snap = self.shared.current.load_full();
        let _open = OpenConnection::admit(&self.shared, &snap, self.listener)?;
        if self.proxy_protocol {
            accept(&self.shared, &snap, self.listener, stream.as_mut())
                .await
                .ok()?;
        }
        let guard = Arc::new(Guard::default());
        let server = &snap.config.server;
        let limits = (server.client_idle_timeout, server.request_header_timeout);
        let hsts = snap.listeners.get(self.listener).and_then(|l| l.hsts.clone());
        stream = Box::new(Guarded::new(
            stream,
            guard.clone(),
            limits,
            server.max_request_header_bytes,
            (self.shared.clone(), hsts),
        ));
        // Keep-alive reuse stays inside this connection: the PROXY header came once,
        // and the deadlines re-arm for every request.
        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(stream) = next {
            if *shutdown.borrow() {
                return None;
            }
            guard.await_request();
            next = self.inner.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
