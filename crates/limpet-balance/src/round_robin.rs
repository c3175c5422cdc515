//! Weighted round robin with smooth interleaving (as nginx does): weights 5,1,1 give
//! a a b a c a a rather than a a a a a b c. The order is computed once per snapshot;
//! a pick is one atomic increment plus a walk past ineligible entries.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Above this many entries the sequence is not expanded; picks then use the
/// cumulative weights (still weighted, just not interleaved).
const MAX_SEQUENCE: u64 = 1 << 16;

#[derive(Debug)]
pub struct RoundRobin {
    /// Backend indices in smooth-WRR order (empty when expansion would be too large).
    seq: Box<[u32]>,
    /// Prefix sums of weights, for the non-expanded case.
    cumulative: Box<[u64]>,
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new(weights: &[u32]) -> Self {
        let g = weights.iter().copied().filter(|w| *w > 0).fold(0u32, gcd);
        let reduced: Vec<u64> = weights
            .iter()
            .map(|w| u64::from(w.checked_div(g).unwrap_or(0)))
            .collect();
        let total: u64 = reduced.iter().sum();
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut acc = 0;
        for w in &reduced {
            acc += w;
            cumulative.push(acc);
        }
        let seq = if total <= MAX_SEQUENCE {
            smooth(&reduced, total)
        } else {
            Vec::new()
        };
        Self {
            seq: seq.into_boxed_slice(),
            cumulative: cumulative.into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }

    /// Next backend in weighted rotation that `eligible` accepts. A refused entry
    /// consumes its slot and the next one is claimed, so the rotation stays fair among
    /// the eligible backends instead of doubling the share of a refused one's successor.
    pub fn pick(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        if !self.seq.is_empty() {
            let len = self.seq.len();
            for _ in 0..len {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                let b = self.seq[n % len] as usize;
                if eligible(b) {
                    return Some(b);
                }
            }
            return None;
        }
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let start = (n as u64) % total;
        let first = self.cumulative.partition_point(|&c| c <= start);
        let len = self.cumulative.len();
        (0..len).map(|i| (first + i) % len).find(|&b| eligible(b))
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// nginx's smooth weighted round robin, unrolled into one period.
fn smooth(weights: &[u64], total: u64) -> Vec<u32> {
    let mut current: Vec<i64> = vec![0; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = None::<usize>;
        for (i, w) in weights.iter().enumerate() {
            if *w == 0 {
                continue;
            }
            current[i] += *w as i64;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        current[b] -= total as i64;
        out.push(b as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(rr: &RoundRobin, n: usize, eligible: impl Fn(usize) -> bool + Copy) -> Vec<usize> {
        (0..n).filter_map(|_| rr.pick(eligible)).collect()
    }

    #[test]
    fn equal_weights_rotate() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        assert_eq!(run(&rr, 6, |_| true), vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn smooth_interleaving() {
        let rr = RoundRobin::new(&[5, 1, 1]);
        assert_eq!(run(&rr, 7, |_| true), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn skips_ineligible_and_zero_weight() {
        let rr = RoundRobin::new(&[1, 0, 1, 1]);
        let got = run(&rr, 6, |b| b != 2);
        assert_eq!(got, vec![0, 3, 0, 3, 0, 3]);
        assert_eq!(RoundRobin::new(&[1, 1]).pick(|_| false), None);
        assert_eq!(RoundRobin::new(&[0, 0]).pick(|_| true), None);
    }

    #[test]
    fn huge_weights_still_weighted() {
        let weights: Vec<u32> = (0..200).map(|i| 997 - (i % 3)).collect();
        let rr = RoundRobin::new(&weights);
        assert!(rr.seq.is_empty());
        let mut counts = vec![0u32; 200];
        for b in run(&rr, 200_000, |_| true) {
            counts[b] += 1;
        }
        assert!(counts.iter().all(|c| *c > 0));
    }

    proptest! {
        /// Over whole periods each backend gets exactly its weight share.
        #[test]
        fn shares_match_weights(weights in proptest::collection::vec(0u32..20, 1..12)) {
            let rr = RoundRobin::new(&weights);
            let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
            prop_assume!(g > 0);
            let period: u32 = weights.iter().map(|w| w / g).sum();
            let mut counts = vec![0u32; weights.len()];
            for b in run(&rr, (period * 3) as usize, |_| true) {
                counts[b] += 1;
            }
            for (i, w) in weights.iter().enumerate() {
                prop_assert_eq!(counts[i], 3 * (w / g));
            }
        }
    }
}
