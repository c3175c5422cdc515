//! HTTP/1.1 upgrades (WebSocket and any other `Upgrade:` protocol).
//!
//! Pingora 0.9.1's own upgrade path can tear a tunnel down right after a successful
//! `101`: its upstream half may read the `101` before it has consumed the upgrade
//! request's empty body, and then takes the end of that body for the end of the tunnel
//! (about one WebSocket in twenty on loopback). limpet therefore runs upgraded requests
//! itself, still with Pingora's connector and HTTP/1 codecs: a fresh upstream connection
//! per upgrade (never a pooled one), the same backend choice, failover and cookie as any
//! request, then one loop that moves bytes both ways until either side closes or the
//! tunnel has been idle for `server.upstream_read_timeout`.

use bytes::Bytes;
use http::Version;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::v1::client::HttpSession as Upstream;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::attempt::{upgrade_peer_for, AfterConnectFailure, Attempt};
use crate::exchange::{decorate_response, forwarding_headers, record, refuse, Refusal, Via};
use crate::shared::Shared;
use crate::snapshot::Snapshot;

/// Informational responses (`100 Continue`, `103`) skipped before the real answer.
const MAX_INFORMATIONAL: usize = 8;

/// Proxies one upgrade request to the end of its tunnel. Always answers the client,
/// so it returns `Ok(true)` ("response written") unless the client itself failed.
pub(crate) async fn tunnel(
    shared: &Shared,
    connector: &TransportConnector,
    session: &mut Session,
    attempt: &mut Attempt,
    via: Via,
    snap: &Snapshot,
    request_id: Option<&http::HeaderValue>,
) -> Result<bool> {
    let pool_index = attempt.pool;
    let Some(pool) = attempt.pool(snap) else {
        return refuse(shared, Some(snap), pool_index, via, session, Refusal::NoRoute).await;
    };
    let mut upstream = loop {
        let Some(i) = attempt.next_attempt(pool) else {
            return refuse(shared, Some(snap), pool_index, via, session, Refusal::NoBackend).await;
        };
        let peer = upgrade_peer_for(snap, pool, i);
        match connector.new_stream(&peer).await {
            Ok(stream) => {
                let mut up = Upstream::new_with_options(stream, &peer);
                up.read_timeout = peer.options.read_timeout;
                // A backend that stops reading counts like one that stops answering.
                up.write_timeout = peer.options.read_timeout;
                break up;
            }
            Err(e) => {
                tracing::debug!(backend = %pool.backends[i].id, error = %e, "upgrade: connect failed");
                match attempt.connect_failed(pool, &e) {
                    AfterConnectFailure::Retry => continue,
                    AfterConnectFailure::Local(local) => {
                        shared.local_error(local, &e);
                        let refusal = Refusal::LocalResources;
                        return refuse(shared, Some(snap), pool_index, via, session, refusal).await;
                    }
                    AfterConnectFailure::Strict => {
                        return refuse(
                            shared,
                            Some(snap),
                            pool_index,
                            via,
                            session,
                            Refusal::SessionBackendDown,
                        )
                        .await
                    }
                    AfterConnectFailure::GiveUp => {
                        return refuse(
                            shared,
                            Some(snap),
                            pool_index,
                            via,
                            session,
                            Refusal::ConnectFailed,
                        )
                        .await
                    }
                }
            }
        }
    };

    let mut req = session.req_header().clone();
    req.set_version(Version::HTTP_11);
    let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    forwarding_headers(peer, via, &mut req)?;
    if let Some(id) = request_id {
        req.insert_header("x-request-id", id.clone())?;
    }
    // The request head, then any body the upgrade request carries: it precedes the
    // switch (RFC 9110 §7.8). Each step only if the one before reached the backend.
    let mut sent = upstream.write_request_header(Box::new(req)).await.is_ok();
    while sent {
        match session.read_request_body().await? {
            Some(chunk) => sent = upstream.write_body(&chunk).await.is_ok(),
            None => break,
        }
    }
    sent = sent && upstream.finish_body().await.is_ok();
    let head = if sent {
        response_head(&mut upstream).await
    } else {
        None
    };
    let Some(mut head) = head else {
        return refuse(
            shared,
            Some(snap),
            pool_index,
            via,
            session,
            Refusal::UpstreamError,
        )
        .await;
    };
    record(shared, snap, attempt).await;
    decorate_response(snap, attempt, via, &mut *head)?;
    session.write_response_header(head, false).await?;

    if upstream.was_upgraded() {
        relay(session, &mut upstream, snap.config.server.upstream_read_timeout).await;
    } else {
        // The backend refused the upgrade: an ordinary response, framed by its headers.
        // If the backend fails in the middle of it, the error stands: the client's
        // connection closes without the body's end, so a truncated response never
        // looks complete, and passive health counts the failure with the request.
        loop {
            match upstream.read_body_bytes().await {
                Ok(Some(chunk)) => session.write_response_body(Some(chunk), false).await?,
                Ok(None) => break,
                Err(e) => {
                    upstream.shutdown().await;
                    return Err(e.into_up());
                }
            }
        }
    }
    // Ends the response (for an upgraded session: closes the client connection).
    let _ = session.write_response_body(None, true).await;
    upstream.shutdown().await;
    Ok(true)
}

/// The backend's final response head (a 101, or the refusal), past up to
/// `MAX_INFORMATIONAL` interim ones; `None` when it answers nothing usable.
async fn response_head(upstream: &mut Upstream) -> Option<Box<ResponseHeader>> {
    for _ in 0..MAX_INFORMATIONAL {
        match upstream.read_resp_header_parts().await {
            Ok(h) if h.status.is_informational() && h.status != 101 => continue,
            Ok(h) => return Some(h),
            Err(e) => {
                tracing::debug!(error = %e, "upgrade: no response from backend");
                return None;
            }
        }
    }
    None
}

/// One step of the tunnel.
enum Step {
    FromClient(Option<Bytes>),
    FromBackend(Option<Bytes>),
}

/// Moves bytes both ways until either side closes, fails, or both stay silent for `idle`.
async fn relay(session: &mut Session, upstream: &mut Upstream, idle: std::time::Duration) {
    upstream.maybe_upgrade_body_writer();
    // The codec's own per-read timeout would end a tunnel that is idle in one
    // direction only; the idle limit below covers both directions at once.
    upstream.read_timeout = None;
    loop {
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                r = session.read_request_body() => Step::FromClient(r.ok().flatten()),
                r = upstream.read_body_bytes() => Step::FromBackend(r.ok().flatten()),
            }
        })
        .await;
        let sent = match step {
            Ok(Step::FromClient(Some(data))) => upstream.write_body(&data).await.is_ok(),
            Ok(Step::FromBackend(Some(data))) => session.write_response_body(Some(data), false).await.is_ok(),
            // Closed by either side, a read error, or idle for too long.
            Ok(Step::FromClient(None) | Step::FromBackend(None)) | Err(_) => false,
        };
        if !sent {
            return;
        }
    }
}
