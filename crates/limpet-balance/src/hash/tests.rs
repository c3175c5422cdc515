//! The targets, measured over 1,000,000 keys: balance, minimal disruption,
//! order independence, weights, and the load bound under a Zipf-skewed stream.

use super::*;
use proptest::prelude::*;

const KEYS: u64 = 1_000_000;

fn ids(n: usize) -> Vec<(String, u32)> {
    (0..n).map(|i| (format!("web-{i}"), 1)).collect()
}

fn key(k: u64) -> u64 {
    hash_bytes(format!("client-{k}").as_bytes())
}

fn owners(ring: &HashRing, keys: u64) -> Vec<usize> {
    (0..keys)
        .map(|k| ring.pick(key(k), |_| true, None).unwrap())
        .collect()
}

fn max_over_avg(owners: &[usize], n: usize) -> f64 {
    let mut counts = vec![0u64; n];
    for o in owners {
        counts[*o] += 1;
    }
    let avg = owners.len() as f64 / n as f64;
    *counts.iter().max().unwrap() as f64 / avg
}

#[test]
fn balance_within_five_percent_at_10_and_100_backends() {
    for n in [10, 100] {
        let ring = HashRing::new(&ids(n));
        let ratio = max_over_avg(&owners(&ring, KEYS), n);
        eprintln!("n={n}: max/avg = {ratio:.4}");
        assert!(ratio <= 1.05, "n={n}: max/avg {ratio}");
    }
}

#[test]
fn removing_or_adding_one_backend_moves_the_minimum() {
    for n in [10usize, 100] {
        let all = ids(n + 1);
        let before = HashRing::new(&all[..n]);
        let b_owners = owners(&before, KEYS);
        // Remove backend 3: only its keys move.
        let mut fewer: Vec<(String, u32)> = all[..n].to_vec();
        fewer.remove(3);
        let after = HashRing::new(&fewer);
        let mut moved = 0u64;
        for k in 0..KEYS {
            let was = &all[b_owners[k as usize]].0;
            let now = &fewer[after.pick(key(k), |_| true, None).unwrap()].0;
            if was != now {
                moved += 1;
                assert_eq!(was, "web-3", "a key of a surviving backend moved");
            }
        }
        let share = moved as f64 / KEYS as f64;
        eprintln!(
            "n={n}: removing one moved {share:.4} (1/n = {:.4})",
            1.0 / n as f64
        );
        assert!(share <= 1.05 / n as f64, "n={n}: removal moved {share}");
        // Add backend n: only keys to it move.
        let more = HashRing::new(&all);
        let mut moved = 0u64;
        for k in 0..KEYS {
            let now = more.pick(key(k), |_| true, None).unwrap();
            if now != b_owners[k as usize] {
                moved += 1;
                assert_eq!(now, n, "a key moved between old backends");
            }
        }
        let share = moved as f64 / KEYS as f64;
        eprintln!(
            "n={n}: adding one moved {share:.4} (1/(n+1) = {:.4})",
            1.0 / (n + 1) as f64
        );
        assert!(share <= 1.05 / (n + 1) as f64, "n={n}: addition moved {share}");
    }
}

#[test]
fn weights_are_honoured() {
    let backends = vec![("a".to_string(), 1), ("b".to_string(), 2), ("c".to_string(), 5)];
    let ring = HashRing::new(&backends);
    let o = owners(&ring, 400_000);
    for (i, w) in [1.0, 2.0, 5.0].iter().enumerate() {
        let share = o.iter().filter(|x| **x == i).count() as f64 / o.len() as f64;
        let want = w / 8.0;
        assert!(
            (share - want).abs() / want < 0.10,
            "backend {i}: {share} vs {want}"
        );
    }
}

#[test]
fn excluded_backend_hands_its_keys_on_like_a_removed_one() {
    let all = ids(10);
    let ring = HashRing::new(&all);
    let mut fewer = all.clone();
    fewer.remove(4);
    let without = HashRing::new(&fewer);
    for k in 0..20_000 {
        let a = &all[ring.pick(key(k), |i| i != 4, None).unwrap()].0;
        let b = &fewer[without.pick(key(k), |_| true, None).unwrap()].0;
        assert_eq!(a, b);
    }
}

#[test]
fn bound_holds_under_a_zipf_skewed_stream() {
    // 10 backends, 100,000 requests over 1,000 clients where a few "NAT" clients carry
    // most of the traffic (Zipf, s = 1.1). Each request holds its backend until the
    // stream ends, so loads only grow: the harshest case for the bound.
    let n = 10;
    let ring = HashRing::new(&ids(n));
    let weights: Vec<f64> = (1..=1000).map(|r| 1.0 / f64::powf(r as f64, 1.1)).collect();
    let total_w: f64 = weights.iter().sum();
    let mut cumulative = Vec::new();
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total_w;
        cumulative.push(acc);
    }
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut loads = vec![0u64; n];
    let c = 1.25;
    for r in 0..100_000u64 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let u = (rng >> 11) as f64 / (1u64 << 53) as f64;
        let client = cumulative.partition_point(|c| *c < u) as u64;
        let load = |i: usize| loads[i];
        let b = ring
            .pick(
                key(client),
                |_| true,
                Some(Bound {
                    factor: c,
                    load: &load,
                }),
            )
            .unwrap();
        loads[b] += 1;
        let cap = (c * (r + 1) as f64 / n as f64).ceil() as u64;
        assert!(
            loads[b] <= cap,
            "request {r}: backend {b} at {} above {cap}",
            loads[b]
        );
    }
    // Unbounded, the top client alone would put far more on one backend.
    assert!(*loads.iter().max().unwrap() as f64 <= (c * 100_000.0 / n as f64).ceil());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Reordering backends never changes which id a key maps to.
    #[test]
    fn order_independent(seed in any::<u64>(), n in 2usize..20) {
        let backends: Vec<(String, u32)> = (0..n).map(|i| (format!("b{i}"), 1 + (i as u32 % 3))).collect();
        let mut shuffled = backends.clone();
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let a = HashRing::new(&backends);
        let b = HashRing::new(&shuffled);
        for k in 0..500u64 {
            let x = &backends[a.pick(key(k ^ seed), |_| true, None).unwrap()].0;
            let y = &shuffled[b.pick(key(k ^ seed), |_| true, None).unwrap()].0;
            prop_assert_eq!(x, y);
        }
    }

    /// The bound is respected whatever the loads.
    #[test]
    fn never_above_bound(loads in proptest::collection::vec(0u64..50, 5), k in any::<u64>()) {
        let ring = HashRing::new(&ids(5));
        let load = |i: usize| loads[i];
        let total: u64 = loads.iter().sum();
        let b = ring.pick(k, |_| true, Some(Bound { factor: 1.25, load: &load })).unwrap();
        let cap = (1.25 * (total + 1) as f64 / 5.0).ceil() as u64;
        prop_assert!(loads[b] < cap || loads.iter().all(|l| *l >= cap));
    }
}
