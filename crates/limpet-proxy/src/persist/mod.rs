//! The persistence chain of one request: each method of the pool, in order, until one
//! resolves to a usable backend; then, once the backend that answers is known, every
//! method that was consulted and missed (or whose session failover moved) records it.
//!
//! Methods after the one that hits are not consulted. A method that has nothing to go
//! on (no session header, no hash key) is skipped without a decision. Table lookups
//! that fail count as a miss, never as an error for the client. A hash key is no
//! session record: it places the request like a new session, only on a backend that
//! takes new ones ([`limpet_affinity::hashed`]).

use std::net::IpAddr;
use std::time::Duration;

use http::HeaderMap;
use limpet_affinity::{
    cookie_values, resolve_cookie, CookieLookup, Held, Issue, Outcome, Scope, Standing, Verdict,
    MAX_APP_VALUE,
};
use limpet_config::{HashKey, Persistence};
use limpet_sessions::{SessionStore, TableKey};

mod cookies;
mod tables;

pub use cookies::{set_cookies, Issuer};
pub use tables::{header_ttl, record_tables};

use cookies::counted;
use tables::look_up;

use crate::clock::now_ms;
use crate::pool::PoolRt;
use crate::request::{masked_ip, query_param};
use crate::snapshot::{outcome_index, Snapshot};

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

/// What the consulted methods found, in chain order. Chains are short (most have one or
/// two methods), so a request's evaluations live inline, without an allocation.
pub type Evals = smallvec::SmallVec<[Eval; 2]>;

/// The chain's verdict for one request.
#[derive(Debug, Default)]
pub struct Resolution {
    /// The backend a method pinned the request to.
    pub pinned: Option<usize>,
    /// A method found the session's backend down and the pool is strict.
    pub strict_refusal: bool,
    /// The session is being moved off an over-loaded backend: pick an under-loaded one.
    pub rebalanced: bool,
    pub evals: Evals,
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

/// Where backend `i` stands for the chain at `clock` (monotonic milliseconds).
fn standing(pool: &PoolRt, i: usize, clock: u64) -> Standing {
    let b = &pool.backends[i];
    if b.takes_new(clock) {
        Standing::TakesNew
    } else if b.keeps_sessions(clock) {
        Standing::KeepsOnly
    } else {
        Standing::Out
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
                let Some(owner) = pool.hash_owner(key) else {
                    continue;
                };
                let standing = standing(pool, owner, clock);
                // The key goes where a new session would (see `hashed`): its owner
                // while that takes new sessions and has room under the load bound,
                // else the next backend of the ring that does. Only the keys of an
                // owner that takes none (draining, disabled, down) move.
                let placed = match (standing, pool.hash.balance_factor) {
                    (Standing::TakesNew, None) => Some(owner),
                    _ => pool.hash_pick(key, |i| pool.takes_new(i, clock)),
                };
                limpet_affinity::hashed(standing, placed)
            }
        };
        // Rebalancing: an old enough session on an over-loaded backend moves, within
        // the pool's allowance, to an under-loaded one (the balance picks it).
        let strict = pool.on_backend_down == limpet_config::OnBackendDown::Strict;
        let may_move = |i: usize| {
            let (Some(rb), Some(born)) = (&pool.live.rebalance, born) else {
                return false;
            };
            now.saturating_sub(born) >= rb.cfg.min_age.as_secs() && rb.take_move(i)
        };
        let (outcome, verdict) = limpet_affinity::verdict(outcome, hit, strict, may_move);
        pool.decisions
            .count(pool.method_label[mi], outcome_index(outcome));
        res.evals.push(Eval {
            method: mi,
            outcome,
            record,
            app,
        });
        match verdict {
            Verdict::Pin(i) => res.pinned = Some(i),
            Verdict::Move => res.rebalanced = true,
            Verdict::Refuse => res.strict_refusal = true,
            Verdict::Next => continue,
        }
        return res;
    }
    res
}

#[cfg(test)]
mod tests;
