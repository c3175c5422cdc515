//! One active check of one backend, through Pingora's own connector and HTTP/1 client:
//! the same connection path as proxied requests, so a check sees the backend the way a
//! request does (and will speak TLS to it the day the pool does).

use std::net::SocketAddr;

use limpet_config::{CheckKind, HealthCheck};
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;

/// One active check: a TCP connect, or an HTTP/1.1 `GET` whose status must fall in
/// `expect_status`, all within `timeout`. Informational answers (`100`, `103`) are
/// skipped; the connection is never reused.
pub async fn probe(connector: &TransportConnector, addr: SocketAddr, hc: &HealthCheck) -> bool {
    let check = async {
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(hc.timeout);
        let stream = connector.new_stream(&peer).await.ok()?;
        if hc.kind == CheckKind::Tcp {
            return Some(true);
        }
        let mut session = HttpSession::new_with_options(stream, &peer);
        let mut req = RequestHeader::build("GET", hc.path.as_bytes(), Some(4)).ok()?;
        let host = hc.host.clone().unwrap_or_else(|| addr.to_string());
        req.insert_header("host", host).ok()?;
        req.insert_header("user-agent", "limpet-health-check").ok()?;
        req.insert_header("accept", "*/*").ok()?;
        req.insert_header("connection", "close").ok()?;
        session.write_request_header(Box::new(req)).await.ok()?;
        session.finish_body().await.ok()?;
        let (lo, hi) = hc.expect_status;
        for _ in 0..4 {
            let head = session.read_resp_header_parts().await.ok()?;
            let status = head.status.as_u16();
            if !head.status.is_informational() {
                return Some((lo..=hi).contains(&status));
            }
        }
        Some(false)
    };
    matches!(tokio::time::timeout(hc.timeout, check).await, Ok(Some(true)))
}
