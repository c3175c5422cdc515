//! The cookie methods' half of the chain on the way out: which `Set-Cookie` values a
//! response carries, by limpet-affinity's issue rules, each session counted in its
//! backend's sketch.

use std::time::Duration;

use http::HeaderMap;
use limpet_affinity::{
    app_cookie, delete_cookie, encode_session, set_cookie, Follow, Issue, Keyring, Lifetime, Outcome, Scheme,
    Scope, Served,
};
use limpet_config::{CookiePersistence, Persistence};

use super::Eval;
use crate::pool::PoolRt;

/// The `Set-Cookie` values limpet adds to a response from backend `backend`, one per
/// cookie method that must change (see [`limpet_affinity::needs_new`] and
/// [`limpet_affinity::follow`] for the rules).
pub fn set_cookies(to: &Issuer<'_>, evals: &[Eval], served: Served, response: &HeaderMap) -> Vec<String> {
    let (pool, now) = (to.pool, to.now);
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
                out.push(to.issued(cookie, pool.id.as_str().into(), issue));
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
            Follow::Delete => out.push(delete_cookie(cookie, to.scheme)),
            Follow::Issue { app, issue } => {
                let scope = Scope {
                    pool: pool.id.as_str(),
                    follows: Some(app),
                };
                out.push(to.issued(cookie, scope, issue));
            }
        }
    }
    out
}

/// Counts a session of backend `backend` in its cookie-session sketch.
pub(super) fn counted(pool: &PoolRt, backend: usize, session: u64, expires: u64, now: u64) {
    if let Some(sketch) = &pool.backends[backend].live.sessions {
        sketch.record(session, expires, now);
    }
}

/// What every cookie of one response shares: who signs, which backend it pins, how
/// the client reached limpet, and when.
pub struct Issuer<'a> {
    pub keys: &'a Keyring,
    pub pool: &'a PoolRt,
    pub backend: usize,
    pub scheme: Scheme,
    pub now: u64,
}

impl Issuer<'_> {
    /// The `Set-Cookie` value of a cookie pinning the backend in `scope` for `issue`;
    /// the session is counted.
    fn issued(&self, cookie: &CookiePersistence, scope: Scope<'_>, issue: Issue) -> String {
        let ttl = Duration::from_secs(u64::from(issue.lifetime.wire()));
        let id = self.pool.backends[self.backend].id.as_str();
        let (value, session) = encode_session(self.keys, scope, id, issue.issued_at, ttl);
        let max_ttl = cookie.max_ttl.as_secs();
        counted(self.pool, self.backend, session, issue.expires(max_ttl), self.now);
        set_cookie(cookie, &value, issue.max_age(max_ttl, self.now), self.scheme)
    }
}
