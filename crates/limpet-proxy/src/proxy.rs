//! The `ProxyHttp` adapter. Hooks stay thin: they pin a snapshot, call the pure
//! persistence and balancing code, and translate the result into Pingora calls.
//!
//! Per request: `request_filter` routes and resolves persistence (one decision counted);
//! `upstream_peer` uses the pinned backend or picks a new one, and runs again after each
//! retried connect failure, never choosing a backend twice; `response_filter` issues the
//! cookie naming the backend that really answered; `logging` releases the in-flight slot
//! and records the request.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use limpet_affinity::{private_cache_control, Outcome};
use limpet_balance::{pick_least_requests, pick_weighted_random};
use limpet_config::{Balance, OnBackendDown};
use limpet_metrics::InFlight;
use pingora_core::connectors::TransportConnector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};

use crate::health::now_ms;
use crate::persist::{self, Eval, RequestView};
use crate::request;
use crate::snapshot::{outcome_index, Active, PoolRt, Shared, Snapshot};
use crate::upgrade;

pub struct Limpet {
    shared: Arc<Shared>,
    /// Opens the fresh upstream connections of upgraded requests (see `upgrade`).
    connector: TransportConnector,
}

impl Limpet {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            connector: TransportConnector::new(None),
        }
    }
}

/// Per-request state. The snapshot is pinned here so that every hook of one request
/// sees the same configuration, even across a reload.
pub struct Ctx {
    _active: Active,
    snap: Option<Arc<Snapshot>>,
    pool: Option<usize>,
    outcome: Option<Outcome>,
    /// Backend named by a valid session, if any.
    pinned: Option<usize>,
    /// Backend of the first attempt.
    first: Option<usize>,
    /// Backend of the current attempt.
    chosen: Option<usize>,
    /// Backends already attempted in this request.
    tried: Vec<usize>,
    connect_failures: u32,
    started: Option<Instant>,
    in_flight: Option<InFlight>,
    client: Option<IpAddr>,
    /// What each consulted persistence method found.
    evals: Vec<Eval>,
    /// The request's consistent-hash key, when the pool hashes and the request has one.
    hash_key: Option<u64>,
    /// Status of the backend's response, once it has answered.
    upstream_status: Option<u16>,
    /// Rebalancing moves this session: new picks prefer under-loaded backends.
    rebalanced: bool,
}

impl Ctx {
    pub(crate) fn pool<'a>(&self, snap: &'a Snapshot) -> Option<&'a PoolRt> {
        snap.pools.get(self.pool?)
    }

    /// Chooses the backend of the next attempt: the pinned one unless it was tried
    /// already, else a new pick among backends not tried yet. Takes its in-flight slot.
    pub(crate) fn next_attempt(&mut self, pool: &PoolRt) -> Option<usize> {
        if let Some(prev) = self.chosen.take() {
            if !self.tried.contains(&prev) {
                self.tried.push(prev);
            }
        }
        let pick = match self.pinned {
            Some(p) if !self.tried.contains(&p) => Some(p),
            _ => pick_new(pool, &self.tried, self.hash_key, self.rebalanced),
        }?;
        self.chosen = Some(pick);
        self.first.get_or_insert(pick);
        // Replacing the guard releases the previous attempt's slot.
        self.in_flight = Some(pool.backends[pick].metrics.in_flight_slot());
        self.started.get_or_insert_with(Instant::now);
        Some(pick)
    }

    /// Records a failed connect to the current attempt's backend and says what follows.
    pub(crate) fn connect_failed(&mut self, pool: &PoolRt) -> AfterConnectFailure {
        self.connect_failures += 1;
        let Some(failed) = self.chosen else {
            return AfterConnectFailure::GiveUp;
        };
        pool.backends[failed].metrics.connect_errors.inc();
        passive_failure(pool, failed, "connect failed");
        // A strict pool never moves a pinned session elsewhere.
        if pool.on_backend_down == OnBackendDown::Strict && self.pinned == Some(failed) {
            return AfterConnectFailure::Strict;
        }
        let others_left = (0..pool.backends.len()).any(|i| i != failed && may_take_new(pool, &self.tried, i));
        // Bounded twice: by the pool's `retries` and by the backends left untried.
        if self.connect_failures <= pool.retries && others_left {
            AfterConnectFailure::Retry
        } else {
            AfterConnectFailure::GiveUp
        }
    }
}

