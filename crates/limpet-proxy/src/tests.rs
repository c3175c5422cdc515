//! Unit tests across the snapshot, live state, attempts and the persistence chain:
//! snapshots built from YAML text, a memory session store, no network.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use http::HeaderMap;
use limpet_affinity::Outcome;
use limpet_metrics::Metrics;
use limpet_sessions::{MemoryStore, SessionStore};

use crate::attempt::{AfterConnectFailure, Attempt};
use crate::load::Loaded;
use crate::persist::{self, RequestView};
use crate::snapshot::Snapshot;

/// A configuration with pool `web` over backends `ids` (each `id` or `id, state: …`)
/// and the pool `extra` lines.
fn yaml(ids: &[&str], extra: &str) -> String {
    let mut y = String::from(
        "listeners: [ { address: \"127.0.0.1:1\" } ]\nadmin: { address: \"127.0.0.1:2\" }\n\
         cookie_keys: [ { id: k1, secret: \"unit-test-secret-0123456789abcdef0123\" } ]\n\
         routes: [ { host: \"*\", path_prefix: /, pool: web } ]\npools:\n  web:\n",
    );
    y += extra;
    y += "    backends:\n";
    for (n, id) in ids.iter().enumerate() {
        let (id, rest) = match id.split_once(',') {
            Some((id, rest)) => (id, format!(",{rest}")),
            None => (*id, String::new()),
        };
        y += &format!(
            "      - {{ id: {id}, address: \"127.0.0.1:{}\"{rest} }}\n",
            10_000 + n
        );
    }
    y
}

fn loaded(text: &str) -> Loaded {
    let config = limpet_config::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let (keyring, warnings) = crate::keys::keyring(&config.cookie_keys).unwrap();
    Loaded {
        certs: vec![None; config.listeners.len()],
        pool_tls: Default::default(),
        config: Arc::new(config),
        keyring,
        warnings,
    }
}

fn build(text: &str, metrics: &Metrics, prev: Option<&Snapshot>, now: u64) -> Snapshot {
    let generation = prev.map_or(1, |p| p.generation + 1);
    Snapshot::build(loaded(text), generation, metrics, prev, now)
}

#[test]
fn balancing_comes_from_configuration_and_live_state_from_the_id() {
    let m = Metrics::new().unwrap();
    let one = build(&yaml(&["a", "b", "c, state: draining"], ""), &m, None, 0);
    let pool = &one.pools[0];
    // Draining takes no new sessions by configuration; health never enters weights.
    assert_eq!(pool.picker.weights(), &[1, 1, 0]);
    pool.backends[0].live.health.record_failure(
        &limpet_config::PassiveHealth {
            max_fails: 1,
            window: std::time::Duration::from_secs(1),
            cooldown: std::time::Duration::from_secs(60),
        },
        1_000,
    );
    assert!(!pool.takes_new(0, 1_000));

    // A reload while `a` is out: its weight stays, its health travels with its id, and
    // it takes new sessions again when the trip ends.
    let two = build(&yaml(&["b", "a", "d"], ""), &m, Some(&one), 2_000);
    let pool2 = &two.pools[0];
    assert_eq!(pool2.picker.weights(), &[1, 1, 1]);
    let a = pool2.backend_index(b"a").unwrap();
    assert!(Arc::ptr_eq(
        &pool2.backends[a].live.health,
        &pool.backends[0].live.health
    ));
    assert!(!pool2.takes_new(a, 2_000));
    assert!(pool2.takes_new(a, 61_000));
    let picks: Vec<usize> = (0..30)
        .filter_map(|_| pool2.pick_new(&[], None, false, 61_000))
        .collect();
    assert_eq!(picks.iter().filter(|i| **i == a).count(), 10, "{picks:?}");
    // `d` joined by reload: it ramps up from the reload under slow start.
    let three = build(
        &yaml(&["b", "a", "d"], "    slow_start: 10s\n"),
        &m,
        Some(&two),
        3_000,
    );
    let d = three.pools[0].backend_index(b"d").unwrap();
    assert_eq!(
        three.pools[0].backends[d]
            .live
            .health
            .ramp(three.pools[0].slow_start, 7_000),
        0.5
    );
    // The backend the reload removed has no series left.
    let text = String::from_utf8(m.render()).unwrap();
    assert!(!text.contains("backend=\"c\""), "{text}");
    assert!(text.contains("backend=\"d\""));
}

