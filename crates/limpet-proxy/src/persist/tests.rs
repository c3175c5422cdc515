//! The chain's decisions when a hash key's owner drains: a request without a session
//! is placed like a new one, and the cookie or table that records it names the backend
//! that takes it; sessions that exist on the draining backend stay. Snapshots built from
//! YAML text, a memory session store, no network.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use limpet_affinity::{Outcome, Scheme, Served};
use limpet_metrics::Metrics;
use limpet_sessions::MemoryStore;

use super::{hash_key, record_tables, resolve, set_cookies, Issuer, RequestView, Resolution};
use crate::load::Loaded;
use crate::pool::PoolRt;
use crate::snapshot::Snapshot;

const NOW: u64 = 1_000;

/// A pool `web` over backends a, b, c, hashing `X-User`.
#[derive(Clone, Copy)]
struct Pool {
    /// Persistence methods, as YAML flow items.
    methods: &'static [&'static str],
    /// `balance_factor: 1.25`: the ring walk honours a load bound.
    bounded: bool,
    /// `on_backend_down: strict`.
    strict: bool,
}

impl Pool {
    fn new(methods: &'static [&'static str]) -> Self {
        Self {
            methods,
            bounded: false,
            strict: false,
        }
    }

    /// This pool with backend `b` in `b_state`, the generation after `prev`.
    fn snapshot(self, b_state: &str, m: &Metrics, prev: Option<&Snapshot>) -> Snapshot {
        let mut y = String::from(
            "listeners: [ { address: \"127.0.0.1:1\" } ]\nadmin: { address: \"127.0.0.1:2\" }\n\
             cookie_keys: [ { id: k1, secret: \"unit-test-secret-0123456789abcdef0123\" } ]\n\
             routes: [ { host: \"*\", path_prefix: /, pool: web } ]\npools:\n  web:\n",
        );
        let bound = if self.bounded {
            ", balance_factor: 1.25"
        } else {
            ""
        };
        y += &format!("    hash: {{ key: \"header:X-User\"{bound} }}\n");
        if self.strict {
            y += "    on_backend_down: strict\n";
        }
        y += "    persistence:\n";
        for m in self.methods {
            y += &format!("      - {m}\n");
        }
        y += "    backends:\n      - { id: a, address: \"127.0.0.1:10001\" }\n";
        y += &format!("      - {{ id: b, address: \"127.0.0.1:10002\", state: {b_state} }}\n");
        y += "      - { id: c, address: \"127.0.0.1:10003\" }\n";
        let config = limpet_config::parse(&y).unwrap_or_else(|e| panic!("{e}\n{y}"));
        let (keyring, warnings) = crate::keys::keyring(&config.cookie_keys).unwrap();
        let loaded = Loaded {
            certs: vec![None; config.listeners.len()],
            pool_tls: Default::default(),
            config: Arc::new(config),
            keyring,
            warnings,
        };
        Snapshot::build(loaded, prev.map_or(1, |p| p.generation + 1), m, prev, 0)
    }
}

/// A request from `client` with `headers`.
struct Req {
    headers: HeaderMap,
    client: IpAddr,
}

impl Req {
    fn new(user: Option<&str>, cookie: Option<&str>, client: &str) -> Self {
        let mut headers = HeaderMap::new();
        if let Some(u) = user {
            headers.insert("x-user", u.parse().unwrap());
        }
        if let Some(c) = cookie {
            headers.insert("cookie", c.parse().unwrap());
        }
        Self {
            headers,
            client: client.parse().unwrap(),
        }
    }

    async fn resolve(&self, snap: &Snapshot, store: &MemoryStore) -> Resolution {
        let pool = &snap.pools[0];
        let mut view = RequestView {
            headers: &self.headers,
            query: None,
            path: b"/",
            client: Some(self.client),
            hash_key: None,
        };
        view.hash_key = hash_key(&pool.hash.key, &view);
        resolve(snap, pool, store, &view, NOW).await
    }
}

/// A user whose key backend `b` (index 1) owns on the ring.
fn owned_by_b(pool: &PoolRt) -> String {
    (0..1000)
        .map(|u| format!("user-{u}"))
        .find(|u| pool.hash_owner(limpet_balance::hash_bytes(u.as_bytes())) == Some(1))
        .expect("b owns no key among 1000")
}

/// The `Cookie` value of the affinity cookie a response from `backend` sets.
fn cookie_from(snap: &Snapshot, r: &Resolution, backend: usize) -> String {
    let issuer = Issuer {
        keys: snap.keyring.as_ref().unwrap(),
        pool: &snap.pools[0],
        backend,
        scheme: Scheme::Http,
        now: NOW,
    };
    let set = set_cookies(&issuer, &r.evals, Served::AsPinned, &HeaderMap::new());
    assert_eq!(set.len(), 1, "{set:?}");
    set[0].split(';').next().unwrap().to_string()
}

fn outcomes(r: &Resolution) -> Vec<Outcome> {
    r.evals.iter().map(|e| e.outcome).collect()
}

/// The pool with and without a load bound (the bound walks the ring as well).
fn bounded_or_not(pool: Pool) -> [Pool; 2] {
    [
        pool,
        Pool {
            bounded: true,
            ..pool
        },
    ]
}

