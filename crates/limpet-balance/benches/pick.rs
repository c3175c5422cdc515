//! Cost of picking a backend for a new session.
#![allow(clippy::unwrap_used)]
use criterion::{criterion_group, criterion_main, Criterion};
use limpet_balance::{hash_bytes, pick_least_requests, pick_weighted_random, Bound, HashRing, RoundRobin};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    for n in [4usize, 100] {
        let weights: Vec<u32> = (0..n as u32).map(|i| 1 + i % 3).collect();
        let rr = RoundRobin::new(&weights);
        c.bench_function(&format!("round_robin_n{n}"), |b| {
            b.iter(|| rr.pick(|i| black_box(i) != 1))
        });
        let mut r = 0x9e3779b97f4a7c15u64;
        c.bench_function(&format!("random_n{n}"), |b| {
            b.iter(|| {
                r = r.wrapping_mul(6364136223846793005).wrapping_add(1);
                pick_weighted_random(&weights, |i| i != 1, r)
            })
        });
        c.bench_function(&format!("least_requests_n{n}"), |b| {
            b.iter(|| {
                r = r.wrapping_mul(6364136223846793005).wrapping_add(1);
                pick_least_requests(&weights, |i| (i as u64 * 7) % 5, |i| i != 1, r, r >> 32)
            })
        });
        let ids: Vec<(String, u32)> = (0..n).map(|i| (format!("web-{i}"), 1)).collect();
        let ring = HashRing::new(&ids);
        let mut k = 0u64;
        c.bench_function(&format!("consistent_hash_n{n}"), |b| {
            b.iter(|| {
                k += 1;
                ring.pick(hash_bytes(&k.to_le_bytes()), |i| i != 1, None)
            })
        });
        let load = |i: usize| (i as u64 * 7) % 5;
        c.bench_function(&format!("consistent_hash_bounded_n{n}"), |b| {
            b.iter(|| {
                k += 1;
                ring.pick(
                    hash_bytes(&k.to_le_bytes()),
                    |i| i != 1,
                    Some(Bound {
                        factor: 1.25,
                        load: &load,
                    }),
                )
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