/// What a request does after a connect failure.
pub(crate) enum AfterConnectFailure {
    /// Try another backend.
    Retry,
    /// The pinned backend of a strict pool is unreachable: 503, no re-pin.
    Strict,
    /// Retries or backends are exhausted: the error stands.
    GiveUp,
}

/// The upstream peer for backend `i`, with the configured timeouts.
pub(crate) fn peer_for(snap: &Snapshot, pool: &PoolRt, i: usize) -> HttpPeer {
    let mut peer = HttpPeer::new(pool.backends[i].address, false, String::new());
    let server = &snap.config.server;
    peer.options.connection_timeout = Some(server.upstream_connect_timeout);
    peer.options.read_timeout = Some(server.upstream_read_timeout);
    peer
}

/// Adds the forwarding headers every request carries upstream.
pub(crate) fn forwarding_headers(session: &Session, upstream: &mut RequestHeader) -> Result<()> {
    // Append the TCP peer, as every proxy hop does; backends read the chain right to
    // left, and `server.trusted_proxies` decides how far limpet itself believes it.
    if let Some(peer) = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()) {
        // Several X-Forwarded-For lines form one list (RFC 9110 §5.3); bytes that are
        // not visible ASCII cannot be forwarded faithfully and are dropped.
        let mut xff = String::new();
        for v in upstream.headers.get_all("x-forwarded-for") {
            if let Ok(v) = v.to_str() {
                if !v.trim().is_empty() {
                    xff.push_str(v.trim());
                    xff.push_str(", ");
                }
            }
        }
        xff.push_str(&peer.to_string());
        upstream.insert_header("x-forwarded-for", xff)?;
    }
    upstream.insert_header("x-forwarded-proto", "http")?;
    Ok(())
}

/// Records the serving backend in the session tables the request consulted.
pub(crate) async fn record(shared: &Shared, snap: &Snapshot, ctx: &Ctx) {
    let (Some(pool), Some(i)) = (ctx.pool(snap), ctx.chosen) else {
        return;
    };
    let moved = ctx.pinned.is_some() && ctx.chosen != ctx.pinned;
    persist::record_tables(shared.store.as_ref(), pool, &ctx.evals, i, moved, unix_now()).await;
}

