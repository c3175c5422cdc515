#![allow(clippy::panic, clippy::unwrap_used)]
//! Memory per live entry of the embedded session table at 1,000,000 entries, and the
//! cost of a lookup and a create. Run: `cargo bench -p limpet-sessions --bench memory`.
//! RSS is read from /proc, so the figure includes allocator overhead, as production does.

use std::time::Instant;

use limpet_config::{BackendId, PoolId};
use limpet_sessions::{MemoryStore, SessionStore, TableKey};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    const N: u32 = 1_000_000;
    let pool = PoolId::new("web");
    let backends: Vec<BackendId> = (0..10).map(|i| BackendId::new(&format!("web-{i}"))).collect();
    let keys: Vec<TableKey> = (0..N)
        .map(|n| TableKey::new(&pool, "header", format!("session-{n}").as_bytes()))
        .collect();
    let before = rss_kib();
    let store = MemoryStore::new(N as usize);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    for (n, k) in keys.iter().enumerate() {
        let b = &backends[n % backends.len()];
        let _ = rt.block_on(store.create(*k, &pool, b, 10_000 + (n as u64 % 3600), 1000));
    }
    let create_ns = start.elapsed().as_nanos() as f64 / f64::from(N);
    let after = rss_kib();
    let per_entry = (after.saturating_sub(before)) as f64 * 1024.0 / f64::from(N);
    let start = Instant::now();
    let mut live = 0;
    for k in &keys {
        if let Ok(limpet_sessions::Lookup::Live { .. }) = rt.block_on(store.get(*k, &pool, 1000)) {
            live += 1;
        }
    }
    let get_ns = start.elapsed().as_nanos() as f64 / f64::from(N);
    let start = Instant::now();
    for n in 0..N {
        std::hint::black_box(TableKey::new(&pool, "header", format!("session-{n}").as_bytes()));
    }
    let key_ns = start.elapsed().as_nanos() as f64 / f64::from(N);
    println!("entries: {} live of {N}", live);
    println!("memory per live entry: {per_entry:.1} bytes (RSS {before} KiB -> {after} KiB)");
    println!("create (incl. block_on): {create_ns:.0} ns, get (incl. block_on): {get_ns:.0} ns, key digest + format: {key_ns:.0} ns");
}
