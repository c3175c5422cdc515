//! The `ProxyHttp` hooks that serve HTTP/2 clients (HTTP/1 has limpet's own engine,
//! [`crate::h1`]), and nothing else: each pins the request's snapshot, calls the
//! engine-neutral decision, [`Attempt`] and [`exchange`], and turns the result into
//! Pingora calls.
//!
//! Per request: `request_filter` routes and resolves persistence (one decision counted);
//! `upstream_peer` uses the pinned backend or picks a new one, and runs again after each
//! retried connect failure, never choosing a backend twice; `response_filter` records
//! the session and issues the cookie naming the backend that really answered;
//! `fail_to_proxy` answers what could not be proxied through [`exchange::refuse`];
//! `logging` releases the in-flight slot and records the request.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};

use crate::access::AccessLog;
use crate::attempt::{peer_for, AfterConnectFailure, Attempt};
use crate::decide::{decide, Verdict};
use crate::exchange::{self, refuse, Refusal, Via};
use crate::finish::{finish, Ended, Logged};
use crate::local::LocalError;
use crate::request;
use crate::shared::{Active, Shared};
use crate::snapshot::Snapshot;

/// The proxy of one listener (each listener is its own Pingora service, so that
/// listeners differ in TLS, h2c and redirects).
pub struct Limpet {
    shared: Arc<Shared>,
    /// The listener, and what it alone says of how requests come (TLS or not).
    via: Via,
}

impl Limpet {
    pub fn new(shared: Arc<Shared>, listener: usize) -> Self {
        Self {
            via: Via::of_listener(&shared, listener),
            shared,
        }
    }
}

/// Per-request state. The snapshot is pinned here so that every hook of one request
/// sees the same configuration, even across a reload.
pub struct Ctx {
    _active: Active,
    snap: Option<Arc<Snapshot>>,
    attempt: Attempt,
    client: Option<IpAddr>,
    /// The TCP peer (the PROXY header's client, when there is one).
    peer: Option<IpAddr>,
    /// Status of the backend's response, once it has answered.
    upstream_status: Option<u16>,
    /// Why the request cannot be proxied, when a hook decided it before failing.
    refusal: Option<Refusal>,
    /// How the client reached limpet.
    via: Via,
    /// `X-Request-Id`: a trusted proxy's, or one limpet made; sent to the backend.
    request_id: Option<http::HeaderValue>,
    /// When the request arrived, its backend connection was ready, and the backend's
    /// response head came: the access log's timings.
    arrived: Instant,
    connected: Option<Instant>,
    responded: Option<Instant>,
    /// The request failed because the client stopped sending its body.
    client_stalled: bool,
    /// The backend sent an interim (1xx) response.
    interim: bool,
}

/// Was `e` an upstream failure after the connection was made (a read timeout, a
/// reset)? Connect failures were counted when they happened, and limpet's own
/// resources running out is no failure of the backend.
fn upstream_error(e: &Error) -> bool {
    matches!(e.esource(), pingora_error::ErrorSource::Upstream)
        && LocalError::of(e).is_none()
        && !matches!(
            e.etype(),
            ErrorType::ConnectTimedout
                | ErrorType::ConnectRefused
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError
        )
}

/// Did the backend close or reset the connection before a byte of its response
/// arrived? Pingora's reader says how many bytes of the response head it had read.
fn nothing_received(e: &Error) -> bool {
    match e.etype() {
        ErrorType::WriteError => true,
        ErrorType::ConnectionClosed | ErrorType::ReadError => e
            .context
            .as_ref()
            .is_some_and(|c| c.as_str().ends_with("bytes already read: 0")),
        _ => false,
    }
}

