//! One request to a backend through the HTTP/1 engine, attempt after attempt.
//!
//! - A connect failure tries another backend ([`Attempt::connect_failed`]: the pool's
//!   `retries`, a strict pool's pinned session never moved).
//! - A backend that closes or resets before a byte of its response has not answered:
//!   an idempotent request whose body can be replayed goes to another backend
//!   ([`Attempt::dropped_before_answer`]), as HAProxy's `retry-on
//!   all-retryable-errors` and Envoy's `retry_on: reset` do; on a reused connection
//!   (closed by the backend while idle) it goes again to the same backend on a fresh
//!   one ([`Attempt::reused_failed`]). Nothing is retried once a byte came back.
//! - The response head is awaited `upstream_read_timeout` from the last piece of the
//!   request body: a client that stops sending its body gets a `408` and the backend
//!   is not blamed; a backend silent that long gets the request a `504`.
//! - A WebSocket handshake gets a fresh connection; after the backend's `101`, both
//!   connections are handed over and joined by [`tunnel`] until the backend closes (a
//!   client's half-close is passed on) or both stay silent for `upstream_read_timeout`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::request::Parts;
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use pingora_error::ErrorType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::body::{DownBody, Record, Source, Tee, TeeState, UpBody};
use super::upstream::Conn;
use super::H1;
use crate::attempt::{peer_for, upgrade_peer_for, AfterConnectFailure};
use crate::exchange::{self, Refusal};
use crate::request;

/// How waiting for the backend's response head failed.
enum Failed {
    /// The backend stayed silent for `upstream_read_timeout` after the request.
    Timeout,
    /// The client stopped sending its body for that long.
    ClientStalled,
    /// The connection failed (closed, reset, not HTTP).
    Error(hyper::Error),
}

