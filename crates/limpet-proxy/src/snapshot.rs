//! The immutable runtime view of one configuration generation: only what the YAML
//! says, and handles to what lives beside it (metrics, [`crate::live`] state) resolved
//! once here rather than per request. A request pins one `Arc<Snapshot>` for its whole
//! life; a reload builds a new one and swaps it in with a single store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use limpet_affinity::{Keyring, Outcome};
use limpet_balance::{HashRing, Picker};
use limpet_config::{Backend, BackendState, Balance, Config, HostMatch, Persistence, PoolId};
use limpet_metrics::{BackendKey, BackendMetrics, Metrics, PoolLabel};

use crate::exchange::Refusal;
use crate::live::{BackendLive, Joined, PoolLive};
use crate::load::Loaded;
use crate::pool::{policy, BackendRt, PoolRt};
use crate::tls::CertStore;

pub struct Snapshot {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub config: Arc<Config>,
    pub keyring: Option<Keyring>,
    pub pools: Vec<PoolRt>,
    pub routes: Vec<RouteRt>,
    pub listeners: Vec<ListenerRt>,
}

/// One listener as this generation sees it (its socket is fixed at start).
pub struct ListenerRt {
    /// The listener's certificates, when it speaks TLS.
    pub certs: Option<Arc<CertStore>>,
    pub redirect_https: bool,
    /// The `Strict-Transport-Security` value, when the listener sends one.
    pub hsts: Option<String>,
}

impl ListenerRt {
    pub fn tls(&self) -> bool {
        self.certs.is_some()
    }
}

pub struct RouteRt {
    pub host: HostMatch,
    pub path_prefix: String,
    pub pool: usize,
}

/// Every persistence method name, as used in the `method` label.
const METHODS: [&str; 4] = ["cookie", "source_ip", "header", "hash"];

pub fn outcome_index(o: Outcome) -> usize {
    Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0)
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
            certs,
            mut pool_tls,
            warnings: _,
        } = loaded;
        let listeners = config
            .listeners
            .iter()
            .zip(certs)
            .map(|(l, certs)| ListenerRt {
                certs,
                redirect_https: l.redirect_https,
                hsts: l
                    .tls
                    .as_ref()
                    .and_then(|t| t.hsts)
                    .map(|d| format!("max-age={}", d.as_secs())),
            })
            .collect();
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
                protocol: pool.protocol,
                tls: pool_tls.remove(&pool.id),
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
            listeners,
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
