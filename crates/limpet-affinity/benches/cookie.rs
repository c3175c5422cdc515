//! Cost of issuing and verifying an affinity cookie (the per-request work of the cookie method).
#![allow(clippy::unwrap_used)]
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use limpet_affinity::{decode, encode, Keyring, SigningKey};
use std::hint::black_box;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let keys = Keyring::new(vec![SigningKey::new("k1", &[9u8; 32]).unwrap()]).unwrap();
    let ttl = Duration::from_secs(900);
    let value = encode(&keys, "web", "web-1", 1_000, ttl);
    c.bench_function("cookie_encode", |b| {
        b.iter(|| encode(&keys, black_box("web"), black_box("web-1"), 1_000, ttl))
    });
    let mut buf = Vec::new();
    // The same value again, as a returning client sends it: verified once per thread.
    c.bench_function("cookie_verify", |b| {
        b.iter(|| decode(&keys, "web", black_box(value.as_bytes()), &mut buf, 1_001, ttl).is_ok())
    });
    // A value this thread has not seen: its tag is checked.
    let mut n = 0u64;
    c.bench_function("cookie_verify_unseen", |b| {
        b.iter_batched(
            || {
                n += 1;
                encode(&keys, "web", &format!("web-{n}"), 1_000, ttl)
            },
            |v| decode(&keys, "web", black_box(v.as_bytes()), &mut buf, 1_001, ttl).is_ok(),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