#[tokio::test]
async fn cookie_then_hash_pins_no_new_session_to_a_draining_owner() {
    for pool in bounded_or_not(Pool::new(&["cookie: { name: LIMPET, ttl: 15m }", "hash: {}"])) {
        let m = Metrics::new().unwrap();
        let active = pool.snapshot("active", &m, None);
        let store = MemoryStore::new(100);
        let user = owned_by_b(&active.pools[0]);
        let new_client = Req::new(Some(&user), None, "192.0.2.1");
        let before = new_client.resolve(&active, &store).await;
        assert_eq!(before.pinned, Some(1));
        let on_b = cookie_from(&active, &before, 1);

        let draining = pool.snapshot("draining", &m, Some(&active));
        // No cookie: a new session, placed off the draining owner, and the cookie it
        // gets names the backend that takes it.
        let r = new_client.resolve(&draining, &store).await;
        assert_eq!(outcomes(&r), [Outcome::New, Outcome::Hit]);
        let placed = r.pinned.unwrap();
        assert_ne!(placed, 1, "a new session on a draining backend");
        let cookie = cookie_from(&draining, &r, placed);
        let back = Req::new(None, Some(&cookie), "192.0.2.1")
            .resolve(&draining, &store)
            .await;
        assert_eq!((back.pinned, outcomes(&back)), (Some(placed), vec![Outcome::Hit]));
        // A session that exists on the draining backend keeps it; hash is not consulted.
        let kept = Req::new(Some(&user), Some(&on_b), "192.0.2.1")
            .resolve(&draining, &store)
            .await;
        assert_eq!((kept.pinned, outcomes(&kept)), (Some(1), vec![Outcome::Hit]));
    }
}

#[tokio::test]
async fn source_ip_then_hash_records_the_backend_that_takes_the_session() {
    for pool in bounded_or_not(Pool::new(&["source_ip: { ttl: 15m }", "hash: {}"])) {
        let m = Metrics::new().unwrap();
        let active = pool.snapshot("active", &m, None);
        let store = MemoryStore::new(100);
        let user = owned_by_b(&active.pools[0]);
        // An address with a session on b, from before the drain.
        let old = Req::new(Some(&user), None, "192.0.2.1");
        let first = old.resolve(&active, &store).await;
        assert_eq!(first.pinned, Some(1));
        record_tables(&store, &active.pools[0], &first.evals, 1, Served::AsPinned, NOW).await;

        let draining = pool.snapshot("draining", &m, Some(&active));
        let r = Req::new(Some(&user), None, "192.0.2.2")
            .resolve(&draining, &store)
            .await;
        assert_eq!(outcomes(&r), [Outcome::New, Outcome::Hit]);
        let placed = r.pinned.unwrap();
        assert_ne!(placed, 1, "a new session on a draining backend");
        record_tables(
            &store,
            &draining.pools[0],
            &r.evals,
            placed,
            Served::AsPinned,
            NOW,
        )
        .await;
        // The table names the backend that took it: without the key it lands there.
        let again = Req::new(None, None, "192.0.2.2").resolve(&draining, &store).await;
        assert_eq!(
            (again.pinned, outcomes(&again)),
            (Some(placed), vec![Outcome::Hit])
        );
        // The session that exists on the draining backend stays.
        let kept = old.resolve(&draining, &store).await;
        assert_eq!((kept.pinned, outcomes(&kept)), (Some(1), vec![Outcome::Hit]));
    }
}

#[tokio::test]
async fn hash_alone_walks_off_a_draining_owner_and_back() {
    let store = MemoryStore::new(100);
    for plain in bounded_or_not(Pool::new(&["hash: {}"])) {
        for pool in [
            plain,
            Pool {
                strict: true,
                ..plain
            },
        ] {
            let m = Metrics::new().unwrap();
            let active = pool.snapshot("active", &m, None);
            let user = owned_by_b(&active.pools[0]);
            let req = Req::new(Some(&user), None, "192.0.2.1");
            assert_eq!(req.resolve(&active, &store).await.pinned, Some(1));
            // Draining: the key walks on, a hit, and a strict pool does not refuse it.
            let draining = pool.snapshot("draining", &m, Some(&active));
            let r = req.resolve(&draining, &store).await;
            assert_eq!(outcomes(&r), [Outcome::Hit]);
            assert!(!r.strict_refusal, "a draining owner is no session's backend down");
            let placed = r.pinned.unwrap();
            assert_ne!(placed, 1);
            // Disabled: the same walk, counted `backend_down`; a strict pool refuses.
            let disabled = pool.snapshot("disabled", &m, Some(&draining));
            let d = req.resolve(&disabled, &store).await;
            assert_eq!(outcomes(&d), [Outcome::BackendDown]);
            if pool.strict {
                assert!(d.strict_refusal && d.pinned.is_none());
            } else {
                assert_eq!(d.pinned, Some(placed), "the walk does not depend on why");
            }
            // Active again: the key is back on its owner.
            let back = pool.snapshot("active", &m, Some(&disabled));
            assert_eq!(req.resolve(&back, &store).await.pinned, Some(1));
        }
    }
}
