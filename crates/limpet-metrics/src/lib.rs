//! limpet's own Prometheus registry (never the process-global default one) with typed
//! handles. Label values come only from configuration ids; handles are resolved when a
//! snapshot is built, so the request path touches only atomics.

use limpet_config::{BackendState, PoolId};
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
/// Counter and gauge handles, for callers that keep their own.
pub use prometheus::{IntCounter, IntGauge};

mod handles;

pub use handles::{
    BackendKey, BackendMetrics, DecisionMetrics, InFlight, ListenerCounters, PoolLabel,
    ProxyProtocolRefusals, ResponseCounters, ResponseKind, LOCAL_ERROR_KINDS, STORE_ERROR_KINDS,
};

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
    retries: IntCounterVec,
    state: IntGaugeVec,
    weight: GaugeVec,
    up: IntGaugeVec,
    health_checks: IntCounterVec,
    decisions: IntCounterVec,
    backend_sessions: IntGaugeVec,
    store_entries: IntGaugeVec,
    store_errors: IntCounterVec,
    local_errors: IntCounterVec,
    responses: IntCounterVec,
    client_requests: IntCounterVec,
    proxy_protocol_refused: IntCounterVec,
    client_connections: IntGaugeVec,
    connections_refused: IntCounterVec,
    pub config_generation: IntGauge,
    config_reloads: IntCounterVec,
    pub last_reload_success: Gauge,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> Result<T, MetricsError> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new();
        // The process's CPU seconds, resident memory, open and maximum file
        // descriptors and start time (`process_*`), read from /proc at each scrape.
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
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
            retries: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "limpet_backend_retries_total",
                        "Requests sent again to another backend after this one closed or reset \
                         the connection before a byte of its response.",
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
            local_errors: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "limpet_local_errors_total",
                        "Failures of limpet's own resources (file descriptors, local ports, memory), never blamed on a backend.",
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
            client_requests: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "limpet_requests_total",
                        "Client requests, by listener, HTTP protocol and whether the connection is TLS.",
                    ),
                    &["listener", "protocol", "tls"],
                )?,
            )?,
            proxy_protocol_refused: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "limpet_proxy_protocol_refused_total",
                        "Connections closed on a listener with proxy_protocol because the PROXY header was malformed or the peer is not a trusted proxy.",
                    ),
                    &["listener", "reason"],
                )?,
            )?,
            client_connections: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("limpet_client_connections", "Client connections open now, by listener."),
                    &["listener"],
                )?,
            )?,
            connections_refused: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "limpet_connections_refused_total",
                        "Client connections closed at once because max_connections (of the server or the listener) was reached.",
                    ),
                    &["listener"],
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
        for kind in LOCAL_ERROR_KINDS {
            self.local_errors.with_label_values(&[kind]);
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

    /// Request counters of one listener (`address`), one per protocol, created at 0.
    pub fn listener(&self, address: &str, tls: bool) -> ListenerCounters {
        let tls = if tls { "true" } else { "false" };
        ListenerCounters {
            h1: self.client_requests.with_label_values(&[address, "h1", tls]),
            h2: self.client_requests.with_label_values(&[address, "h2", tls]),
        }
    }

    /// The open-connection gauge and refusal counter of a listener, created at 0.
    pub fn connections(&self, address: &str) -> (IntGauge, IntCounter) {
        (
            self.client_connections.with_label_values(&[address]),
            self.connections_refused.with_label_values(&[address]),
        )
    }

    /// Refusal counters of a listener with `proxy_protocol`, created at 0.
    pub fn proxy_protocol(&self, address: &str) -> ProxyProtocolRefusals {
        ProxyProtocolRefusals {
            malformed: self
                .proxy_protocol_refused
                .with_label_values(&[address, "malformed"]),
            untrusted: self
                .proxy_protocol_refused
                .with_label_values(&[address, "untrusted"]),
        }
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

    /// `limpet_build_info{version, commit}`, always 1: which build is running.
    pub fn build_info(&self, version: &str, commit: &str) -> Result<(), MetricsError> {
        let info = IntGaugeVec::new(
            Opts::new("limpet_build_info", "The running build of limpet (always 1)."),
            &["version", "commit"],
        )?;
        info.with_label_values(&[version, commit]).set(1);
        self.registry.register(Box::new(info))?;
        Ok(())
    }

    /// Counts one failure of limpet's own resources (`kind`: one of
    /// [`LOCAL_ERROR_KINDS`]) and returns the running total.
    pub fn count_local_error(&self, kind: &str) -> u64 {
        let c = self.local_errors.with_label_values(&[kind]);
        c.inc();
        c.get()
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
            retries: self.retries.with_label_values(&[pool, backend]),
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
        let _ = self.retries.remove_label_values(&pb);
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
mod tests;