#[async_trait]
impl ProxyHttp for Limpet {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            _active: Active::new(&self.shared.active),
            snap: None,
            attempt: Attempt::default(),
            client: None,
            peer: None,
            upstream_status: None,
            refusal: None,
            via: self.via,
            request_id: None,
            arrived: Instant::now(),
            connected: None,
            responded: None,
            client_stalled: false,
            interim: false,
        }
    }

    async fn early_request_filter(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.snap = Some(self.shared.current.load_full());
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let shared = &self.shared;
        let Some(snap) = ctx.snap.clone() else {
            return refuse(shared, None, None, ctx.via, session, Refusal::Internal).await;
        };
        ctx.peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        ctx.via.h2 = session.is_http2();
        let decided = decide(
            shared,
            &snap,
            session.req_header(),
            ctx.peer,
            &mut ctx.via,
            &mut ctx.attempt,
        )
        .await;
        ctx.client = decided.client;
        ctx.request_id = decided.request_id;
        match decided.verdict {
            Verdict::Proxy => {}
            Verdict::Refuse(refusal, pool) => {
                return refuse(shared, Some(&snap), pool, ctx.via, session, refusal).await;
            }
            Verdict::RedirectHttps(host) => {
                return exchange::redirect_https(shared, &snap, session, &host).await;
            }
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(snap) = ctx.snap.clone() else {
            ctx.refusal = Some(Refusal::Internal);
            return Error::e_explain(ErrorType::HTTPStatus(500), "no snapshot");
        };
        let Some(pool) = ctx.attempt.pool(&snap) else {
            ctx.refusal = Some(Refusal::NoRoute);
            return Error::e_explain(ErrorType::HTTPStatus(404), "no route");
        };
        let Some(i) = ctx.attempt.next_attempt(pool) else {
            ctx.refusal = Some(Refusal::NoBackend);
            return Error::e_explain(ErrorType::HTTPStatus(503), "no usable backend in pool");
        };
        Ok(Box::new(peer_for(&snap, pool, i)))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(snap) = ctx.snap.clone() else { return e };
        let Some(pool) = ctx.attempt.pool(&snap) else {
            return e;
        };
        match ctx.attempt.connect_failed(pool, &e) {
            AfterConnectFailure::Retry => e.set_retry(true),
            AfterConnectFailure::Strict => ctx.refusal = Some(Refusal::SessionBackendDown),
            AfterConnectFailure::GiveUp => {}
            AfterConnectFailure::Local(local) => {
                self.shared.local_error(local, &e);
                ctx.refusal = Some(Refusal::LocalResources);
            }
        }
        e
    }

    /// An error after the connection to the backend was made. Pingora's own rule is
    /// kept for reused connections (a stale pooled connection is retried, on the same
    /// backend), within `retries` ([`Attempt::reused_failed`]). On a fresh connection, a backend that closed or reset before sending a
    /// byte of its response has not answered: an idempotent request whose body can be
    /// replayed goes to another backend ([`Attempt::dropped_before_answer`]), as
    /// HAProxy's `retry-on all-retryable-errors` and Envoy's `retry_on: reset` do.
    /// Nothing is retried once a byte of the response arrived, nor after a timeout.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let replayable =
            session.req_header().method.is_idempotent() && !session.as_ref().retry_buffer_truncated();
        if !replayable {
            e.set_retry(false);
        } else if client_reused {
            e.retry.decide_reuse(true);
            if e.retry() {
                let allowed = ctx
                    .snap
                    .clone()
                    .and_then(|snap| Some(ctx.attempt.reused_failed(ctx.attempt.pool(&snap)?)))
                    .unwrap_or(false);
                e.set_retry(allowed);
            }
        } else {
            // An interim response is a byte of the answer too: the client saw it.
            let unanswered = ctx.upstream_status.is_none() && !ctx.interim && nothing_received(&e);
            let retry = unanswered
                && ctx
                    .snap
                    .clone()
                    .and_then(|snap| Some(ctx.attempt.dropped_before_answer(ctx.attempt.pool(&snap)?)))
                    .unwrap_or(false);
            e.set_retry(retry);
        }
        e.more_context(format!("Peer: {peer}"))
    }

    /// Pingora warns for every retried attempt; limpet counts them instead
    /// (`limpet_backend_connect_errors_total`, `limpet_backend_retries_total`) and logs
    /// at debug, so that a backend dying under load cannot fill the log.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &Ctx,
        error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        let retry = matches!(context, ProxyWarnLogContext::UpstreamRetry);
        if retry {
            tracing::debug!(error = %error, "attempt failed: retried");
        }
        retry
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // The backend timed out waiting while the client had not finished sending the
        // request body: the client stalled, not the backend. 408, and no blame.
        ctx.client_stalled = matches!(e.etype(), ErrorType::ReadTimedout | ErrorType::WriteTimedout)
            && !session.as_downstream_mut().is_body_done();
        let refusal = ctx.refusal.or_else(|| {
            if ctx.client_stalled {
                Some(Refusal::RequestTimeout)
            } else {
                Refusal::for_error(e)
            }
        });
        let mut error_code = 0;
        if let Some(refusal) = refusal {
            error_code = refusal.status();
            // The request body may be unread: this connection is not reused.
            session.set_keepalive(None);
            let (snap, pool) = (ctx.snap.as_deref(), ctx.attempt.pool);
            if let Err(err) = refuse(&self.shared, snap, pool, ctx.via, session, refusal).await {
                tracing::debug!(error = %err, "could not send limpet's error response");
            }
        }
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        exchange::forwarding_headers(ctx.peer, ctx.via, upstream)?;
        if let Some(id) = &ctx.request_id {
            upstream.insert_header("x-request-id", id.clone())?;
        }
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.connected = Some(Instant::now());
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(snap) = ctx.snap.clone() else {
            return Ok(());
        };
        // A switch of protocols nobody asked for (RFC 9110 §15.2.2): the client would
        // wait on a tunnel that does not exist. The backend answered wrongly: 502.
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS && !session.is_upgrade_req() {
            ctx.refusal = Some(Refusal::UpstreamError);
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "101 to a request that asked for no upgrade",
            );
        }
        // An interim response (100 Continue, 103) passes as it came: the session, its
        // cookie and the response's timing belong to the final one.
        if resp.status.is_informational() {
            ctx.interim = true;
            return Ok(());
        }
        if request::fields_bytes(&resp.headers) > snap.config.server.max_response_header_bytes {
            ctx.refusal = Some(Refusal::ResponseTooLarge);
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "response head above max_response_header_bytes",
            );
        }
        ctx.upstream_status = Some(resp.status.as_u16());
        ctx.responded = Some(Instant::now());
        exchange::record(&self.shared, &snap, &ctx.attempt).await;
        exchange::decorate_response(&snap, &ctx.attempt, ctx.via, resp)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let Some(snap) = ctx.snap.clone() else {
            ctx.attempt.release();
            return;
        };
        let ended = Ended {
            head: AccessLog::enabled().then(|| Logged::of(session.req_header())),
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            upstream_status: ctx.upstream_status,
            upstream_failure: e
                .filter(|e| upstream_error(e) && !ctx.client_stalled)
                .map(|e| e.etype().as_str()),
            error: e.map(|e| e.etype().as_str()),
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            client: ctx.client,
            request_id: ctx.request_id.as_ref(),
            via: ctx.via,
            arrived: ctx.arrived,
            connected: ctx.connected,
            responded: ctx.responded,
        };
        finish(&self.shared, &snap, &mut ctx.attempt, &ended);
    }
}