#[test]
fn every_backend_down_at_a_reload_serves_again_on_recovery() {
    let m = Metrics::new().unwrap();
    let one = build(&yaml(&["a", "b"], ""), &m, None, 0);
    let trip = limpet_config::PassiveHealth {
        max_fails: 1,
        window: std::time::Duration::from_secs(1),
        cooldown: std::time::Duration::from_secs(5),
    };
    for b in &one.pools[0].backends {
        b.live.health.record_failure(&trip, 100);
    }
    let two = build(&yaml(&["a", "b"], "    retries: 2\n"), &m, Some(&one), 200);
    assert_eq!(two.pools[0].pick_new(&[], None, false, 300), None);
    assert!(two.pools[0].pick_new(&[], None, false, 5_200).is_some());
}

#[test]
fn attempts_honour_the_pin_then_never_repeat_a_backend() {
    let m = Metrics::new().unwrap();
    let snap = build(&yaml(&["a", "b", "c"], "    retries: 5\n"), &m, None, 0);
    let pool = &snap.pools[0];
    let mut at = Attempt::default();
    at.pool = Some(0);
    at.pinned = Some(2);
    assert_eq!(at.next_attempt(pool), Some(2));
    assert_eq!(pool.backends[2].metrics.in_flight.get(), 1);
    assert_eq!(at.connect_failed(pool, &refused()), AfterConnectFailure::Retry);
    let second = at.next_attempt(pool).unwrap();
    assert_ne!(second, 2);
    assert_eq!(pool.backends[2].metrics.in_flight.get(), 0, "slot moved on");
    assert_eq!(at.connect_failed(pool, &refused()), AfterConnectFailure::Retry);
    let third = at.next_attempt(pool).unwrap();
    assert!(third != 2 && third != second);
    // Every backend tried: nothing left to retry.
    assert_eq!(at.connect_failed(pool, &refused()), AfterConnectFailure::GiveUp);
    assert_eq!(at.next_attempt(pool), None);
    assert_eq!(at.attempts(), 3);
    assert_eq!(at.served(), limpet_affinity::Served::Moved);
    at.release();
    assert!(pool.backends.iter().all(|b| b.metrics.in_flight.get() == 0));
    assert_eq!(pool.backends[2].metrics.connect_errors.get(), 1);
}

#[test]
fn strict_pools_keep_a_failed_pin_and_retries_are_bounded() {
    let m = Metrics::new().unwrap();
    let strict = build(&yaml(&["a", "b"], "    on_backend_down: strict\n"), &m, None, 0);
    let mut at = Attempt::default();
    at.pool = Some(0);
    at.pinned = Some(0);
    at.next_attempt(&strict.pools[0]);
    assert_eq!(
        at.connect_failed(&strict.pools[0], &refused()),
        AfterConnectFailure::Strict
    );

    let none = build(
        &yaml(&["a", "b", "c"], "    retries: 0\n"),
        &Metrics::new().unwrap(),
        None,
        0,
    );
    let mut at = Attempt::default();
    at.pool = Some(0);
    at.next_attempt(&none.pools[0]);
    assert_eq!(
        at.connect_failed(&none.pools[0], &refused()),
        AfterConnectFailure::GiveUp
    );
}

/// A backend refusing the connection: the backend's failure, not limpet's.
fn refused() -> pingora_error::Error {
    *pingora_error::Error::new(pingora_error::ErrorType::ConnectRefused)
}

#[test]
fn limpet_out_of_descriptors_blames_no_backend_and_tries_no_other() {
    let m = Metrics::new().unwrap();
    let pool_keys = "    retries: 3\n    passive_health: { max_fails: 1, window: 30s, cooldown: 30s }\n";
    let snap = build(&yaml(&["a", "b"], pool_keys), &m, None, 0);
    let pool = &snap.pools[0];
    let mut at = Attempt::default();
    at.pool = Some(0);
    let first = at.next_attempt(pool).unwrap();
    let io: std::io::Result<()> = Err(std::io::Error::from_raw_os_error(libc::EMFILE));
    let emfile =
        pingora_error::OrErr::or_err(io, pingora_error::ErrorType::SocketError, "socket").unwrap_err();
    assert_eq!(
        at.connect_failed(pool, &emfile),
        AfterConnectFailure::Local(crate::local::LocalError::FileDescriptors)
    );
    assert_eq!(pool.backends[first].metrics.connect_errors.get(), 0);
    assert!(
        pool.takes_new(first, crate::clock::now_ms()),
        "no passive-health failure counted"
    );
    // The same attempt with a refused connection does eject it (one failure is enough).
    assert_eq!(at.connect_failed(pool, &refused()), AfterConnectFailure::Retry);
    assert!(!pool.takes_new(first, crate::clock::now_ms()));
}

