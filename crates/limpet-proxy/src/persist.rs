//! The persistence chain of one request: each method of the pool, in order, until one
//! resolves to a usable backend; then, once the backend that answers is known, every
//! method that was consulted and missed (or whose session failover moved) records it.
//!
//! Methods after the one that hits are not consulted. A method that has nothing to go
//! on (no session header, no hash key) is skipped without a decision. Table lookups
//! that fail count as a miss, never as an error for the client.

use std::net::IpAddr;
use std::time::Duration;

use http::HeaderMap;
use limpet_affinity::{cookie_values, resolve_cookie, CookieLookup, Outcome};
use limpet_config::{HashKey, HeaderPersistence, Persistence};
use limpet_sessions::{Lookup, SessionStore, TableKey};

use crate::request::{masked_ip, query_param};
use crate::snapshot::{outcome_index, PoolRt, Snapshot};

/// Longest session id accepted by a `header` table: longer ones are `invalid`.
pub const MAX_SESSION_ID: usize = 1024;

/// What one consulted method found.
#[derive(Debug, Clone)]
pub struct Eval {
    /// Index into the pool's methods.
    pub method: usize,
    pub outcome: Outcome,
    /// The table entry this method would record, with its TTL.
    pub record: Option<(TableKey, Duration)>,
}

/// The chain's verdict for one request.
#[derive(Debug, Default)]
pub struct Resolution {
    /// The backend a method pinned the request to.
    pub pinned: Option<usize>,
    /// A method found the session's backend down and the pool is strict.
    pub strict_refusal: bool,
    pub evals: Vec<Eval>,
}

/// Everything the chain reads from the request.
pub struct RequestView<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub path: &'a [u8],
    pub client: Option<IpAddr>,
    /// [`hash_key`] of the request, computed once when the pool hashes.
    pub hash_key: Option<u64>,
}

/// The request's consistent-hash key under `key`, if the request has that source.
pub fn hash_key(key: &HashKey, req: &RequestView<'_>) -> Option<u64> {
    let hash = limpet_balance::hash_bytes;
    match key {
        HashKey::ClientIp => match req.client? {
            IpAddr::V4(v4) => Some(hash(&v4.octets())),
            IpAddr::V6(v6) => Some(hash(&v6.octets())),
        },
        HashKey::Header(name) => req.headers.get(name.as_str()).map(|v| hash(v.as_bytes())),
        HashKey::Cookie(name) => cookie_values(
            req.headers
                .get_all(http::header::COOKIE)
                .iter()
                .map(|v| v.as_bytes()),
            name.as_bytes(),
        )
        .next()
        .map(hash),
        HashKey::Query(name) => query_param(req.query, name).map(hash),
        HashKey::Path => Some(hash(req.path)),
    }
}

/// Backend `i` as the target of an existing session: hit when it may serve it.
fn table_outcome(pool: &PoolRt, backend: Option<usize>) -> (Outcome, Option<usize>) {
    match backend {
        None => (Outcome::Invalid, None),
        Some(i) if pool.backends[i].keeps_sessions() => (Outcome::Hit, Some(i)),
        Some(_) => (Outcome::BackendDown, None),
    }
}

async fn look_up(
    store: &dyn SessionStore,
    pool: &PoolRt,
    key: TableKey,
    now: u64,
) -> (Outcome, Option<usize>) {
    match store.get(key, &pool.id, now).await {
        Ok(Lookup::Live { backend, .. }) => {
            table_outcome(pool, pool.backend_index(backend.as_str().as_bytes()))
        }
        Ok(Lookup::Expired) => (Outcome::Expired, None),
        Ok(Lookup::Absent) => (Outcome::New, None),
        Err(e) => {
            tracing::debug!(pool = %pool.id, error = %e, "session store lookup failed");
            (Outcome::New, None)
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

/// Consults the pool's methods in order.
pub async fn resolve(
    snap: &Snapshot,
    pool: &PoolRt,
    store: &dyn SessionStore,
    req: &RequestView<'_>,
    now: u64,
) -> Resolution {
    let mut res = Resolution::default();
    for (mi, method) in pool.methods.iter().enumerate() {
        let mut record = None;
        let (outcome, hit) = match method {
            Persistence::Cookie(cookie) => {
                let Some(keys) = &snap.keyring else { continue };
                let values = cookie_values(
                    req.headers
                        .get_all(http::header::COOKIE)
                        .iter()
                        .map(|v| v.as_bytes()),
                    cookie.name.as_bytes(),
                );
                let lookup = resolve_cookie(keys, pool.id.as_str(), cookie.max_ttl, values, now, |id| {
                    let i = pool.backend_index(id)?;
                    Some((i, pool.backends[i].keeps_sessions()))
                });
                match lookup {
                    CookieLookup::Hit(i) => (Outcome::Hit, Some(i)),
                    CookieLookup::Miss(o) => (o, None),
                }
            }
            Persistence::SourceIp(s) => {
                let Some(ip) = req.client else { continue };
                let key = TableKey::new(
                    &pool.id,
                    "source_ip",
                    &masked_ip(ip, s.ipv4_prefix, s.ipv6_prefix),
                );
                record = Some((key, s.ttl));
                look_up(store, pool, key, now).await
            }
            Persistence::Header(h) => {
                let Some(id) = req.headers.get(h.name.as_str()).map(|v| v.as_bytes()) else {
                    continue;
                };
                if id.is_empty() || id.len() > MAX_SESSION_ID {
                    (Outcome::Invalid, None)
                } else {
                    let key = TableKey::new(&pool.id, "header", id);
                    record = Some((key, header_ttl(h, req.headers)));
                    look_up(store, pool, key, now).await
                }
            }
            Persistence::Hash => {
                let Some(key) = req.hash_key else { continue };
                match pool.hash_pick(key, |i| pool.backends[i].keeps_sessions()) {
                    Some(i) => (Outcome::Hit, Some(i)),
                    None => (Outcome::BackendDown, None),
                }
            }
        };
        pool.decisions
            .count(pool.method_label[mi], outcome_index(outcome));
        res.evals.push(Eval {
            method: mi,
            outcome,
            record,
        });
        if outcome == Outcome::BackendDown && pool.on_backend_down == limpet_config::OnBackendDown::Strict {
            res.strict_refusal = true;
            return res;
        }
        if let Some(i) = hit {
            res.pinned = Some(i);
            return res;
        }
    }
    res
}

/// Records the serving backend in every consulted table that missed, or whose session
/// failover moved (`moved`): the old entry goes, a new one with a fresh static TTL
/// takes its place.
pub async fn record_tables(
    store: &dyn SessionStore,
    pool: &PoolRt,
    evals: &[Eval],
    backend: usize,
    moved: bool,
    now: u64,
) {
    let id = &pool.backends[backend].id;
    for e in evals {
        let Some((key, ttl)) = e.record else { continue };
        // Whether an entry naming another backend is in the way.
        let replace = match e.outcome {
            // A hit that failover did not move needs nothing.
            Outcome::Hit if !moved => continue,
            Outcome::Hit | Outcome::Repinned => moved,
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