/// Proxies the request with head `parts` and body `body`; `upgrade` is the client
/// connection's hand-over when the request is a WebSocket handshake.
pub(super) async fn proxy(
    h1: &H1,
    mut parts: Parts,
    body: Incoming,
    peer: Option<IpAddr>,
    mut record: Box<Record>,
    upgrade: Option<OnUpgrade>,
) -> Response<DownBody> {
    let snap = record.snap.clone();
    let Some(pool_index) = record.attempt.pool else {
        return h1.refuse(record, None, Refusal::Internal, None);
    };
    let pool = &snap.pools[pool_index];
    let timeout = snap.config.server.upstream_read_timeout;
    if exchange::forwarding_headers(peer, record.via, &mut parts.headers).is_err() {
        return h1.refuse(record, Some(pool_index), Refusal::BadRequest, None);
    }
    if let Some(id) = &record.request_id {
        parts.headers.insert("x-request-id", id.clone());
    }
    request::drop_hop_by_hop(&mut parts.headers, upgrade.is_some());
    let replay = parts.method.is_idempotent();
    let tee = (!body.is_end_stream()).then(|| TeeState::new(body));
    record.body = tee.clone();
    // A retry on the same backend (its reused connection was stale) takes a fresh one.
    let mut same_again = false;
    let (conn, resp) = loop {
        let i = match (same_again, record.attempt.chosen) {
            (true, Some(i)) => i,
            _ => match record.attempt.next_attempt(pool) {
                Some(i) => i,
                None => return h1.refuse(record, Some(pool_index), Refusal::NoBackend, None),
            },
        };
        let peer = if upgrade.is_some() {
            upgrade_peer_for(&snap, pool, i)
        } else {
            peer_for(&snap, pool, i)
        };
        let mut conn = match h1.upstreams.get(&peer, same_again, upgrade.is_some()).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(backend = %pool.backends[i].id, error = %e, "connect failed");
                let refusal = match record.attempt.connect_failed(pool, &e) {
                    AfterConnectFailure::Retry => {
                        same_again = false;
                        continue;
                    }
                    AfterConnectFailure::Strict => Refusal::SessionBackendDown,
                    AfterConnectFailure::GiveUp => Refusal::ConnectFailed,
                    AfterConnectFailure::Local(local) => {
                        h1.shared.local_error(local, &e);
                        Refusal::LocalResources
                    }
                };
                record.error = Some(e.etype().as_str());
                return h1.refuse(record, Some(pool_index), refusal, None);
            }
        };
        record.connected = Some(Instant::now());
        let up = upstream_request(&parts, &tee, conn.is_h2(), peer.is_tls());
        let read_before = conn.read();
        match wait(&mut conn, up, timeout, tee.as_ref()).await {
            Ok(resp) => break (conn, resp),
            Err(Failed::Timeout) => {
                record.upstream_failed(ErrorType::ReadTimedout);
                return h1.refuse(record, Some(pool_index), Refusal::UpstreamTimeout, None);
            }
            Err(Failed::ClientStalled) => {
                record.error = Some(ErrorType::ReadTimedout.as_str());
                return h1.refuse(record, Some(pool_index), Refusal::RequestTimeout, None);
            }
            Err(Failed::Error(e)) => {
                if e.is_user() {
                    // The client's side failed (its body broke off): nothing to blame
                    // the backend for, and nobody to answer.
                    record.error = Some(ErrorType::ReadError.as_str());
                    return h1.refuse(record, Some(pool_index), Refusal::BadRequest, None);
                }
                let unanswered = conn.read() == read_before && !conn.is_h2();
                let replayable = replay
                    && tee
                        .as_ref()
                        .is_none_or(|t| t.lock().is_ok_and(|t| t.replayable()));
                if unanswered && replayable && upgrade.is_none() {
                    if conn.reused {
                        if record.attempt.reused_failed(pool) {
                            same_again = true;
                            continue;
                        }
                    } else if record.attempt.dropped_before_answer(pool) {
                        same_again = false;
                        continue;
                    }
                }
                tracing::debug!(error = %e, "backend failed before its response");
                let kind = if e.is_parse_too_large() {
                    ErrorType::InvalidHTTPHeader
                } else if unanswered {
                    ErrorType::ConnectionClosed
                } else {
                    ErrorType::ReadError
                };
                record.upstream_failed(kind);
                let refusal = if e.is_parse_too_large() {
                    Refusal::ResponseTooLarge
                } else {
                    Refusal::UpstreamError
                };
                return h1.refuse(record, Some(pool_index), refusal, None);
            }
        }
    };
    let (mut head, incoming) = resp.into_parts();
    // A switch of protocols nobody asked for (RFC 9110 §15.2.2): the client would wait
    // on a tunnel that does not exist. The backend answered wrongly: 502.
    let switched = head.status == StatusCode::SWITCHING_PROTOCOLS;
    if switched && upgrade.is_none() {
        record.upstream_failed(ErrorType::InvalidHTTPHeader);
        return h1.refuse(record, Some(pool_index), Refusal::UpstreamError, None);
    }
    if request::fields_bytes(&head.headers) > snap.config.server.max_response_header_bytes {
        record.upstream_failed(ErrorType::InvalidHTTPHeader);
        return h1.refuse(record, Some(pool_index), Refusal::ResponseTooLarge, None);
    }
    record.upstream_status = Some(head.status.as_u16());
    record.responded = Some(Instant::now());
    record.status = head.status.as_u16();
    exchange::record(&h1.shared, &snap, &record.attempt).await;
    request::drop_hop_by_hop(&mut head.headers, switched);
    if exchange::decorate_response(&snap, &record.attempt, record.via, &mut head.headers).is_err() {
        return h1.refuse(record, Some(pool_index), Refusal::Internal, None);
    }
    if switched {
        // The handshake is done: both connections are handed over to the tunnel,
        // which holds the request's record (and its in-flight slot) to its end.
        drop(incoming);
        if let (Some(client), Some(backend)) = (upgrade, head.extensions.remove::<OnUpgrade>()) {
            record.phase = None;
            tokio::spawn(tunnel((client, backend), conn, timeout, record));
        }
        return Response::from_parts(head, DownBody::own(None, None));
    }
    // Ready for the next request once this body has been read (a connection made for
    // an upgrade is never kept).
    h1.upstreams.put(conn);
    Response::from_parts(
        head,
        DownBody::new(Source::Backend(incoming), timeout, Some(record)),
    )
}

