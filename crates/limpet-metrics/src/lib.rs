//! limpet's own Prometheus registry (never the process-global default one) with typed
//! handles. Label values come only from configuration ids; handles are resolved when a
//! snapshot is built, so the request path touches only atomics.

use limpet_config::{BackendId, BackendState, PoolId};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The labels of one backend's series.
#[derive(Debug, Clone, Copy)]
pub struct BackendKey<'a> {
    pub pool: &'a PoolId,
    pub backend: &'a BackendId,
}

impl BackendKey<'_> {
    fn labels(&self) -> [&str; 2] {
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
    fn as_str(&self) -> &str {
        match self {
            PoolLabel::Pool(p) => p.as_str(),
            PoolLabel::Unrouted => "",
        }
    }
}

/// HTTP status classes used as the `code` label.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Buckets for response times: 1 ms to 60 s.
const RESPONSE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Every limpet series. One per process; snapshots borrow handles from it.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    response_seconds: HistogramVec,
    in_flight: IntGaugeVec,
    connect_errors: IntCounterVec,
    state: IntGaugeVec,
    weight: GaugeVec,
    up: IntGaugeVec,
    health_checks: IntCounterVec,
    decisions: IntCounterVec,
    backend_sessions: IntGaugeVec,
    store_entries: IntGaugeVec,
    store_errors: IntCounterVec,
    responses: IntCounterVec,
    pub config_generation: IntGauge,
    config_reloads: IntCounterVec,
    pub last_reload_success: Gauge,
}

