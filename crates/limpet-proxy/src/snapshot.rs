//! The immutable runtime view of one configuration generation: only what the YAML
//! says, and handles to what lives beside it (metrics, [`crate::live`] state) resolved
//! once here rather than per request. A request pins one `Arc<Snapshot>` for its whole
//! life; a reload builds a new one and swaps it in with a single store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use limpet_affinity::{Keyring, Outcome};
use limpet_balance::{HashRing, Live, Picker, Policy};
use limpet_config::{
    Backend, BackendId, BackendState, Balance, Config, HashConfig, HealthCheck, HostMatch, OnBackendDown,
    PassiveHealth, Persistence, PoolId,
};
use limpet_metrics::{BackendKey, BackendMetrics, DecisionMetrics, Metrics, PoolLabel, ResponseCounters};
use limpet_sessions::SessionStore;

use crate::exchange::Refusal;
use crate::live::{BackendLive, Joined, PoolLive};
use crate::load::Loaded;

pub struct Snapshot {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub config: Arc<Config>,
    pub keyring: Option<Keyring>,
    pub pools: Vec<PoolRt>,
    pub routes: Vec<RouteRt>,
}

pub struct RouteRt {
    pub host: HostMatch,
    pub path_prefix: String,
    pub pool: usize,
}

pub struct PoolRt {
    pub id: PoolId,
    pub balance: Balance,
    /// Chooses backends for new sessions, from the configured weights.
    pub picker: Picker,
    pub backends: Vec<BackendRt>,
    by_id: HashMap<Box<[u8]>, usize>,
    /// Every persistence method, in the configured order.
    pub methods: Vec<Persistence>,
    /// `methods[i]`'s row in `decisions` (one row per distinct method name).
    pub method_label: Vec<usize>,
    /// The rows of `decisions`: each distinct method name, in order.
    method_names: Vec<&'static str>,
    /// Does any method keep sessions in the store?
    pub uses_tables: bool,
    pub hash: HashConfig,
    pub on_backend_down: OnBackendDown,
    pub retries: u32,
    pub decisions: DecisionMetrics,
    pub slow_start: Option<std::time::Duration>,
    pub health_check: Option<HealthCheck>,
    pub passive_health: Option<PassiveHealth>,
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

/// Every persistence method name, as used in the `method` label.
const METHODS: [&str; 4] = ["cookie", "source_ip", "header", "hash"];

pub fn outcome_index(o: Outcome) -> usize {
    Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0)
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

    /// The backend that owns `key` on the ring, whatever its state and load: where
    /// the key's session lives while that backend can keep it.
    pub fn hash_owner(&self, key: u64) -> Option<usize> {
        self.picker.hash_owner(key)
    }

    /// Does this pool hash (balance `consistent_hash` or a `hash` method)?
    pub fn hashes(&self) -> bool {
        self.picker.ring().is_some()
    }
}

/// The balancing policy of a configured balance.
fn policy(b: Balance) -> Policy {
    match b {
        Balance::RoundRobin => Policy::RoundRobin,
        Balance::Random => Policy::Random,
        Balance::LeastRequests => Policy::LeastRequests,
        Balance::ConsistentHash => Policy::ConsistentHash,
    }
}

/// The metric handles of backend `b` of `pool`: those of `known`, the same backend in
/// the previous generation, when it was there (its counters and histogram go on), with
/// its state and weight gauges updated if they changed.
fn backend_metrics(
    metrics: &Metrics,
    pool: &PoolId,
    b: &Backend,
    known: Option<&BackendRt>,
) -> BackendMetrics {
    let key = BackendKey { pool, backend: &b.id };
    let Some(old) = known else {
        return metrics.backend(key, b.state, b.weight);
    };
    if old.state != b.state {
        metrics.set_backend_state(key, b.state);
    }
    if old.weight != b.weight {
        metrics.set_backend_weight(key, b.weight);
    }
    old.metrics.clone()
}

