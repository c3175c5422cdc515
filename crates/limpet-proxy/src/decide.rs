//! The decision on a request head, whichever HTTP engine read it: limits limpet puts on
//! the head, the client's address and request id, the scheme it used, routing, and the
//! persistence chain's verdict in the request's [`Attempt`]. Drivers (the Pingora hooks
//! in `proxy.rs` for HTTP/2, the HTTP/1 engine in `h1/`) act on the [`Verdict`]: they answer it
//! themselves, or proxy to the backend the attempt chooses.

use std::net::IpAddr;

use http::request::Parts;
use http::HeaderValue;
use limpet_affinity::Scheme;

use crate::attempt::Attempt;
use crate::clock::{now_ms, unix_now};
use crate::exchange::{Refusal, Via};
use crate::persist::{self, RequestView};
use crate::request;
use crate::shared::Shared;
use crate::snapshot::Snapshot;

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Proxy it: `Attempt` has its pool and persistence verdict.
    Proxy,
    /// Answer it with limpet's own response, counted under the pool if it has one.
    Refuse(Refusal, Option<usize>),
    /// A listener with `redirect_https`: send the client to https on this host.
    RedirectHttps(String),
}

/// What the decision learned about the client, for the request's later steps.
pub struct Decided {
    pub verdict: Verdict,
    /// The client's address (`X-Forwarded-For` believed from trusted proxies only).
    pub client: Option<IpAddr>,
    /// `X-Request-Id`: a trusted proxy's, or one made here.
    pub request_id: Option<HeaderValue>,
}

/// Decides on request `head` from TCP peer `peer`, arrived through `via` (whose scheme
/// becomes https when a trusted proxy says so); fills in `attempt`.
pub async fn decide(
    shared: &Shared,
    snap: &Snapshot,
    head: &Parts,
    peer: Option<IpAddr>,
    via: &mut Via,
    attempt: &mut Attempt,
) -> Decided {
    let mut decided = Decided {
        verdict: Verdict::Proxy,
        client: None,
        request_id: None,
    };
    if request::header_bytes(&head.uri, &head.headers) > snap.config.server.max_request_header_bytes {
        decided.verdict = Verdict::Refuse(Refusal::HeaderTooLarge, None);
        return decided;
    }
    // RFC 9112 §3.2: HTTP/1.1 requires Host (HTTP/2 carries :authority instead);
    // HTTP/1.0 may omit it.
    let no_host = head.uri.host().is_none() && !head.headers.contains_key(http::header::HOST);
    if head.version == http::Version::HTTP_11 && no_host {
        decided.verdict = Verdict::Refuse(Refusal::BadRequest, None);
        return decided;
    }
    let trusted = &snap.config.server.trusted_proxies;
    decided.client = peer.map(|p| request::client_ip(p, &head.headers, trusted));
    decided.request_id = Some(request::request_id(peer, &head.headers, trusted));
    if !via.tls && peer.is_some_and(|p| request::forwarded_https(p, &head.headers, trusted)) {
        via.scheme = Scheme::Https;
    }
    let host = request::host(&head.uri, &head.headers);
    if snap.listeners.get(via.listener).is_some_and(|l| l.redirect_https) {
        decided.verdict = Verdict::RedirectHttps(String::from_utf8_lossy(&host).into_owned());
        return decided;
    }
    let Some(pool_index) = snap.route(&host, head.uri.path().as_bytes()) else {
        decided.verdict = Verdict::Refuse(Refusal::NoRoute, None);
        return decided;
    };
    attempt.pool = Some(pool_index);
    let pool = &snap.pools[pool_index];
    let mut view = RequestView {
        headers: &head.headers,
        query: head.uri.query(),
        path: head.uri.path().as_bytes(),
        client: decided.client,
        hash_key: None,
    };
    if pool.hashes() {
        view.hash_key = persist::hash_key(&pool.hash.key, &view);
        attempt.hash_key = view.hash_key;
    }
    let resolution = persist::resolve(snap, pool, shared.store.as_ref(), &view, unix_now()).await;
    let strict_refusal = resolution.strict_refusal;
    attempt.resolved(resolution);
    let now = now_ms();
    if strict_refusal {
        decided.verdict = Verdict::Refuse(Refusal::SessionBackendDown, Some(pool_index));
    } else if attempt.pinned.is_none() && !(0..pool.backends.len()).any(|i| pool.takes_new(i, now)) {
        pool.mark_all_down();
        decided.verdict = Verdict::Refuse(Refusal::NoBackend, Some(pool_index));
    }
    decided
}
