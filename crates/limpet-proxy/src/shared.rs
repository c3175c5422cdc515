//! What every hook and background service reaches: the current snapshot, the
//! process-wide metrics and session store, and the count of requests in progress.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use limpet_config::{BackendId, PoolId};
use limpet_metrics::{
    BackendKey, IntCounter, IntGauge, ListenerCounters, Metrics, PoolLabel, ProxyProtocolRefusals,
    ResponseCounters,
};
use limpet_sessions::SessionStore;

use crate::access::AccessLog;
use crate::clock::unix_now;
use crate::exchange::Refusal;
use crate::local::LocalError;
use crate::snapshot::Snapshot;

pub struct Shared {
    pub current: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    /// The last rejected reload's errors, shown by `/status`; cleared by a good reload.
    pub last_reload_error: ArcSwapOption<String>,
    /// Downstream requests in progress (WebSockets included), for graceful stop.
    pub active: Arc<AtomicUsize>,
    /// Session tables; outlive every snapshot, so sessions survive reloads.
    pub store: Arc<dyn SessionStore>,
    /// limpet's own responses to requests that have no pool (`pool=""`).
    pub unrouted: ResponseCounters,
    /// `limpet_requests_total` of each listener (listeners are fixed at start).
    pub listeners: Vec<ListenerCounters>,
    /// Refused PROXY headers of each listener with `proxy_protocol` (`None` otherwise).
    pub proxy_protocol: Vec<Option<ProxyProtocolRefusals>>,
    /// Open client connections and refusals, by listener; all listeners together.
    pub connections: Vec<ListenerConnections>,
    pub open_connections: AtomicUsize,
    /// Where request lines go.
    pub access: AccessLog,
    /// Held while a reload removes series and while a scrape sets gauges.
    series: std::sync::Mutex<()>,
}

/// The client connections of one listener.
pub struct ListenerConnections {
    /// `limpet_client_connections{listener}`: open now.
    pub open: IntGauge,
    /// `limpet_connections_refused_total{listener}`.
    pub refused: IntCounter,
    /// Whether the listener was last seen at its limit (logged once per transition).
    pub full: AtomicBool,
    /// Slots taken: the count `max_connections` is checked against, taken before the
    /// check so that two accepts cannot both win the last slot.
    taken: AtomicUsize,
}

impl Shared {
    pub fn new(
        snapshot: Snapshot,
        metrics: Metrics,
        store: Arc<dyn SessionStore>,
        access: AccessLog,
    ) -> Self {
        let unrouted = metrics.responses(PoolLabel::Unrouted, &Refusal::unrouted_kinds());
        let listeners = snapshot
            .config
            .listeners
            .iter()
            .map(|l| metrics.listener(&l.address.to_string(), l.tls.is_some()))
            .collect();
        let proxy_protocol = snapshot
            .config
            .listeners
            .iter()
            .map(|l| {
                l.proxy_protocol
                    .then(|| metrics.proxy_protocol(&l.address.to_string()))
            })
            .collect();
        let connections = snapshot
            .config
            .listeners
            .iter()
            .map(|l| {
                let (open, refused) = metrics.connections(&l.address.to_string());
                ListenerConnections {
                    open,
                    refused,
                    full: AtomicBool::new(false),
                    taken: AtomicUsize::new(0),
                }
            })
            .collect();
        Self {
            series: std::sync::Mutex::new(()),
            connections,
            open_connections: AtomicUsize::new(0),
            listeners,
            proxy_protocol,
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            last_reload_error: ArcSwapOption::empty(),
            active: Arc::default(),
            store,
            unrouted,
            access,
        }
    }

    /// Counts a failure of limpet's own resources. Logged at the 1st, 2nd, 4th, 8th…
    /// of a kind: an exhausted file table fails every request, the log must not.
    pub fn local_error(&self, local: LocalError, e: &pingora_error::Error) {
        let total = self.metrics.count_local_error(local.as_str());
        if total.is_power_of_two() {
            tracing::warn!(
                kind = local.as_str(),
                total,
                error = %e,
                "limpet is out of a local resource; requests get 503 until it frees up (no backend is blamed)"
            );
        }
    }

    /// Excludes series removal by a reload and gauge refresh by a scrape.
    pub fn series_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the store's gauges for the current snapshot (called at scrape time).
    pub fn refresh_store_metrics(&self) {
        let _series = self.series_lock();
        let snap = self.current.load_full();
        let now = unix_now();
        for pool in &snap.pools {
            if pool.uses_tables {
                self.metrics
                    .set_store_entries(&pool.id, self.store.entries(&pool.id));
            }
            for b in &pool.backends {
                if let Some(n) = pool.sessions(b, self.store.as_ref(), now) {
                    let key = BackendKey {
                        pool: &pool.id,
                        backend: &b.id,
                    };
                    self.metrics.set_backend_sessions(key, n);
                }
            }
        }
        self.metrics.sync_store_errors("evicted", self.store.evicted());
        let (timeouts, unreachable) = self.store.failures();
        self.metrics.sync_store_errors("timeout", timeouts);
        self.metrics.sync_store_errors("connection", unreachable);
    }
}

/// Every pool with a table method and its backend ids: what the store keeps counts of.
pub fn table_pools(snap: &Snapshot) -> Vec<(PoolId, Vec<BackendId>)> {
    snap.pools
        .iter()
        .filter(|p| p.uses_tables)
        .map(|p| (p.id.clone(), p.backends.iter().map(|b| b.id.clone()).collect()))
        .collect()
}

/// Counts one downstream request while alive.
pub struct Active(Arc<AtomicUsize>);

impl Active {
    pub fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One open client connection of listener `listener`, counted while alive.
pub struct OpenConnection<'a> {
    shared: &'a Shared,
    listener: usize,
}

impl<'a> OpenConnection<'a> {
    /// Counts a new connection, or refuses it (`None`, counted and logged once per
    /// transition) when the server or the listener is at `max_connections`.
    pub fn admit(shared: &'a Shared, snap: &Snapshot, listener: usize) -> Option<Self> {
        let conns = shared.connections.get(listener)?;
        let server_max = usize::try_from(snap.config.server.max_connections).unwrap_or(usize::MAX);
        let listener_max = snap
            .config
            .listeners
            .get(listener)
            .and_then(|l| l.max_connections)
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        // Each count is taken first and checked after, one atomic step each: of two
        // accepts racing for the last slot, one sees the other's count.
        let total = shared.open_connections.fetch_add(1, Ordering::Relaxed);
        let here = conns.taken.fetch_add(1, Ordering::Relaxed);
        if total >= server_max || here >= listener_max {
            shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            conns.taken.fetch_sub(1, Ordering::Relaxed);
            conns.refused.inc();
            if !conns.full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    listener = %snap.config.listeners.get(listener).map(|l| l.address.to_string()).unwrap_or_default(),
                    server_max, listener_max = ?snap.config.listeners.get(listener).and_then(|l| l.max_connections),
                    "max_connections reached: new client connections are closed at once until some close"
                );
            }
            return None;
        }
        if conns.full.swap(false, Ordering::Relaxed) {
            tracing::info!("client connections below max_connections again: accepting");
        }
        conns.open.inc();
        Some(Self { shared, listener })
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(c) = self.shared.connections.get(self.listener) {
            c.taken.fetch_sub(1, Ordering::Relaxed);
            c.open.dec();
        }
    }
}
