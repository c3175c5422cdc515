//! Draining behind consistent hashing, end to end. A request that reaches the `hash`
//! method behind a cookie or table method has no session yet: it is a new one, so a key
//! whose ring owner drains walks on to the next backend that takes new sessions, and
//! the cookie or table records that backend. Sessions that exist on the draining
//! backend stay there. With `hash` alone there is no session record: the draining
//! owner's keys move, as HAProxy and Envoy move hashed traffic off a draining server,
//! and come back when it is active again (docs/config.md, persistence method `hash`).

use limpet_e2e::*;

/// The pool's hash settings: the key comes from `X-User`, unbounded, so that the ring
/// alone says where a key lives.
const BY_USER: &str = "hash: { key: \"header:X-User\" }";

/// Users sent per test: enough that every backend of three owns several keys.
const USERS: usize = 45;

fn user(u: usize) -> String {
    format!("user-{u}")
}

/// GET / with `headers`.
async fn send(c: &reqwest::Client, lb: &Limpet, headers: &[(&str, &str)]) -> Reply {
    let mut req = c.get(lb.url("/"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    reply(req.send().await.unwrap(), "LIMPET").await
}

/// The indices of `homes` that live on `victim`; asserts there are a few.
fn owned_by(homes: &[String], victim: &str) -> Vec<usize> {
    let owned: Vec<usize> = (0..homes.len()).filter(|u| homes[*u] == victim).collect();
    assert!(owned.len() >= 5, "{victim} owns {} of {USERS} keys", owned.len());
    owned
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_then_hash_issues_no_cookie_for_a_draining_owner() {
    let bs = backends("dc", 3).await;
    let spec = PoolSpec::new(&bs).pool_key(BY_USER).cookie().method("hash: {}");
    let lb = spec.start().await;
    let c = client();
    // Every backend active: each user gets a cookie for the backend owning its key.
    let (mut homes, mut cookies) = (Vec::new(), Vec::new());
    for u in 0..USERS {
        let r = send(&c, &lb, &[("x-user", &user(u))]).await;
        assert_eq!(r.status, 200);
        homes.push(r.backend);
        cookies.push(r.set_cookie.expect("a new session gets a cookie"));
    }
    let victim = homes[0].clone();
    let owned = owned_by(&homes, &victim);
    assert!(lb.reload_spec(&spec.clone().state(&victim, "draining")).await);

    // New clients (no cookie) whose keys the draining backend owns: none is served by
    // it, each gets a cookie for the backend that served it, and that is the same
    // backend for the same key every time (the ring's next one).
    for &u in &owned {
        let r = send(&c, &lb, &[("x-user", &user(u))]).await;
        assert_eq!(r.status, 200);
        assert_ne!(
            r.backend,
            victim,
            "{}: a new session on a draining backend",
            user(u)
        );
        let cookie = r.set_cookie.expect("a new session gets a cookie");
        let again = send(&c, &lb, &[("x-user", &user(u))]).await;
        assert_eq!(again.backend, r.backend, "{}: the walk is not stable", user(u));
        // The cookie names the serving backend: without the key it still lands there.
        let held = send(&c, &lb, &[("cookie", &cookie)]).await;
        assert_eq!(
            (held.backend.as_str(), held.set_cookie),
            (r.backend.as_str(), None)
        );
    }
    // Clients whose session lives on the draining backend keep it, cookie untouched.
    for &u in &owned {
        let r = send(&c, &lb, &[("x-user", &user(u)), ("cookie", &cookies[u])]).await;
        assert_eq!((r.backend.as_str(), r.set_cookie), (victim.as_str(), None));
    }
    // Keys of the other backends do not move.
    for (u, home) in homes.iter().enumerate().filter(|(_, h)| **h != victim) {
        assert_eq!(&send(&c, &lb, &[("x-user", &user(u))]).await.backend, home);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_then_hash_records_no_draining_owner() {
    let bs = backends("ds", 3).await;
    let spec = PoolSpec::new(&bs)
        .server_key("trusted_proxies: [127.0.0.1]")
        .pool_key(BY_USER)
        .method("source_ip: { ttl: 15m }")
        .method("hash: {}");
    let lb = spec.start().await;
    let c = client();
    let old = |u: usize| format!("10.1.{u}.1");
    let new = |u: usize| format!("10.2.{u}.1");
    // Every backend active: each address gets a table entry for its key's owner.
    let mut homes = Vec::new();
    for u in 0..USERS {
        let r = send(&c, &lb, &[("x-forwarded-for", &old(u)), ("x-user", &user(u))]).await;
        assert_eq!(r.status, 200);
        homes.push(r.backend);
    }
    let victim = homes[0].clone();
    let owned = owned_by(&homes, &victim);
    assert!(lb.reload_spec(&spec.clone().state(&victim, "draining")).await);

    for &u in &owned {
        // A new address whose key the draining backend owns: served elsewhere...
        let r = send(&c, &lb, &[("x-forwarded-for", &new(u)), ("x-user", &user(u))]).await;
        assert_eq!(r.status, 200);
        assert_ne!(
            r.backend,
            victim,
            "{}: a new session on a draining backend",
            new(u)
        );
        // ...and the table recorded that backend: without the key it lands there.
        let held = send(&c, &lb, &[("x-forwarded-for", &new(u))]).await;
        assert_eq!(
            held.backend,
            r.backend,
            "{}: the table names another backend",
            new(u)
        );
        // An address whose session lives on the draining backend keeps it.
        let kept = send(&c, &lb, &[("x-forwarded-for", &old(u)), ("x-user", &user(u))]).await;
        assert_eq!(
            kept.backend,
            victim,
            "{}: its session left a draining backend",
            old(u)
        );
    }
    assert!(lb.web_decisions("source_ip", "hit").await >= 2.0 * owned.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_alone_moves_a_draining_owners_keys_until_it_is_active_again() {
    let bs = backends("dh", 3).await;
    // Strict: a draining owner is no session's backend going down; nothing is refused.
    let spec = PoolSpec::new(&bs)
        .pool_key(BY_USER)
        .pool_key("on_backend_down: strict")
        .method("hash: {}");
    let lb = spec.start().await;
    let c = client();
    let mut homes = Vec::new();
    for u in 0..USERS {
        homes.push(send(&c, &lb, &[("x-user", &user(u))]).await.backend);
    }
    let victim = homes[0].clone();
    let owned = owned_by(&homes, &victim);
    assert!(lb.reload_spec(&spec.clone().state(&victim, "draining")).await);
    let mut moved_to = Vec::new();
    for (u, home) in homes.iter().enumerate() {
        let r = send(&c, &lb, &[("x-user", &user(u))]).await;
        assert_eq!(r.status, 200, "{}", user(u));
        if *home == victim {
            assert_ne!(r.backend, victim, "{}: hashed onto a draining backend", user(u));
            assert_eq!(send(&c, &lb, &[("x-user", &user(u))]).await.backend, r.backend);
            moved_to.push(r.backend);
        } else {
            assert_eq!(&r.backend, home, "{} moved though its backend is active", user(u));
        }
    }
    assert_eq!(moved_to.len(), owned.len());
    assert_eq!(lb.web_decisions("hash", "backend_down").await, 0.0);
    // Active again: its keys follow the ring back.
    assert!(lb.reload_spec(&spec).await);
    for &u in &owned {
        assert_eq!(send(&c, &lb, &[("x-user", &user(u))]).await.backend, victim);
    }
}
