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
use limpet_affinity::{
    app_cookie, cookie_values, delete_cookie, encode_session, resolve_cookie, set_cookie, CookieLookup,
    Follow, Held, Issue, Keyring, Lifetime, Outcome, Scheme, Scope, Served, MAX_APP_VALUE,
};
use limpet_config::{CookiePersistence, HashKey, HeaderPersistence, Persistence};
use limpet_sessions::{Lookup, SessionStore, TableKey};

use crate::clock::now_ms;
use crate::request::{masked_ip, query_param};
use crate::snapshot::{outcome_index, PoolRt, Snapshot};

/// Clients reach limpet over plain HTTP until listeners speak TLS: `secure: auto`
/// cookies are not `Secure` yet.
const SCHEME: Scheme = Scheme::Http;

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
    /// An application-controlled cookie method: the application cookie the request
    /// carried, and the session of limpet's cookie when it hit.
    pub app: Option<(Vec<u8>, Option<Issue>)>,
}

/// The chain's verdict for one request.
#[derive(Debug, Default)]
pub struct Resolution {
    /// The backend a method pinned the request to.
    pub pinned: Option<usize>,
    /// A method found the session's backend down and the pool is strict.
    pub strict_refusal: bool,
    /// The session is being moved off an over-loaded backend: pick an under-loaded one.
    pub rebalanced: bool,
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
fn table_outcome(pool: &PoolRt, backend: Option<usize>, clock: u64) -> (Outcome, Option<usize>) {
    match backend {
        None => (Outcome::Invalid, None),
        Some(i) if pool.backends[i].keeps_sessions(clock) => (Outcome::Hit, Some(i)),
        Some(_) => (Outcome::BackendDown, None),
    }
}

/// A table lookup: the outcome, the backend of a hit, and when the session began
/// (unix seconds; estimated from its expiry and the method's configured `ttl`).
async fn look_up(
    store: &dyn SessionStore,
    pool: &PoolRt,
    key: TableKey,
    ttl: Duration,
    now: u64,
) -> (Outcome, Option<usize>, Option<u64>) {
    match store.get(key, &pool.id, now).await {
        Ok(Lookup::Live { backend, expires }) => {
            let (o, i) = table_outcome(pool, pool.backend_index(backend.as_str().as_bytes()), now_ms());
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

/// Consults the pool's methods in order.
pub async fn resolve(
    snap: &Snapshot,
    pool: &PoolRt,
    store: &dyn SessionStore,
    req: &RequestView<'_>,
    now: u64,
) -> Resolution {
    let mut res = Resolution::default();
    let clock = now_ms();
    for (mi, method) in pool.methods.iter().enumerate() {
        let mut record = None;
        let mut app = None;
        // When the session that hit began (unix seconds), where known.
        let mut born = None;
        let (outcome, hit) = match method {
            Persistence::Cookie(cookie) => {
                let Some(keys) = &snap.keyring else { continue };
                let cookies = || {
                    req.headers
                        .get_all(http::header::COOKIE)
                        .iter()
                        .map(|v| v.as_bytes())
                };
                let follows = match &cookie.follow {
                    None => None,
                    Some(name) => match cookie_values(cookies(), name.as_bytes()).next() {
                        Some(v) if !v.is_empty() && v.len() <= MAX_APP_VALUE => Some(v),
                        // No application session: not sticky through this method.
                        _ => continue,
                    },
                };
                let scope = Scope {
                    pool: pool.id.as_str(),
                    follows,
                };
                let values = cookie_values(cookies(), cookie.name.as_bytes());
                let lookup = resolve_cookie(keys, scope, cookie.max_ttl, values, now, |id| {
                    let i = pool.backend_index(id)?;
                    Some((i, pool.backends[i].keeps_sessions(clock)))
                });
                let (outcome, hit, held) = match lookup {
                    CookieLookup::Hit(i, held) => {
                        let Held { issue, session } = held;
                        counted(pool, i, session, issue.expires(cookie.max_ttl.as_secs()), now);
                        (Outcome::Hit, Some(i), Some(issue))
                    }
                    CookieLookup::Miss(o) => (o, None, None),
                };
                app = follows.map(|v| (v.to_vec(), held));
                born = held.map(|h| h.issued_at);
                (outcome, hit)
            }
            Persistence::SourceIp(s) => {
                let Some(ip) = req.client else { continue };
                let key = TableKey::new(
                    &pool.id,
                    "source_ip",
                    &masked_ip(ip, s.ipv4_prefix, s.ipv6_prefix),
                );
                record = Some((key, s.ttl));
                let (o, hit, began) = look_up(store, pool, key, s.ttl, now).await;
                born = began;
                (o, hit)
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
                    let (o, hit, began) = look_up(store, pool, key, h.ttl, now).await;
                    born = began;
                    (o, hit)
                }
            }
            Persistence::Hash => {
                let Some(key) = req.hash_key else { continue };
                let keeps = |i: usize| pool.backends[i].keeps_sessions(clock);
                match pool.hash_owner(key) {
                    // The key's own backend: within the load bound, or the next one
                    // of the ring that has room (that is bounded loads, not a miss).
                    Some(owner) if keeps(owner) => match pool.hash.balance_factor {
                        None => (Outcome::Hit, Some(owner)),
                        Some(_) => (Outcome::Hit, pool.hash_pick(key, keeps)),
                    },
                    // Its backend cannot keep it: a strict pool refuses; otherwise the
                    // key moves to the next usable backend of the ring, and only the
                    // keys of that backend move.
                    Some(_) => (Outcome::BackendDown, pool.hash_pick(key, keeps)),
                    None => continue,
                }
            }
        };
        // Rebalancing: an old enough session on an over-loaded backend moves, within
        // the pool's allowance, to an under-loaded one (the balance picks it).
        let (mut outcome, mut hit) = (outcome, hit);
        if let (Some(i), Some(rb), Some(born)) = (hit, &pool.live.rebalance, born) {
            if outcome == Outcome::Hit
                && now.saturating_sub(born) >= rb.cfg.min_age.as_secs()
                && rb.take_move(i)
            {
                outcome = Outcome::Repinned;
                hit = None;
                res.rebalanced = true;
            }
        }
        pool.decisions
            .count(pool.method_label[mi], outcome_index(outcome));
        res.evals.push(Eval {
            method: mi,
            outcome,
            record,
            app,
        });
        if res.rebalanced {
            return res;
        }
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

/// The `Set-Cookie` values limpet adds to a response from backend `backend`, one per
/// cookie method that must change (see [`limpet_affinity::needs_new`] and
/// [`limpet_affinity::follow`] for the rules).
pub fn set_cookies(
    keys: &Keyring,
    pool: &PoolRt,
    evals: &[Eval],
    backend: usize,
    served: Served,
    response: &HeaderMap,
    now: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    for (mi, method) in pool.methods.iter().enumerate() {
        let Persistence::Cookie(cookie) = method else {
            continue;
        };
        let eval = evals.iter().find(|e| e.method == mi);
        let outcome = eval.map(|e| e.outcome);
        let needs_new = limpet_affinity::needs_new(outcome, served);
        let Some(app_name) = &cookie.follow else {
            if needs_new {
                let issue = Issue {
                    issued_at: now,
                    lifetime: Lifetime::Secs(u32::try_from(cookie.ttl.as_secs()).unwrap_or(u32::MAX - 1)),
                };
                out.push(issued(
                    keys,
                    pool,
                    cookie,
                    pool.id.as_str().into(),
                    backend,
                    issue,
                    now,
                ));
            }
            continue;
        };
        let set_by_app = response
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.as_bytes());
        let from_app = app_cookie(set_by_app, app_name, now);
        let request = eval
            .and_then(|e| e.app.as_ref())
            .map(|(v, held)| (v.as_slice(), *held));
        // Failover or rebalancing moved the session: its expiry goes with it.
        let served = match outcome {
            Some(Outcome::Repinned) => Served::Moved,
            _ => served,
        };
        match limpet_affinity::follow(from_app.as_ref(), request, needs_new, served, now) {
            Follow::Keep => {}
            Follow::Delete => out.push(delete_cookie(cookie, SCHEME)),
            Follow::Issue { app, issue } => {
                let scope = Scope {
                    pool: pool.id.as_str(),
                    follows: Some(app),
                };
                out.push(issued(keys, pool, cookie, scope, backend, issue, now));
            }
        }
    }
    out
}

/// Counts a session of backend `backend` in its cookie-session sketch.
fn counted(pool: &PoolRt, backend: usize, session: u64, expires: u64, now: u64) {
    if let Some(sketch) = &pool.backends[backend].live.sessions {
        sketch.record(session, expires, now);
    }
}

/// The `Set-Cookie` value of a cookie pinning `backend` in `scope` for `issue`; the
/// session is counted.
fn issued(
    keys: &Keyring,
    pool: &PoolRt,
    cookie: &CookiePersistence,
    scope: Scope<'_>,
    backend: usize,
    issue: Issue,
    now: u64,
) -> String {
    let ttl = Duration::from_secs(u64::from(issue.lifetime.wire()));
    let id = pool.backends[backend].id.as_str();
    let (value, session) = encode_session(keys, scope, id, issue.issued_at, ttl);
    let max_ttl = cookie.max_ttl.as_secs();
    counted(pool, backend, session, issue.expires(max_ttl), now);
    set_cookie(cookie, &value, issue.max_age(max_ttl, now), SCHEME)
}
