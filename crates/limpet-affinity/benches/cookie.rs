//! Cost of issuing and verifying an affinity cookie (the per-request work of the cookie method).
#![allow(clippy::unwrap_used)]
use criterion::{criterion_group, criterion_main, Criterion};
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
    c.bench_function("cookie_verify", |b| {
        b.iter(|| decode(&keys, "web", black_box(value.as_bytes()), &mut buf, 1_001, ttl).is_ok())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
