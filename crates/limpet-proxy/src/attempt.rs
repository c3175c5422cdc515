//! Which backend a request goes to, attempt after attempt: the pinned backend while it
//! has not failed in this request, then new picks among backends not tried yet, each
//! holding an in-flight slot while it is the current one. Both request drivers (the
//! proxy hooks and the upgrade tunnel) use this and nothing else to choose.

use std::time::Instant;

use limpet_affinity::{Outcome, Served};
use limpet_config::OnBackendDown;
use limpet_metrics::InFlight;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Error;

use crate::clock::now_ms;
use crate::local::LocalError;
use crate::persist::{Evals, Resolution};
use crate::pool::PoolRt;
use crate::snapshot::Snapshot;

/// The backend choices of one request.
#[derive(Default)]
pub struct Attempt {
    /// Index of the routed pool in the snapshot.
    pub pool: Option<usize>,
    /// The deciding persistence method's outcome.
    pub outcome: Option<Outcome>,
    /// Backend named by a valid session, if any.
    pub pinned: Option<usize>,
    /// Backend of the first attempt.
    pub first: Option<usize>,
    /// Backend of the current attempt.
    pub chosen: Option<usize>,
    /// Backends already attempted and failed in this request.
    pub tried: Vec<usize>,
    /// Attempts that failed and were retried or may be: connect failures and
    /// responses dropped before their first byte. Bounded by the pool's `retries`.
    failures: u32,
    /// When the first backend was chosen.
    pub started: Option<Instant>,
    in_flight: Option<InFlight>,
    /// What each consulted persistence method found.
    pub evals: Evals,
    /// The request's consistent-hash key, when the pool hashes and the request has one.
    pub hash_key: Option<u64>,
    /// Rebalancing moves this session: new picks prefer under-loaded backends.
    pub rebalanced: bool,
}

/// What a request does after a connect failure.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterConnectFailure {
    /// Try another backend.
    Retry,
    /// The pinned backend of a strict pool is unreachable: 503, no re-pin.
    Strict,
    /// Retries or backends are exhausted: the error stands.
    GiveUp,
    /// limpet itself ran out of a resource: no backend is blamed, none is tried next.
    Local(LocalError),
}

