//! The end of a request, whichever HTTP engine carried it: the in-flight slot released,
//! a failover counted as `repinned`, passive health fed, the backend's status and
//! latency counted, the listener's request counted, and the access-log line.

use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use http::request::Parts;
use http::HeaderValue;
use limpet_affinity::Outcome;

use crate::access::Entry;
use crate::attempt::Attempt;
use crate::clock::now_ms;
use crate::exchange::Via;
use crate::shared::Shared;
use crate::snapshot::{outcome_index, Snapshot};

/// What the engine knows of a request once it is over.
pub struct Ended<'a> {
    /// What the access log reads of the request head; `None` when the log is off
    /// ([`crate::AccessLog::enabled`], asked once per request by the engine).
    pub head: Option<Logged<'a>>,
    /// The status sent to the client; 0 when none was.
    pub status: u16,
    /// The backend's status, once it answered.
    pub upstream_status: Option<u16>,
    /// The kind of the upstream failure after connecting (a reset, a read timeout),
    /// which passive health counts.
    pub upstream_failure: Option<&'static str>,
    /// The kind of the error that ended the request, if one did.
    pub error: Option<&'static str>,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub client: Option<IpAddr>,
    pub request_id: Option<&'a HeaderValue>,
    pub via: Via,
    /// When the request arrived, its backend connection was ready, and the backend's
    /// response head came.
    pub arrived: Instant,
    pub connected: Option<Instant>,
    pub responded: Option<Instant>,
}

/// The parts of a request head the access log writes.
#[derive(Clone, Copy)]
pub struct Logged<'a> {
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub host: Option<&'a HeaderValue>,
    pub user_agent: Option<&'a HeaderValue>,
}

impl<'a> Logged<'a> {
    pub fn of(head: &'a Parts) -> Self {
        Self {
            method: &head.method,
            uri: &head.uri,
            host: head.headers.get(http::header::HOST),
            user_agent: head.headers.get(http::header::USER_AGENT),
        }
    }
}

/// [`Logged`], owned: what an engine keeps of a head it hands on, for the log line at
/// the request's end (clones of shared buffers, not of the whole head).
pub struct LoggedHead {
    method: http::Method,
    uri: http::Uri,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
}

impl LoggedHead {
    pub fn of(head: &Parts) -> Self {
        Self {
            method: head.method.clone(),
            uri: head.uri.clone(),
            host: head.headers.get(http::header::HOST).cloned(),
            user_agent: head.headers.get(http::header::USER_AGENT).cloned(),
        }
    }

    pub fn logged(&self) -> Logged<'_> {
        Logged {
            method: &self.method,
            uri: &self.uri,
            host: self.host.as_ref(),
            user_agent: self.user_agent.as_ref(),
        }
    }
}

/// Records the end of a request that `attempt` carried.
pub fn finish(shared: &Shared, snap: &Snapshot, attempt: &mut Attempt, ended: &Ended<'_>) {
    attempt.release();
    let status = ended.status;
    let pool = attempt.pool(snap);
    let elapsed = attempt.started.map(|s| s.elapsed());
    let mut outcome = attempt.outcome;
    if let (Some(pool), Some(deciding), true) = (pool, attempt.evals.last(), attempt.repinned()) {
        pool.decisions.count(
            pool.method_label[deciding.method],
            outcome_index(Outcome::Repinned),
        );
        outcome = Some(Outcome::Repinned);
    }
    if let (Some(pool), Some(i)) = (pool, attempt.chosen) {
        // A 5xx from the backend, or an upstream error after connecting: passive
        // health counts it.
        if let Some(failure) = ended.upstream_failure {
            pool.passive_failure(i, failure, now_ms());
        } else if ended.upstream_status.is_some_and(|s| s >= 500) {
            pool.passive_failure(i, "5xx response", now_ms());
        }
    }
    let backend = pool.zip(attempt.chosen).map(|(p, i)| &p.backends[i]);
    if let (Some(b), Some(elapsed)) = (backend, elapsed) {
        b.metrics.count_status(if status == 0 { 502 } else { status });
        b.metrics.response_seconds.observe(elapsed.as_secs_f64());
    }
    if let Some(counter) = shared.listeners.get(ended.via.listener) {
        counter.count(ended.via.h2);
    }
    // The engine kept the head only when the log is on.
    let Some(req) = ended.head else {
        return;
    };
    let host = req
        .uri
        .host()
        .or_else(|| req.host.and_then(|h| h.to_str().ok()))
        .unwrap_or_default();
    let since = |from: Option<Instant>, to: Option<Instant>| Some(to?.saturating_duration_since(from?));
    shared.access.write(&Entry {
        at: SystemTime::now(),
        id: ended.request_id.and_then(|v| v.to_str().ok()).unwrap_or_default(),
        client: ended.client,
        method: req.method.as_str(),
        host,
        path: req.uri.path(),
        query: req.uri.query().filter(|_| snap.config.server.access_log_query),
        protocol: if ended.via.h2 { "h2" } else { "h1" },
        tls: ended.via.tls,
        status,
        bytes_in: ended.bytes_in,
        bytes_out: ended.bytes_out,
        user_agent: req.user_agent.and_then(|v| v.to_str().ok()).unwrap_or_default(),
        pool: pool.map_or("", |p| p.id.as_str()),
        backend: backend.map_or("", |b| b.id.as_str()),
        backend_address: backend.map(|b| b.address),
        outcome: outcome.map_or("none", Outcome::as_str),
        attempts: attempt.attempts(),
        total: ended.arrived.elapsed(),
        connect: since(attempt.started, ended.connected),
        response: since(ended.connected, ended.responded),
        error: ended.error,
    });
}
