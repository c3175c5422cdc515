//! One active check of one backend, through Pingora's own connectors and HTTP clients:
//! the same connection path, protocol (HTTP/1.1, HTTP/2, h2c) and TLS settings as the
//! pool's proxied requests, so a check sees the backend the way a request does.

use limpet_config::{CheckKind, HealthCheck};
use pingora_core::connectors::http::Connector;
use pingora_core::connectors::TransportConnector;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_http::RequestHeader;

/// Opens the connections of checks.
pub struct Connectors {
    pub tcp: TransportConnector,
    pub http: Connector,
}

impl Connectors {
    pub fn new() -> Self {
        Self {
            tcp: TransportConnector::new(None),
            http: Connector::new(None),
        }
    }
}

/// One active check of `peer`: a connection (with its TLS handshake when the pool
/// encrypts), or an HTTP `GET` whose status must fall in `expect_status`, all within
/// `timeout`. The connection is never reused.
pub async fn probe(connectors: &Connectors, mut peer: HttpPeer, hc: &HealthCheck) -> bool {
    peer.options.connection_timeout = Some(hc.timeout);
    let check = async {
        if hc.kind == CheckKind::Tcp {
            return Some(connectors.tcp.new_stream(&peer).await.is_ok());
        }
        let (mut session, _) = connectors.http.get_http_session(&peer).await.ok()?;
        let mut req = RequestHeader::build("GET", hc.path.as_bytes(), Some(4)).ok()?;
        let host = hc.host.clone().unwrap_or_else(|| peer.address().to_string());
        req.insert_header("host", host).ok()?;
        req.insert_header("user-agent", "limpet-health-check").ok()?;
        req.insert_header("accept", "*/*").ok()?;
        if session.as_http1().is_some() {
            req.insert_header("connection", "close").ok()?;
        }
        session.write_request_header(Box::new(req)).await.ok()?;
        session.finish_request_body().await.ok()?;
        session.read_response_header().await.ok()?;
        let status = session.response_header()?.status.as_u16();
        let (lo, hi) = hc.expect_status;
        session.shutdown().await;
        Some((lo..=hi).contains(&status))
    };
    matches!(tokio::time::timeout(hc.timeout, check).await, Ok(Some(true)))
}