/// Per-backend handles, resolved once per snapshot.
#[derive(Clone)]
pub struct BackendMetrics {
    requests: [IntCounter; 5],
    pub response_seconds: Histogram,
    pub in_flight: IntGauge,
    pub connect_errors: IntCounter,
    /// `limpet_backend_up`: 1 while health checks (active and passive) pass.
    pub up: IntGauge,
    /// `limpet_backend_weight`: configured weight times the slow-start ramp.
    pub weight: Gauge,
    checks_ok: IntCounter,
    checks_failed: IntCounter,
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
pub struct ResponseCounters(Vec<IntCounter>);

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

/// Per-pool, per-method decision counters: `[method][outcome]`.
#[derive(Clone)]
pub struct DecisionMetrics {
    counters: Vec<Vec<IntCounter>>,
}

impl DecisionMetrics {
    /// `outcome` indexes the outcome list given to [`Metrics::decisions`].
    pub fn count(&self, method: usize, outcome: usize) {
        if let Some(c) = self.counters.get(method).and_then(|m| m.get(outcome)) {
            c.inc();
        }
    }
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> Result<T, MetricsError> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new();
        let pb = &["pool", "backend"];
        let metrics = Self {
            requests: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "limpet_backend_requests_total",
                        "Requests answered through a backend, by status class.",
                    ),
                    &["pool", "backend", "code"],
                )?,
            )?,
            response_seconds: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "limpet_backend_response_seconds",
                        "Time from choosing a backend to the end of its response.",
                    )
                    .buckets(RESPONSE_BUCKETS.to_vec()),
                    pb,
                )?,
            )?,
            in_flight: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "limpet_backend_in_flight",
                        "Requests currently being proxied to a backend.",
                    ),
                    pb,
                )?,
            )?,
            connect_errors: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "limpet_backend_connect_errors_total",
                        "Failed connection attempts to a backend.",
                    ),
                    pb,
                )?,
            )?,
            state: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "limpet_backend_state",
                        "Configured backend state: 1 for the current state.",
                    ),
                    &["pool", "backend", "state"],
                )?,
            )?,
            weight: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "limpet_backend_weight",
                        "Effective backend weight for new sessions: the configured weight, ramped by slow start.",
                    ),
                    pb,
                )?,
            )?,
            up: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "limpet_backend_up",
                        "1 while the backend passes its health checks (active and passive), else 0.",
                    ),
                    pb,
                )?,
            )?,
            health_checks: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("limpet_health_check_total", "Active health checks, by result."),
                    &["pool", "backend", "result"],
                )?,
            )?,
            decisions: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "limpet_persistence_decisions_total",
                        "Session persistence decisions, by method and outcome.",
                    ),
                    &["pool", "method", "outcome"],
                )?,
            )?,
            config_generation: reg(
                &r,
                IntGauge::new(
                    "limpet_config_generation",
                    "Generation of the configuration in use; rises on every successful reload.",
                )?,
            )?,
            config_reloads: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "limpet_config_reloads_total",
                        "Configuration reload attempts, by result.",
                    ),
                    &["result"],
                )?,
            )?,
            last_reload_success: reg(
                &r,
                Gauge::new(
                    "limpet_config_last_reload_success_timestamp_seconds",
                    "Unix time of the last successful configuration load.",
                )?,
            )?,
            backend_sessions: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "limpet_backend_sessions",
                        "Live sticky sessions pinned to a backend: its session-table entries (exact) plus the cookie sessions issued or presented for it and not yet expired (estimated, about 3% error).",
                    ),
                    pb,
                )?,
            )?,
            store_entries: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "limpet_session_store_entries",
                        "Entries of a pool in the session store.",
                    ),
                    &["pool"],
                )?,
            )?,
            store_errors: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "limpet_session_store_errors_total",
                        "Session store operations that failed, and entries evicted to respect the bound.",
                    ),
                    &["kind"],
                )?,
            )?,
            responses: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "limpet_responses_total",
                        "Responses limpet generated itself (no route, no backend, backend unreachable or too slow), by pool (empty: no route), status code and reason.",
                    ),
                    &["pool", "code", "reason"],
                )?,
            )?,
            registry: r,
        };
        Ok(metrics.with_alertable_series())
    }

    /// Creates at 0 the unlabelled-by-config series that alert rules read, so that
    /// `increase(...) > 0` fires on the first event rather than on the second.
    fn with_alertable_series(self) -> Self {
        for result in ["ok", "error"] {
            self.config_reloads.with_label_values(&[result]);
        }
        for kind in STORE_ERROR_KINDS {
            self.store_errors.with_label_values(&[kind]);
        }
        self
    }

    /// Counters of limpet's own responses for `pool` ("" for requests no route
    /// matched), one per kind, all created at 0.
    pub fn responses(&self, pool: PoolLabel<'_>, kinds: &[ResponseKind]) -> ResponseCounters {
        ResponseCounters(
            kinds
                .iter()
                .map(|(code, reason)| {
                    self.responses
                        .with_label_values(&[pool.as_str(), &code.to_string(), reason])
                })
                .collect(),
        )
    }

    /// Removes a pool's response series when a reload drops the pool.
    pub fn remove_responses(&self, pool: &PoolId, kinds: &[ResponseKind]) {
        for (code, reason) in kinds {
            let _ = self
                .responses
                .remove_label_values(&[pool.as_str(), &code.to_string(), reason]);
        }
    }

    /// Publishes a backend's live table sessions (refreshed at scrape time).
    pub fn set_backend_sessions(&self, key: BackendKey<'_>, n: u64) {
        self.backend_sessions
            .with_label_values(&key.labels())
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Publishes a pool's entries in the session store (refreshed at scrape time).
    pub fn set_store_entries(&self, pool: &PoolId, n: u64) {
        self.store_entries
            .with_label_values(&[pool.as_str()])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Removes a pool's store series when a reload drops the pool.
    pub fn remove_store_entries(&self, pool: &PoolId) {
        let _ = self.store_entries.remove_label_values(&[pool.as_str()]);
    }

    /// Raises `limpet_session_store_errors_total{kind}` to a store's running total.
    pub fn sync_store_errors(&self, kind: &str, total: u64) {
        let c = self.store_errors.with_label_values(&[kind]);
        let seen = c.get();
        if total > seen {
            c.inc_by(total - seen);
        }
    }

    /// Handles for one backend; also publishes its state and weight.
    pub fn backend(&self, key: BackendKey<'_>, state: BackendState, weight: u32) -> BackendMetrics {
        self.set_backend_state(key, state);
        self.set_backend_weight(key, weight);
        let [pool, backend] = key.labels();
        BackendMetrics {
            requests: CODE_CLASSES.map(|c| self.requests.with_label_values(&[pool, backend, c])),
            response_seconds: self.response_seconds.with_label_values(&[pool, backend]),
            in_flight: self.in_flight.with_label_values(&[pool, backend]),
            connect_errors: self.connect_errors.with_label_values(&[pool, backend]),
            up: self.up.with_label_values(&[pool, backend]),
            weight: self.weight.with_label_values(&[pool, backend]),
            checks_ok: self.health_checks.with_label_values(&[pool, backend, "ok"]),
            checks_failed: self.health_checks.with_label_values(&[pool, backend, "fail"]),
        }
    }

    /// `limpet_backend_state`: 1 for `state`, 0 for the others.
    pub fn set_backend_state(&self, key: BackendKey<'_>, state: BackendState) {
        let [pool, backend] = key.labels();
        for s in BackendState::ALL {
            self.state
                .with_label_values(&[pool, backend, s.as_str()])
                .set(i64::from(*s == state));
        }
    }

    pub fn set_backend_weight(&self, key: BackendKey<'_>, weight: u32) {
        self.weight
            .with_label_values(&key.labels())
            .set(f64::from(weight));
    }

    /// Removes every series of a backend that a new configuration no longer has.
    pub fn remove_backend(&self, key: BackendKey<'_>) {
        let [pool, backend] = key.labels();
        for c in CODE_CLASSES {
            let _ = self.requests.remove_label_values(&[pool, backend, c]);
        }
        for s in BackendState::ALL {
            let _ = self.state.remove_label_values(&[pool, backend, s.as_str()]);
        }
        let pb = [pool, backend];
        let _ = self.response_seconds.remove_label_values(&pb);
        let _ = self.in_flight.remove_label_values(&pb);
        let _ = self.connect_errors.remove_label_values(&pb);
        let _ = self.weight.remove_label_values(&pb);
        let _ = self.up.remove_label_values(&pb);
        for r in ["ok", "fail"] {
            let _ = self.health_checks.remove_label_values(&[pool, backend, r]);
        }
        let _ = self.backend_sessions.remove_label_values(&pb);
    }

    /// Decision counters for a pool's methods (names) × outcomes (names).
    pub fn decisions(&self, pool: &PoolId, methods: &[&str], outcomes: &[&str]) -> DecisionMetrics {
        DecisionMetrics {
            counters: methods
                .iter()
                .map(|m| {
                    outcomes
                        .iter()
                        .map(|o| self.decisions.with_label_values(&[pool.as_str(), m, o]))
                        .collect()
                })
                .collect(),
        }
    }

    /// Removes the decision series of a pool (or of a method it no longer has).
    pub fn remove_decisions(&self, pool: &PoolId, method: &str, outcomes: &[&str]) {
        for o in outcomes {
            let _ = self.decisions.remove_label_values(&[pool.as_str(), method, o]);
        }
    }

    pub fn count_reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Prometheus text exposition of every series.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail on I/O; a failure would mean an invalid
        // metric family, which registration already rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(pool: &'a PoolId, backend: &'a BackendId) -> BackendKey<'a> {
        BackendKey { pool, backend }
    }

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.render()).unwrap()
    }

    #[test]
    fn backend_series_appear_and_disappear() {
        let m = Metrics::new().unwrap();
        let (web, web1) = (PoolId::new("web"), BackendId::new("web-1"));
        let b = m.backend(key(&web, &web1), BackendState::Draining, 3);
        b.count_status(204);
        b.count_status(503);
        b.in_flight.inc();
        let t = text(&m);
        assert!(
            t.contains(r#"limpet_backend_requests_total{backend="web-1",code="2xx",pool="web"} 1"#),
            "{t}"
        );
        assert!(t.contains(r#"limpet_backend_requests_total{backend="web-1",code="5xx",pool="web"} 1"#));
        assert!(t.contains(r#"limpet_backend_state{backend="web-1",pool="web",state="draining"} 1"#));
        assert!(t.contains(r#"limpet_backend_state{backend="web-1",pool="web",state="active"} 0"#));
        assert!(t.contains(r#"limpet_backend_weight{backend="web-1",pool="web"} 3"#));
        m.remove_backend(key(&web, &web1));
        assert!(!text(&m).contains("web-1"));
    }

    /// The HELP of `limpet_backend_sessions` says what the number is: table entries
    /// plus the estimate of cookie sessions.
    #[test]
    fn backend_sessions_help_names_both_sources() {
        let m = Metrics::new().unwrap();
        m.set_backend_sessions(key(&PoolId::new("web"), &BackendId::new("web-1")), 3);
        let t = text(&m);
        let help = t
            .lines()
            .find(|l| l.starts_with("# HELP limpet_backend_sessions "))
            .unwrap();
        assert!(help.contains("table") && help.contains("cookie"), "{help}");
    }

    #[test]
    fn decisions_by_method_and_outcome() {
        let m = Metrics::new().unwrap();
        let d = m.decisions(&PoolId::new("web"), &["cookie"], &["hit", "new"]);
        d.count(0, 1);
        d.count(0, 1);
        d.count(3, 9); // out of range: ignored, never a panic
        assert!(text(&m)
            .contains(r#"limpet_persistence_decisions_total{method="cookie",outcome="new",pool="web"} 2"#));
    }
}