impl Snapshot {
    /// Builds generation `generation` from a loaded configuration, at `now` on the
    /// health clock (when backends a reload adds join). Metric series of backends and
    /// pools that `prev` had and this one lacks are removed.
    pub fn build(
        loaded: Loaded,
        generation: u64,
        metrics: &Metrics,
        prev: Option<&Snapshot>,
        now: u64,
    ) -> Snapshot {
        let Loaded {
            config,
            keyring,
            warnings: _,
        } = loaded;
        let mut pools = Vec::with_capacity(config.pools.len());
        let mut index = HashMap::new();
        // What survives from the previous generation is reused rather than rebuilt:
        // metric handles, decision counters, hash rings. A reload of a large
        // configuration then costs little more than parsing it.
        let prev_pools: HashMap<&PoolId, &PoolRt> = prev
            .map(|p| p.pools.iter().map(|pool| (&pool.id, pool)).collect())
            .unwrap_or_default();
        for (i, pool) in config.pools.values().enumerate() {
            index.insert(pool.id.clone(), i);
            let before = prev_pools.get(&pool.id).copied();
            // The longest a cookie session of this pool lives: its TTL for a
            // duration-based cookie, max_ttl for one that follows the application's.
            let horizon = pool
                .persistence
                .iter()
                .filter_map(|m| match m {
                    Persistence::Cookie(c) if c.follow.is_some() => Some(c.max_ttl.as_secs()),
                    Persistence::Cookie(c) => Some(c.ttl.as_secs()),
                    _ => None,
                })
                .max();
            let backends: Vec<BackendRt> = pool
                .backends
                .iter()
                .map(|b: &Backend| {
                    let known =
                        before.and_then(|p| Some(&p.backends[p.backend_index(b.id.as_str().as_bytes())?]));
                    let metrics = backend_metrics(metrics, &pool.id, b, known);
                    if known.is_none() {
                        metrics.up.set(1);
                    }
                    // Backends limpet starts with need no ramp; those a reload adds
                    // join now.
                    let joined = if prev.is_some() {
                        Joined::At(now)
                    } else {
                        Joined::AtStart
                    };
                    let live = BackendLive::carry(known.map(|k| &k.live), horizon, joined);
                    BackendRt {
                        id: b.id.clone(),
                        address: b.address,
                        weight: b.weight,
                        state: b.state,
                        metrics,
                        live,
                    }
                })
                .collect();
            // Weights for new sessions, from configuration alone: only active
            // backends take them. Health and slow start act at pick time, so a backend
            // that is down during a reload is back in rotation as soon as it recovers.
            let weights: Vec<u32> = backends
                .iter()
                .map(|b| {
                    if b.state == BackendState::Active {
                        b.weight
                    } else {
                        0
                    }
                })
                .collect();
            let mut labels: Vec<&'static str> = Vec::new();
            let method_label = pool
                .persistence
                .iter()
                .map(|m| match labels.iter().position(|l| *l == m.method()) {
                    Some(i) => i,
                    None => {
                        labels.push(m.method());
                        labels.len() - 1
                    }
                })
                .collect();
            let uses_tables = pool
                .persistence
                .iter()
                .any(|m| matches!(m, Persistence::SourceIp(_) | Persistence::Header(_)));
            let hashes = pool.balance == Balance::ConsistentHash
                || pool.persistence.iter().any(|m| matches!(m, Persistence::Hash));
            // Every configured backend owns points, whatever its state: exclusions are
            // made per pick, so a state change never reshuffles the others' keys.
            let ids: Vec<(&str, u32)> = backends.iter().map(|b| (b.id.as_str(), b.weight)).collect();
            let same_backends = before.is_some_and(|p| {
                p.backends
                    .iter()
                    .map(|b| (b.id.as_str(), b.weight))
                    .eq(ids.iter().copied())
            });
            let ring = hashes.then(|| match before.and_then(|p| p.picker.ring()) {
                Some(r) if same_backends => r.clone(),
                _ => HashRing::new(&ids),
            });
            let picker = Picker::new(policy(pool.balance), &weights, ring, pool.hash.balance_factor);
            let outcomes = Outcome::ALL.map(Outcome::as_str);
            let decisions = match before {
                Some(p) if p.method_names == labels => p.decisions.clone(),
                _ => metrics.decisions(&pool.id, &labels, &outcomes),
            };
            let responses = match before {
                Some(p) => p.responses.clone(),
                None => metrics.responses(PoolLabel::Pool(&pool.id), &Refusal::pool_kinds()),
            };
            pools.push(PoolRt {
                responses,
                id: pool.id.clone(),
                balance: pool.balance,
                picker,
                by_id: backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (Box::from(b.id.as_str().as_bytes()), i))
                    .collect(),
                live: PoolLive::carry(
                    before.map(|p| &p.live),
                    same_backends,
                    pool.rebalance,
                    backends.len(),
                ),
                backends,
                decisions,
                method_names: labels,
                methods: pool.persistence.clone(),
                method_label,
                uses_tables,
                hash: pool.hash.clone(),
                on_backend_down: pool.on_backend_down,
                retries: pool.retries,
                slow_start: pool.slow_start,
                health_check: pool.health_check.clone(),
                passive_health: pool.passive_health,
            });
        }
        let routes = config
            .routes
            .iter()
            .filter_map(|r| {
                Some(RouteRt {
                    host: r.host.clone(),
                    path_prefix: r.path_prefix.clone(),
                    pool: *index.get(&r.pool)?,
                })
            })
            .collect();
        if let Some(prev) = prev {
            for old in &prev.pools {
                let now = pools.iter().find(|p| p.id == old.id);
                for b in &old.backends {
                    if now.is_none_or(|p| p.backend_index(b.id.as_str().as_bytes()).is_none()) {
                        metrics.remove_backend(BackendKey {
                            pool: &old.id,
                            backend: &b.id,
                        });
                    }
                }
                let outcomes = Outcome::ALL.map(Outcome::as_str);
                for m in METHODS {
                    let kept = now.is_some_and(|p| p.methods.iter().any(|x| x.method() == m));
                    if !kept {
                        metrics.remove_decisions(&old.id, m, &outcomes);
                    }
                }
                if now.is_none() {
                    metrics.remove_responses(&old.id, &Refusal::pool_kinds());
                }
                if now.is_none_or(|p| !p.uses_tables) {
                    metrics.remove_store_entries(&old.id);
                }
            }
        }
        Snapshot {
            generation,
            loaded_at: SystemTime::now(),
            config,
            keyring,
            pools,
            routes,
        }
    }

    /// First route matching `host` (lower-case, no port) and `path`.
    pub fn route(&self, host: &[u8], path: &[u8]) -> Option<usize> {
        self.routes
            .iter()
            .find(|r| {
                let host_ok = match &r.host {
                    HostMatch::Any => true,
                    HostMatch::Exact(h) => host == h.as_bytes(),
                    HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_bytes()),
                };
                host_ok && path.starts_with(r.path_prefix.as_bytes())
            })
            .map(|r| r.pool)
    }
}