/// The request as sent on one attempt (a retry sends it again from the start).
fn upstream_request(
    parts: &Parts,
    tee: &Option<Arc<Mutex<TeeState>>>,
    h2: bool,
    tls: bool,
) -> Request<UpBody> {
    let body = match tee {
        None => UpBody::Empty,
        Some(t) => UpBody::Tee(Tee::new(t)),
    };
    let mut up = Request::new(body);
    *up.method_mut() = parts.method.clone();
    *up.headers_mut() = parts.headers.clone();
    if h2 {
        // HTTP/2 names the authority and scheme in the request itself.
        *up.version_mut() = Version::HTTP_2;
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                parts
                    .headers
                    .get(http::header::HOST)?
                    .to_str()
                    .ok()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "localhost".to_owned());
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let scheme = if tls { "https" } else { "http" };
        *up.uri_mut() = format!("{scheme}://{authority}{path}")
            .parse()
            .unwrap_or_else(|_| parts.uri.clone());
    } else {
        *up.version_mut() = Version::HTTP_11;
        *up.uri_mut() = parts.uri.clone();
    }
    up
}

/// Sends `req` on `conn` and waits for the response head, `timeout` from the last
/// piece of the request body the client sent.
async fn wait(
    conn: &mut Conn,
    req: Request<UpBody>,
    timeout: Duration,
    tee: Option<&Arc<Mutex<TeeState>>>,
) -> Result<Response<Incoming>, Failed> {
    let sent = conn.send(req);
    tokio::pin!(sent);
    let mut deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            resp = &mut sent => return resp.map_err(Failed::Error),
            () = tokio::time::sleep_until(deadline) => {
                let Some(tee) = tee else { return Err(Failed::Timeout) };
                let Ok(state) = tee.lock() else { return Err(Failed::Timeout) };
                if state.ended() {
                    return Err(Failed::Timeout);
                }
                match state.progress {
                    // The body is still coming: the wait starts again from its last piece.
                    Some(last) if last.elapsed() < timeout => {
                        deadline = tokio::time::Instant::from_std(last) + timeout;
                    }
                    _ => return Err(Failed::ClientStalled),
                }
            }
        }
    }
}

/// Joins the client's and the backend's connections after a `101`, until the backend
/// closes (a client that half-closes still receives until then), either side fails, or
/// neither sends anything for `idle`. The record is written then.
async fn tunnel((client, backend): (OnUpgrade, OnUpgrade), conn: Conn, idle: Duration, record: Box<Record>) {
    let (client, backend) = tokio::join!(client, backend);
    // The backend's handshake connection has handed its stream over.
    drop(conn);
    let (Ok(client), Ok(backend)) = (client, backend) else {
        tracing::debug!("upgrade: a side of the tunnel was not handed over");
        return;
    };
    let (mut cr, mut cw) = tokio::io::split(TokioIo::new(client));
    let (mut br, mut bw) = tokio::io::split(TokioIo::new(backend));
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_backend = vec![0u8; 16 * 1024];
    // A client that half-closes still receives, until the backend closes.
    let mut client_open = true;
    loop {
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                n = cr.read(&mut from_client), if client_open => (true, n),
                n = br.read(&mut from_backend) => (false, n),
            }
        })
        .await;
        let moved = match step {
            Ok((true, Ok(0))) => {
                client_open = false;
                bw.shutdown().await.is_ok()
            }
            // The backend's close ends the tunnel (a WebSocket server closes the TCP
            // connection first, RFC 6455 §7.1.1), whatever the client still holds.
            Ok((false, Ok(0))) => false,
            // Written through: the streams below buffer writes until flushed.
            Ok((true, Ok(n))) => bw.write_all(&from_client[..n]).await.is_ok() && bw.flush().await.is_ok(),
            Ok((false, Ok(n))) => cw.write_all(&from_backend[..n]).await.is_ok() && cw.flush().await.is_ok(),
            // A read error, or idle for too long.
            Ok((_, Err(_))) | Err(_) => false,
        };
        if !moved {
            break;
        }
    }
    let _ = cw.shutdown().await;
    let _ = bw.shutdown().await;
    drop(record);
}