fn view<'a>(headers: &'a HeaderMap) -> RequestView<'a> {
    RequestView {
        headers,
        query: None,
        path: b"/",
        client: Some("192.0.2.1".parse().unwrap()),
        hash_key: None,
    }
}

#[tokio::test]
async fn a_table_session_is_new_then_hit_then_backend_down() {
    let m = Metrics::new().unwrap();
    let header = "    persistence:\n      - header: { name: X-Id, ttl: 1m }\n";
    let snap = build(&yaml(&["a", "b"], header), &m, None, 0);
    let store = MemoryStore::new(100);
    let mut h = HeaderMap::new();
    h.insert("x-id", "user-1".parse().unwrap());
    let pool = &snap.pools[0];

    let first = persist::resolve(&snap, pool, &store, &view(&h), 1_000).await;
    assert_eq!((first.pinned, first.evals[0].outcome), (None, Outcome::New));
    persist::record_tables(
        &store,
        pool,
        &first.evals,
        1,
        limpet_affinity::Served::AsPinned,
        1_000,
    )
    .await;
    assert_eq!(store.sessions(&pool.id, &pool.backends[1].id), 1);

    let again = persist::resolve(&snap, pool, &store, &view(&h), 1_010).await;
    assert_eq!((again.pinned, again.evals[0].outcome), (Some(1), Outcome::Hit));

    // `b` disabled by a reload: the session's backend is down, and a strict pool refuses.
    let strict = "    on_backend_down: strict\n".to_string() + header;
    let down = build(&yaml(&["a", "b, state: disabled"], &strict), &m, Some(&snap), 0);
    let r = persist::resolve(&down, &down.pools[0], &store, &view(&h), 1_020).await;
    assert_eq!(r.evals[0].outcome, Outcome::BackendDown);
    assert!(r.strict_refusal && r.pinned.is_none());
    // Past its static TTL the session is over.
    let late = persist::resolve(&snap, pool, &store, &view(&h), 1_000 + 62).await;
    assert_eq!(late.evals[0].outcome, Outcome::Expired);
}

/// Pingora retries a request whose reused upstream connection turned out stale; that
/// is no failure of the backend: the retry goes to the pinned backend again (a strict
/// pool never moves a session for it, and the pin is kept).
#[test]
fn a_retry_that_follows_no_connect_failure_keeps_the_pin() {
    let m = Metrics::new().unwrap();
    let snap = build(
        &yaml(&["a", "b", "c"], "    on_backend_down: strict\n"),
        &m,
        None,
        0,
    );
    let pool = &snap.pools[0];
    let mut at = Attempt::default();
    at.pool = Some(0);
    at.pinned = Some(1);
    assert_eq!(at.next_attempt(pool), Some(1));
    assert_eq!(at.next_attempt(pool), Some(1), "retried on the pinned backend");
    assert_eq!(at.connect_failed(pool, &refused()), AfterConnectFailure::Strict);
}

/// Connections racing for a listener's last slot: at most `max_connections` are ever
/// admitted at once, however their threads interleave.
#[test]
fn max_connections_holds_under_concurrent_accepts() {
    use std::sync::Barrier;

    use crate::access::AccessLog;
    use crate::shared::{OpenConnection, Shared};

    let text = yaml(&["a"], "").replace(
        "listeners: [ { address: \"127.0.0.1:1\" } ]",
        "listeners: [ { address: \"127.0.0.1:1\", max_connections: 1 } ]",
    );
    let m = Metrics::new().unwrap();
    let snap = build(&text, &m, None, 0);
    let access = AccessLog::open(None, limpet_config::LogFormat::Text).unwrap();
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new(1000));
    let shared = Shared::new(snap, m, store, access);
    let threads = 4;
    let mut most = 0;
    for _ in 0..3000 {
        let start = Barrier::new(threads);
        let held = Barrier::new(threads);
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let snap = shared.current.load_full();
                    start.wait();
                    let open = OpenConnection::admit(&shared, &snap, 0);
                    if open.is_some() {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    // Every thread has tried before any slot is given back.
                    held.wait();
                    drop(open);
                });
            }
        });
        most = most.max(admitted.into_inner());
    }
    assert_eq!(most, 1, "more connections admitted at once than max_connections");
}
