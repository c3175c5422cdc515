//! The table methods' half of the chain: a lookup's outcome, the TTL of a new `header`
//! session, and the record of the serving backend once it is known.

use std::time::Duration;

use http::HeaderMap;
use limpet_affinity::{Outcome, Served};
use limpet_config::HeaderPersistence;
use limpet_sessions::{Lookup, SessionStore, TableKey};

use super::Eval;
use crate::clock::now_ms;
use crate::pool::PoolRt;

/// A table lookup: the outcome, the backend of a hit, and when the session began
/// (unix seconds; estimated from its expiry and the method's configured `ttl`).
pub(super) async fn look_up(
    store: &dyn SessionStore,
    pool: &PoolRt,
    key: TableKey,
    ttl: Duration,
    now: u64,
) -> (Outcome, Option<usize>, Option<u64>) {
    match store.get(key, &pool.id, now).await {
        Ok(Lookup::Live { backend, expires }) => {
            let clock = now_ms();
            let found = pool
                .backend_index(backend.as_str().as_bytes())
                .map(|i| (i, pool.backends[i].keeps_sessions(clock)));
            let (o, i) = limpet_affinity::stored(found);
            // record_tables stores now + ttl + 1.
            (o, i, Some(expires.saturating_sub(ttl.as_secs() + 1)))
        }
        Ok(Lookup::Expired) => (Outcome::Expired, None, None),
        Ok(Lookup::Absent) => (Outcome::New, None, None),
        Err(e) => {
            tracing::debug!(pool = %pool.id, error = %e, "session store lookup failed");
            (Outcome::New, None, None)
        }
    }
}

/// The TTL of a new `header` session: the per-request TTL header (minutes) if present
/// and valid, capped by `max_ttl`; otherwise the configured TTL.
pub fn header_ttl(h: &HeaderPersistence, headers: &HeaderMap) -> Duration {
    let Some(name) = &h.ttl_header else { return h.ttl };
    let Some(raw) = headers.get(name.as_str()) else {
        return h.ttl;
    };
    let minutes = raw.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok());
    match minutes {
        Some(m) if m >= 1 => {
            let asked = Duration::from_secs(m.saturating_mul(60));
            if asked > h.max_ttl {
                tracing::info!(target: "limpet::input", header = %name, minutes = m,
                    "session TTL above max_ttl: capped");
            }
            asked.min(h.max_ttl)
        }
        _ => {
            tracing::info!(target: "limpet::input", header = %name,
                "malformed session TTL header ignored");
            h.ttl
        }
    }
}

/// Records the serving backend in every consulted table that missed, or whose session
/// failover moved (`served`): the old entry goes, a new one with a fresh static TTL
/// takes its place.
pub async fn record_tables(
    store: &dyn SessionStore,
    pool: &PoolRt,
    evals: &[Eval],
    backend: usize,
    served: Served,
    now: u64,
) {
    let id = &pool.backends[backend].id;
    for e in evals {
        let Some((key, ttl)) = e.record else { continue };
        // Whether an entry naming another backend is in the way.
        let replace = match e.outcome {
            // A hit that failover did not move needs nothing.
            Outcome::Hit if served == Served::AsPinned => continue,
            // Failover moved it, or rebalancing did: the old entry goes.
            Outcome::Hit => true,
            Outcome::Repinned => true,
            Outcome::Invalid | Outcome::BackendDown => true,
            Outcome::New | Outcome::Expired => false,
        };
        if replace {
            if let Err(err) = store.delete(key, &pool.id).await {
                tracing::debug!(pool = %pool.id, error = %err, "session store delete failed");
            }
        }
        // Issue times are whole seconds: one more second makes every session last at
        // least its TTL (and less than one second more), as cookies do.
        let expires = now + ttl.as_secs().max(1) + 1;
        if let Err(err) = store.create(key, &pool.id, id, expires, now).await {
            tracing::debug!(pool = %pool.id, error = %err, "session store create failed");
        }
    }
}
