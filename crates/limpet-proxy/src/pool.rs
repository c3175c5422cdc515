//! One pool of a snapshot and its backends: the configuration-derived parts and the
//! handles to their live state, with what the request path asks of them: may this
//! backend take a new session or keep one now, which backend gets a new session, where
//! a hash key lives, how many sessions a backend holds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use limpet_balance::{Live, Picker, Policy};
use limpet_config::{
    BackendId, BackendState, Balance, HashConfig, HealthCheck, OnBackendDown, PassiveHealth, Persistence,
    PoolId, UpstreamProtocol,
};
use limpet_metrics::{BackendMetrics, DecisionMetrics, ResponseCounters};
use limpet_sessions::SessionStore;

use crate::live::{BackendLive, PoolLive};
use crate::upstream::UpstreamTlsRt;

pub struct PoolRt {
    pub id: PoolId,
    pub balance: Balance,
    /// Chooses backends for new sessions, from the configured weights.
    pub picker: Picker,
    pub backends: Vec<BackendRt>,
    pub(crate) by_id: HashMap<Box<[u8]>, usize>,
    /// Every persistence method, in the configured order.
    pub methods: Vec<Persistence>,
    /// `methods[i]`'s row in `decisions` (one row per distinct method name).
    pub method_label: Vec<usize>,
    /// The rows of `decisions`: each distinct method name, in order.
    pub(crate) method_names: Vec<&'static str>,
    /// Does any method keep sessions in the store?
    pub uses_tables: bool,
    pub hash: HashConfig,
    pub on_backend_down: OnBackendDown,
    pub retries: u32,
    pub decisions: DecisionMetrics,
    pub slow_start: Option<std::time::Duration>,
    pub health_check: Option<HealthCheck>,
    pub passive_health: Option<PassiveHealth>,
    /// How limpet speaks to the backends, and the TLS material when it encrypts.
    pub protocol: UpstreamProtocol,
    pub tls: Option<UpstreamTlsRt>,
    /// All-down state and rebalancing progress, kept across reloads by pool id.
    pub live: Arc<PoolLive>,
    /// limpet's own responses for this pool, by [`Refusal`].
    pub responses: ResponseCounters,
}

pub struct BackendRt {
    pub id: BackendId,
    pub address: SocketAddr,
    pub weight: u32,
    pub state: BackendState,
    pub metrics: BackendMetrics,
    /// Health and session sketch, kept across reloads by id.
    pub live: BackendLive,
}

impl BackendRt {
    /// May this backend serve a session already pinned to it?
    pub fn keeps_sessions(&self, now: u64) -> bool {
        self.state != BackendState::Disabled && self.live.health.usable(now)
    }

    /// May this backend receive a new session? Configuration says whether it may at
    /// all; health says whether it may now.
    pub fn takes_new(&self, now: u64) -> bool {
        self.state == BackendState::Active && self.weight > 0 && self.live.health.usable(now)
    }
}

impl PoolRt {
    /// Live sessions pinned to backend `b`: table entries plus the estimate of cookie
    /// sessions; None for a pool without persistence that keeps sessions.
    pub fn sessions(&self, b: &BackendRt, store: &dyn SessionStore, now: u64) -> Option<u64> {
        let tables = self.uses_tables.then(|| store.sessions(&self.id, &b.id));
        let cookies = b.live.sessions.as_ref().map(|s| s.estimate(now));
        match (tables, cookies) {
            (None, None) => None,
            (t, c) => Some(t.unwrap_or(0) + c.unwrap_or(0)),
        }
    }

    /// Records that the pool has no backend for a request (a 503); logs the first.
    pub fn mark_all_down(&self) {
        if self.live.mark_all_down() {
            tracing::error!(pool = %self.id, "no backend of this pool can take requests: answering 503 with Retry-After until one can");
        }
    }

    /// Feeds a failure seen in real traffic to backend `i`'s passive health check.
    pub fn passive_failure(&self, i: usize, what: &str, now: u64) {
        let Some(passive) = &self.passive_health else {
            return;
        };
        let b = &self.backends[i];
        if b.live.health.record_failure(passive, now) {
            tracing::warn!(
                pool = %self.id, backend = %b.id, failure = what, max_fails = passive.max_fails,
                cooldown = ?passive.cooldown, "passive health check: backend taken out of rotation"
            );
        }
    }

    /// Chooses a backend for a new session among those that take new sessions now and
    /// are not in `tried`.
    pub fn pick_new(
        &self,
        tried: &[usize],
        hash_key: Option<u64>,
        rebalanced: bool,
        now: u64,
    ) -> Option<usize> {
        let eligible = |i: usize| self.takes_new(i, now) && !tried.contains(&i);
        let ramp = |i: usize| self.backends[i].live.health.ramp(self.slow_start, now);
        let in_flight = |i: usize| self.in_flight(i);
        let under = |i: usize| self.live.rebalance.as_ref().is_some_and(|rb| rb.is_under(i));
        let live = Live {
            eligible: &eligible,
            ramp: &ramp,
            in_flight: &in_flight,
            prefer: rebalanced.then_some(&under as &dyn Fn(usize) -> bool),
        };
        self.picker.pick(&live, hash_key, &mut || rand::random())
    }

    /// May backend `i` receive a new session now?
    pub fn takes_new(&self, i: usize, now: u64) -> bool {
        self.backends[i].takes_new(now)
    }

    /// Clears the all-down state once a backend can take requests again; logs it.
    pub fn note_all_down(&self, now: u64) {
        if self
            .live
            .clear_all_down(self.backends.iter().any(|b| b.takes_new(now)))
        {
            tracing::warn!(pool = %self.id, "pool has a usable backend again");
        }
    }

    pub fn backend_index(&self, id: &[u8]) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Requests in flight on backend `i`: the load of least requests and hash bounds.
    pub fn in_flight(&self, i: usize) -> u64 {
        self.backends[i].metrics.in_flight.get().max(0) as u64
    }

    /// Consistent-hash placement of `key` among `eligible` backends, within the pool's
    /// load bound if it has one. `None` when the pool does not hash.
    pub fn hash_pick(&self, key: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        self.picker.hash_pick(key, eligible, &|i| self.in_flight(i))
    }

    /// The backend that owns `key` on the ring, whatever its state and load: where a
    /// request with that key goes while the backend takes new sessions (a key is no
    /// session record, so a draining owner's keys walk on).
    pub fn hash_owner(&self, key: u64) -> Option<usize> {
        self.picker.hash_owner(key)
    }

    /// Does this pool hash (balance `consistent_hash` or a `hash` method)?
    pub fn hashes(&self) -> bool {
        self.picker.ring().is_some()
    }
}

/// The balancing policy of a configured balance.
pub(crate) fn policy(b: Balance) -> Policy {
    match b {
        Balance::RoundRobin => Policy::RoundRobin,
        Balance::Random => Policy::Random,
        Balance::LeastRequests => Policy::LeastRequests,
        Balance::ConsistentHash => Policy::ConsistentHash,
    }
}
