use super::*;
use proptest::prelude::*;

fn pool() -> PoolId {
    PoolId::new("web")
}
fn b(id: &str) -> BackendId {
    BackendId::new(id)
}
fn key(n: u32) -> TableKey {
    TableKey::new(&pool(), "header", &n.to_be_bytes())
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn static_ttl_create_if_absent_and_expiry_on_read() {
    let s = MemoryStore::new(100);
    assert_eq!(s.get_now(key(1), 1000), Lookup::Absent);
    assert_eq!(s.create_now(key(1), &pool(), &b("a"), 1010, 1000), b("a"));
    // A second creator learns the first one's backend; the expiry is unchanged.
    assert_eq!(s.create_now(key(1), &pool(), &b("b"), 1020, 1005), b("a"));
    assert_eq!(
        s.get_now(key(1), 1009),
        Lookup::Live {
            backend: b("a"),
            expires: 1010
        }
    );
    assert_eq!(s.get_now(key(1), 1010), Lookup::Expired);
    assert_eq!(s.get_now(key(1), 1010), Lookup::Absent);
    assert_eq!(s.sessions(&pool(), &b("a")), 0);
}

#[test]
fn keys_differ_by_pool_method_and_id() {
    let api = PoolId::new("api");
    assert_ne!(
        TableKey::new(&pool(), "header", b"x"),
        TableKey::new(&api, "header", b"x")
    );
    assert_ne!(
        TableKey::new(&pool(), "header", b"x"),
        TableKey::new(&pool(), "source_ip", b"x")
    );
    assert_ne!(
        TableKey::new(&pool(), "header", b"x"),
        TableKey::new(&pool(), "header", b"y")
    );
    assert_eq!(
        TableKey::new(&pool(), "header", b"x"),
        TableKey::new(&pool(), "header", b"x")
    );
}

#[test]
fn counts_per_backend_and_pool() {
    let s = MemoryStore::new(100);
    for n in 0..10 {
        s.create_now(
            key(n),
            &pool(),
            &b(if n % 2 == 0 { "a" } else { "b" }),
            2000,
            1000,
        );
    }
    let api = PoolId::new("api");
    s.create_now(TableKey::new(&api, "header", b"x"), &api, &b("a"), 2000, 1000);
    assert_eq!(s.sessions(&pool(), &b("a")), 5);
    assert_eq!(s.sessions(&pool(), &b("b")), 5);
    assert_eq!(s.sessions(&api, &b("a")), 1);
    assert_eq!(s.entries(&pool()), 10);
    assert_eq!(s.entries(&api), 1);
    block(s.delete(key(0), &pool())).unwrap();
    assert_eq!(s.sessions(&pool(), &b("a")), 4);
}

#[test]
fn sweep_removes_only_expired() {
    let s = MemoryStore::new(1000);
    for n in 0..100 {
        s.create_now(key(n), &pool(), &b("a"), 1000 + u64::from(n), 900);
    }
    assert_eq!(s.sweep(1049), 50);
    assert_eq!(s.len(), 50);
    assert_eq!(s.sessions(&pool(), &b("a")), 50);
}

#[test]
fn bound_evicts_soonest_expiring_first() {
    let s = MemoryStore::new(100);
    for n in 0..2000u32 {
        s.create_now(key(n), &pool(), &b("a"), 10_000 + u64::from(n), 1000);
        assert!(s.len() <= 100);
    }
    assert_eq!(s.len(), 100);
    assert_eq!(s.evicted() as usize + s.len(), 2000);
    // Expiry grows with n, so the latest key always survives and the first never does.
    assert!(matches!(s.get_now(key(1999), 1000), Lookup::Live { .. }));
    assert_eq!(s.get_now(key(0), 1000), Lookup::Absent);
}

proptest! {
    /// Counts always equal the live entries per backend, whatever the operations.
    #[test]
    fn counts_match_entries(ops in proptest::collection::vec((0u32..50, 0u8..3, 0u64..30, any::<bool>()), 1..300)) {
        let s = MemoryStore::new(40);
        let mut now = 1000u64;
        for (k, backend, ttl, delete) in ops {
            now += 1;
            let id = format!("b{backend}");
            if delete {
                block(s.delete(key(k), &pool())).unwrap();
            } else {
                s.create_now(key(k), &pool(), &b(&id), now + ttl + 1, now);
            }
            if k % 7 == 0 {
                s.sweep(now);
            }
        }
        let total: u64 = (0..3).map(|i| s.sessions(&pool(), &b(&format!("b{i}")))).sum();
        prop_assert_eq!(total as usize, s.len());
        prop_assert!(s.len() <= 40);
    }
}
