//! What every hook and background service reaches: the current snapshot, the
//! process-wide metrics and session store, and the count of requests in progress.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use limpet_config::{BackendId, PoolId};
use limpet_metrics::{
    BackendKey, ListenerCounters, Metrics, PoolLabel, ProxyProtocolRefusals, ResponseCounters,
};
use limpet_sessions::SessionStore;

use crate::clock::unix_now;
use crate::exchange::Refusal;
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
}

impl Shared {
    pub fn new(snapshot: Snapshot, metrics: Metrics, store: Arc<dyn SessionStore>) -> Self {
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
        Self {
            listeners,
            proxy_protocol,
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            last_reload_error: ArcSwapOption::empty(),
            active: Arc::default(),
            store,
            unrouted,
        }
    }

    /// Publishes the store's gauges for the current snapshot (called at scrape time).
    pub fn refresh_store_metrics(&self) {
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