/// Adds what limpet says in a backend's response: the affinity cookie when the request
/// starts or moves a session, and the debug header.
pub(crate) fn decorate_response(snap: &Snapshot, ctx: &Ctx, resp: &mut ResponseHeader) -> Result<()> {
    let (Some(pool), Some(i)) = (ctx.pool(snap), ctx.chosen) else {
        return Ok(());
    };
    let backend = &pool.backends[i];
    if let Some(keys) = &snap.keyring {
        let moved = ctx.pinned.is_some() && ctx.chosen != ctx.pinned;
        let cookies = persist::set_cookies(keys, pool, &ctx.evals, i, moved, &resp.headers, unix_now());
        for c in &cookies {
            resp.append_header("set-cookie", c)?;
        }
        if !cookies.is_empty() {
            let existing = resp
                .headers
                .get(http::header::CACHE_CONTROL)
                .map(|v| v.as_bytes());
            if let Some(cc) = private_cache_control(existing) {
                resp.insert_header("cache-control", cc)?;
            }
        }
    }
    if snap.config.server.debug_headers {
        resp.insert_header("x-limpet-backend", backend.id.as_str())?;
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes a short plain-text response from limpet itself.
pub(crate) async fn respond(
    session: &mut Session,
    status: u16,
    body: &'static str,
    retry_after: bool,
) -> Result<bool> {
    let mut h = ResponseHeader::build(status, Some(4))?;
    h.insert_header("content-type", "text/plain; charset=utf-8")?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "no-store")?;
    if retry_after {
        h.insert_header("retry-after", "1")?;
    }
    session.write_response_header(Box::new(h), false).await?;
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await?;
    Ok(true)
}

/// Feeds a failure seen in real traffic to backend `i`'s passive health check.
pub(crate) fn passive_failure(pool: &PoolRt, i: usize, what: &str) {
    let Some(passive) = &pool.passive_health else {
        return;
    };
    let b = &pool.backends[i];
    if b.health.record_failure(passive, now_ms()) {
        tracing::warn!(
            pool = %pool.id, backend = %b.id, failure = what, max_fails = passive.max_fails,
            cooldown = ?passive.cooldown, "passive health check: backend taken out of rotation"
        );
    }
}

/// May backend `i` receive a new session in a request that already tried `tried`?
fn may_take_new(pool: &PoolRt, tried: &[usize], i: usize) -> bool {
    pool.backends[i].takes_new() && !tried.contains(&i)
}

/// Chooses a backend for a new session among those that take new sessions and were not
/// tried yet in this request.
fn pick_new(pool: &PoolRt, tried: &[usize], hash_key: Option<u64>, rebalanced: bool) -> Option<usize> {
    if let (true, Some(rb)) = (rebalanced, &pool.rebalance) {
        let under = |i: usize| may_take_new(pool, tried, i) && rb.is_under(i);
        if let Some(i) = pool.round_robin.pick(under) {
            return Some(i);
        }
    }
    // Slow start: a backend ramping up takes part in this pick with a probability equal
    // to its ramp, so its share of new sessions grows linearly from 0 to its weight.
    // When every candidate is held back, the ramp is ignored rather than refuse.
    let mut held: Vec<usize> = Vec::new();
    if pool.slow_start.is_some() {
        let now = now_ms();
        held.extend((0..pool.backends.len()).filter(|&i| {
            let ramp = pool.backends[i].health.ramp(pool.slow_start, now);
            ramp < 1.0 && rand::random::<f64>() >= ramp
        }));
        if (0..pool.backends.len()).all(|i| held.contains(&i) || !may_take_new(pool, tried, i)) {
            held.clear();
        }
    }
    let eligible = |i: usize| may_take_new(pool, tried, i) && !held.contains(&i);
    match pool.balance {
        Balance::ConsistentHash => match hash_key {
            Some(key) => pool.hash_pick(key, eligible),
            // No key in this request: spread it like round robin does.
            None => pool.round_robin.pick(eligible),
        },
        Balance::RoundRobin => pool.round_robin.pick(eligible),
        Balance::Random => pick_weighted_random(&pool.weights, eligible, rand::random()),
        Balance::LeastRequests => pick_least_requests(
            &pool.weights,
            |i| pool.in_flight(i),
            eligible,
            rand::random(),
            rand::random(),
        ),
    }
}

#[async_trait]
impl ProxyHttp for Limpet {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            _active: Active::new(&self.shared.active),
            snap: None,
            pool: None,
            outcome: None,
            pinned: None,
            first: None,
            chosen: None,
            tried: Vec::new(),
            connect_failures: 0,
            started: None,
            in_flight: None,
            client: None,
            evals: Vec::new(),
            hash_key: None,
            upstream_status: None,
            rebalanced: false,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let snap = self.shared.current.load_full();
        // Keep-alive idle timeout of the client connection. It never ends a session:
        // sessions live in cookies (and tables) with their own TTL.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(snap.config.server.client_idle_timeout.as_secs().max(1)));
        }
        ctx.snap = Some(snap);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let Some(snap) = ctx.snap.clone() else {
            return respond(session, 500, "limpet: no configuration\n", false).await;
        };
        let req = session.req_header();
        if request::header_bytes(&req.uri, &req.headers) > request::MAX_HEADER_BYTES {
            return respond(session, 431, "limpet: request headers too large\n", false).await;
        }
        let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        ctx.client = peer.map(|p| request::client_ip(p, &req.headers, &snap.config.server.trusted_proxies));
        let host = request::host(&req.uri, &req.headers);
        let Some(pool_index) = snap.route(&host, req.uri.path().as_bytes()) else {
            return respond(session, 404, "limpet: no route for this host and path\n", false).await;
        };
        ctx.pool = Some(pool_index);
        let pool = &snap.pools[pool_index];

        let mut view = RequestView {
            headers: &req.headers,
            query: req.uri.query(),
            path: req.uri.path().as_bytes(),
            client: ctx.client,
            hash_key: None,
        };
        if pool.ring.is_some() {
            view.hash_key = persist::hash_key(&pool.hash.key, &view);
            ctx.hash_key = view.hash_key;
        }
        let resolution = persist::resolve(&snap, pool, self.shared.store.as_ref(), &view, unix_now()).await;
        ctx.pinned = resolution.pinned;
        ctx.rebalanced = resolution.rebalanced;
        ctx.outcome = resolution.evals.last().map(|e| e.outcome);
        ctx.evals = resolution.evals;
        if resolution.strict_refusal {
            return respond(
                session,
                503,
                "limpet: the backend of this session is unavailable\n",
                true,
            )
            .await;
        }
        if ctx.pinned.is_none() && !pool.backends.iter().any(|b| b.takes_new()) {
            pool.mark_all_down();
            return respond(
                session,
                503,
                "limpet: no backend is available for this request; retry shortly\n",
                true,
            )
            .await;
        }
        if session.is_upgrade_req() {
            // Upgrades (WebSocket) get their own fresh upstream connection and tunnel.
            return upgrade::tunnel(&self.shared, &self.connector, session, ctx, &snap).await;
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(snap) = ctx.snap.clone() else {
            return Error::e_explain(ErrorType::HTTPStatus(500), "no snapshot");
        };
        let Some(pool) = ctx.pool(&snap) else {
            return Error::e_explain(ErrorType::HTTPStatus(404), "no route");
        };
        let Some(i) = ctx.next_attempt(pool) else {
            return Error::e_explain(ErrorType::HTTPStatus(503), "no usable backend in pool");
        };
        let peer = peer_for(&snap, pool, i);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(snap) = ctx.snap.clone() else { return e };
        let Some(pool) = ctx.pool(&snap) else { return e };
        match ctx.connect_failed(pool) {
            AfterConnectFailure::Retry => e.set_retry(true),
            AfterConnectFailure::Strict => {
                return Error::explain(
                    ErrorType::HTTPStatus(503),
                    "pinned backend unreachable (on_backend_down: strict)",
                )
            }
            AfterConnectFailure::GiveUp => {}
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        forwarding_headers(session, upstream)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(snap) = ctx.snap.clone() else {
            return Ok(());
        };
        ctx.upstream_status = Some(resp.status.as_u16());
        record(&self.shared, &snap, ctx).await;
        decorate_response(&snap, ctx, resp)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        ctx.in_flight = None;
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let Some(snap) = ctx.snap.clone() else { return };
        let pool = ctx.pool(&snap);
        let elapsed = ctx.started.map(|s| s.elapsed());
        // Failover moved the request off the backend it started on.
        let repinned = ctx.chosen.is_some() && ctx.chosen != ctx.first;
        let mut outcome = ctx.outcome;
        if let (Some(pool), Some(deciding), true) = (pool, ctx.evals.last(), repinned) {
            pool.decisions.count(
                pool.method_label[deciding.method],
                outcome_index(Outcome::Repinned),
            );
            outcome = Some(Outcome::Repinned);
        }
        if let (Some(pool), Some(i)) = (pool, ctx.chosen) {
            // A 5xx from the backend, or an upstream error after connecting (a read
            // timeout, a reset): passive health counts it. Connect failures were
            // counted when they happened.
            let upstream_error = e.is_some_and(|e| {
                matches!(e.esource(), pingora_error::ErrorSource::Upstream)
                    && !matches!(
                        e.etype(),
                        ErrorType::ConnectTimedout
                            | ErrorType::ConnectRefused
                            | ErrorType::ConnectNoRoute
                            | ErrorType::ConnectError
                    )
            });
            if upstream_error {
                passive_failure(pool, i, e.map_or("error", |e| e.etype().as_str()));
            } else if ctx.upstream_status.is_some_and(|s| s >= 500) {
                passive_failure(pool, i, "5xx response");
            }
        }
        let backend = pool.zip(ctx.chosen).map(|(p, i)| &p.backends[i]);
        if let (Some(b), Some(elapsed)) = (backend, elapsed) {
            b.metrics.count_status(if status == 0 { 502 } else { status });
            b.metrics.response_seconds.observe(elapsed.as_secs_f64());
        }
        let req = session.req_header();
        tracing::info!(
            target: "limpet::access",
            client = %ctx.client.map(|c| c.to_string()).unwrap_or_default(),
            method = %req.method,
            path = %req.uri.path(),
            status,
            pool = pool.map_or("", |p| p.id.as_str()),
            backend = backend.map_or("", |b| b.id.as_str()),
            outcome = outcome.map_or("none", Outcome::as_str),
            attempts = ctx.tried.len() + usize::from(ctx.chosen.is_some()),
            ms = elapsed.map_or(0, |d| d.as_millis() as u64),
            error = e.map(|e| e.etype().as_str()),
        );
    }
}