impl Attempt {
    pub fn pool<'a>(&self, snap: &'a Snapshot) -> Option<&'a PoolRt> {
        snap.pools.get(self.pool?)
    }

    /// Takes the persistence chain's verdict.
    pub fn resolved(&mut self, r: Resolution) {
        self.pinned = r.pinned;
        self.rebalanced = r.rebalanced;
        self.outcome = r.evals.last().map(|e| e.outcome);
        self.evals = r.evals;
    }

    /// Whether the session moved off the backend it was pinned to (failover).
    pub fn served(&self) -> Served {
        if self.pinned.is_some() && self.chosen != self.pinned {
            Served::Moved
        } else {
            Served::AsPinned
        }
    }

    /// Failover moved the request off the backend it started on.
    pub fn repinned(&self) -> bool {
        self.chosen.is_some() && self.chosen != self.first
    }

    /// Backends attempted so far, the current one included.
    pub fn attempts(&self) -> usize {
        let current = self.chosen.filter(|c| !self.tried.contains(c));
        self.tried.len() + usize::from(current.is_some())
    }

    /// Releases the current attempt's in-flight slot (the response is over).
    pub fn release(&mut self) {
        self.in_flight = None;
    }

    /// Chooses the backend of the next attempt: the pinned one unless it failed
    /// already, else a new pick among backends that have not failed. Takes its
    /// in-flight slot. Only a connect failure ([`Attempt::connect_failed`]) rules a
    /// backend out: when Pingora retries because a reused connection was stale, the
    /// backend did nothing wrong and the request goes back to it.
    pub fn next_attempt(&mut self, pool: &PoolRt) -> Option<usize> {
        let pick = match self.pinned {
            Some(p) if !self.tried.contains(&p) => Some(p),
            _ => pool.pick_new(&self.tried, self.hash_key, self.rebalanced, now_ms()),
        }?;
        self.chosen = Some(pick);
        self.first.get_or_insert(pick);
        // Replacing the guard releases the previous attempt's slot.
        self.in_flight = Some(pool.backends[pick].metrics.in_flight_slot());
        self.started.get_or_insert_with(Instant::now);
        Some(pick)
    }

    /// Records a failed connect to the current attempt's backend and says what follows.
    pub fn connect_failed(&mut self, pool: &PoolRt, e: &Error) -> AfterConnectFailure {
        if let Some(local) = LocalError::of(e) {
            return AfterConnectFailure::Local(local);
        }
        self.failures += 1;
        let Some(failed) = self.chosen else {
            return AfterConnectFailure::GiveUp;
        };
        if !self.tried.contains(&failed) {
            self.tried.push(failed);
        }
        pool.backends[failed].metrics.connect_errors.inc();
        pool.passive_failure(failed, "connect failed", now_ms());
        // A strict pool never moves a pinned session elsewhere.
        if pool.on_backend_down == OnBackendDown::Strict && self.pinned == Some(failed) {
            return AfterConnectFailure::Strict;
        }
        if self.may_retry(pool, failed) {
            AfterConnectFailure::Retry
        } else {
            AfterConnectFailure::GiveUp
        }
    }

    /// The current attempt's backend closed or reset the connection before sending a
    /// byte of its response. When the request may go to another backend (the pool's
    /// `retries` and untried backends allow, and a strict pool's pinned session is not
    /// moved), the backend is ruled out for this request, passive health counts the
    /// failure and the retry is counted; `true` then. Otherwise nothing is recorded
    /// here: the error stands and is counted with the request.
    pub fn dropped_before_answer(&mut self, pool: &PoolRt) -> bool {
        let Some(failed) = self.chosen else {
            return false;
        };
        if pool.on_backend_down == OnBackendDown::Strict && self.pinned == Some(failed) {
            return false;
        }
        self.failures += 1;
        if !self.may_retry(pool, failed) {
            return false;
        }
        if !self.tried.contains(&failed) {
            self.tried.push(failed);
        }
        let backend = &pool.backends[failed];
        backend.metrics.retries.inc();
        pool.passive_failure(failed, "closed before answering", now_ms());
        tracing::info!(
            pool = %pool.id,
            backend = %backend.id,
            "backend closed the connection before answering: request sent to another backend"
        );
        true
    }

    /// A reused (pooled) connection to the current backend failed before the response
    /// began: the backend may have closed it while idle, so Pingora sends the request
    /// again, to the same backend. That too is a retry: bounded by the pool's
    /// `retries` and counted. The backend is not ruled out nor blamed.
    pub fn reused_failed(&mut self, pool: &PoolRt) -> bool {
        let Some(current) = self.chosen else {
            return false;
        };
        self.failures += 1;
        if self.failures > pool.retries {
            return false;
        }
        pool.backends[current].metrics.retries.inc();
        true
    }

    /// Whether a request whose attempt on `failed` failed may try another backend:
    /// bounded twice, by the pool's `retries` and by the backends left untried.
    fn may_retry(&self, pool: &PoolRt, failed: usize) -> bool {
        let now = now_ms();
        let others_left = (0..pool.backends.len())
            .any(|i| i != failed && !self.tried.contains(&i) && pool.takes_new(i, now));
        self.failures <= pool.retries && others_left
    }
}

/// The upstream peer for backend `i`: the pool's protocol and TLS, the configured
/// timeouts.
pub fn peer_for(snap: &Snapshot, pool: &PoolRt, i: usize) -> HttpPeer {
    peer(snap, pool, i, false)
}

/// The upstream peer for an upgraded request (WebSocket) to backend `i`: HTTP/1.1
/// whatever the pool's protocol, since upgrades exist only there.
pub fn upgrade_peer_for(snap: &Snapshot, pool: &PoolRt, i: usize) -> HttpPeer {
    peer(snap, pool, i, true)
}

fn peer(snap: &Snapshot, pool: &PoolRt, i: usize, upgrade: bool) -> HttpPeer {
    let tls = pool.tls.as_ref();
    let address = pool.backends[i].address;
    // Without a name (only allowed with verify off) the backend's IP stands in: rustls
    // sends no SNI for an address, and Pingora refuses an empty name outright.
    let sni = match tls {
        Some(t) if t.sni.is_empty() => address.ip().to_string(),
        Some(t) => t.sni.clone(),
        None => String::new(),
    };
    let mut peer = HttpPeer::new(address, tls.is_some(), sni);
    crate::upstream::configure(&mut peer, pool.protocol, tls, upgrade);
    let server = &snap.config.server;
    peer.options.connection_timeout = Some(server.upstream_connect_timeout);
    peer.options.read_timeout = Some(server.upstream_read_timeout);
    peer
}
