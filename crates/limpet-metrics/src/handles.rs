//! The handles snapshots hold: per-backend series, in-flight slots, decision and
//! response counters, and the typed label keys that name them.

use limpet_config::{BackendId, PoolId};
use prometheus::{Gauge, Histogram, IntCounter, IntGauge};

/// The labels of one backend's series.
#[derive(Debug, Clone, Copy)]
pub struct BackendKey<'a> {
    pub pool: &'a PoolId,
    pub backend: &'a BackendId,
}

impl BackendKey<'_> {
    pub(crate) fn labels(&self) -> [&str; 2] {
        [self.pool.as_str(), self.backend.as_str()]
    }
}

/// The `pool` label of limpet's own responses: a pool, or none when no route matched.
#[derive(Debug, Clone, Copy)]
pub enum PoolLabel<'a> {
    Pool(&'a PoolId),
    Unrouted,
}

impl PoolLabel<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            PoolLabel::Pool(p) => p.as_str(),
            PoolLabel::Unrouted => "",
        }
    }
}

/// Per-backend handles, resolved once per snapshot.
#[derive(Clone)]
pub struct BackendMetrics {
    pub(crate) requests: [IntCounter; 5],
    pub response_seconds: Histogram,
    pub in_flight: IntGauge,
    pub connect_errors: IntCounter,
    /// `limpet_backend_retries_total`: requests this backend dropped before answering,
    /// sent again elsewhere.
    pub retries: IntCounter,
    /// `limpet_backend_up`: 1 while health checks (active and passive) pass.
    pub up: IntGauge,
    /// `limpet_backend_weight`: configured weight times the slow-start ramp.
    pub weight: Gauge,
    pub(crate) checks_ok: IntCounter,
    pub(crate) checks_failed: IntCounter,
}

/// One in-flight slot of a backend; dropping it releases the slot, so the gauge stays
/// right on every path (retries, errors, client aborts).
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl BackendMetrics {
    pub fn in_flight_slot(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Counts one active health check.
    pub fn count_check(&self, ok: bool) {
        if ok {
            self.checks_ok.inc();
        } else {
            self.checks_failed.inc();
        }
    }

    /// Counts one finished request under its status class.
    pub fn count_status(&self, status: u16) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        self.requests[class].inc();
    }
}

/// Counters of the responses limpet makes itself for one pool (or for requests that
/// matched none): one per kind, in the order the kinds were given.
#[derive(Clone)]
pub struct ResponseCounters(pub(crate) Vec<IntCounter>);

impl ResponseCounters {
    /// `kind` indexes the kind list given to [`Metrics::responses`].
    pub fn count(&self, kind: usize) {
        if let Some(c) = self.0.get(kind) {
            c.inc();
        }
    }
}

/// One kind of response limpet makes: its status code and reason label.
pub type ResponseKind = (u16, &'static str);

/// Store error kinds, as in `limpet_session_store_errors_total{kind}`.
pub const STORE_ERROR_KINDS: [&str; 3] = ["timeout", "connection", "evicted"];

/// Kinds of limpet's own resources running out, as in `limpet_local_errors_total{kind}`.
pub const LOCAL_ERROR_KINDS: [&str; 3] = ["file_descriptors", "ports", "memory"];

/// Per-pool, per-method decision counters: `[method][outcome]`.
#[derive(Clone)]
pub struct DecisionMetrics {
    pub(crate) counters: Vec<Vec<IntCounter>>,
}

impl DecisionMetrics {
    /// `outcome` indexes the outcome list given to [`Metrics::decisions`].
    pub fn count(&self, method: usize, outcome: usize) {
        if let Some(c) = self.counters.get(method).and_then(|m| m.get(outcome)) {
            c.inc();
        }
    }
}

/// `limpet_requests_total` of one listener.
#[derive(Clone)]
pub struct ListenerCounters {
    pub(crate) h1: IntCounter,
    pub(crate) h2: IntCounter,
}

impl ListenerCounters {
    /// Counts one request, over HTTP/2 or HTTP/1.x.
    pub fn count(&self, h2: bool) {
        if h2 {
            self.h2.inc();
        } else {
            self.h1.inc();
        }
    }
}

/// `limpet_proxy_protocol_refused_total` of one listener.
#[derive(Clone)]
pub struct ProxyProtocolRefusals {
    pub(crate) malformed: IntCounter,
    pub(crate) untrusted: IntCounter,
}

impl ProxyProtocolRefusals {
    /// A header that is not a valid PROXY v1/v2 header.
    pub fn malformed(&self) {
        self.malformed.inc();
    }

    /// A connection from a peer outside `server.trusted_proxies`.
    pub fn untrusted(&self) {
        self.untrusted.inc();
    }
}
