//! One pool's choice of a backend for a new session. A [`Picker`] is built once per
//! configuration generation from the **configured** weights only; everything that
//! changes while the generation runs (health, slow start, in-flight counts, backends
//! already tried, rebalancing) comes in at pick time through [`Live`]. A backend that is
//! down when the picker is built is therefore back in rotation the moment it recovers.

use crate::{pick_least_requests, pick_weighted_random, Bound, HashRing, RoundRobin};

/// How a pool spreads new sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    Random,
    LeastRequests,
    /// By the request's hash key on the ring (round robin for requests without one).
    ConsistentHash,
}

/// What the pick needs to know about the pool now.
pub struct Live<'a> {
    /// May backend `i` take a new session now (state, health, not tried yet)?
    pub eligible: &'a dyn Fn(usize) -> bool,
    /// The share of its weight backend `i` gets now, from 0 to 1 (slow start).
    pub ramp: &'a dyn Fn(usize) -> f64,
    /// Requests in flight on backend `i`.
    pub in_flight: &'a dyn Fn(usize) -> u64,
    /// Backends to prefer when one of them is eligible (rebalancing targets).
    pub prefer: Option<&'a dyn Fn(usize) -> bool>,
}

#[derive(Debug)]
pub struct Picker {
    policy: Policy,
    /// Configured weights; 0 for a backend that takes no new sessions by configuration.
    weights: Box<[u32]>,
    round_robin: RoundRobin,
    /// Built when the pool hashes (policy or a `hash` persistence method).
    ring: Option<HashRing>,
    /// Bounded loads: no backend takes more than this factor of the average.
    balance_factor: Option<f64>,
}

impl Picker {
    /// `weights[i]` is backend `i`'s configured weight (0: no new sessions); `ring` is
    /// the pool's hash ring when it has one.
    pub fn new(policy: Policy, weights: &[u32], ring: Option<HashRing>, balance_factor: Option<f64>) -> Self {
        Self {
            policy,
            weights: weights.into(),
            round_robin: RoundRobin::new(weights),
            ring,
            balance_factor,
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    pub fn ring(&self) -> Option<&HashRing> {
        self.ring.as_ref()
    }

    /// Consistent-hash placement of `key` among `eligible` backends, within the load
    /// bound if the pool has one. `None` when the pool does not hash.
    pub fn hash_pick(
        &self,
        key: u64,
        eligible: impl Fn(usize) -> bool,
        load: &dyn Fn(usize) -> u64,
    ) -> Option<usize> {
        let bound = self.balance_factor.map(|factor| Bound { factor, load });
        self.ring.as_ref()?.pick(key, eligible, bound)
    }

    /// The backend that owns `key` on the ring, whatever its state and load.
    pub fn hash_owner(&self, key: u64) -> Option<usize> {
        self.ring.as_ref()?.pick(key, |_| true, None)
    }

    /// A backend for a new session, or `None` when no backend is eligible. `random`
    /// supplies uniformly random numbers.
    pub fn pick(
        &self,
        live: &Live<'_>,
        hash_key: Option<u64>,
        random: &mut dyn FnMut() -> u64,
    ) -> Option<usize> {
        let may = |i: usize| self.weights.get(i).is_some_and(|w| *w > 0) && (live.eligible)(i);
        if let Some(prefer) = live.prefer {
            if let Some(i) = self.round_robin.pick(|i| may(i) && prefer(i)) {
                return Some(i);
            }
        }
        // Slow start: a backend ramping up takes part in this pick with a probability
        // equal to its ramp, so its share of new sessions grows linearly from 0 to its
        // weight. When every candidate is held back, the ramp is ignored rather than
        // refuse. Without a ramping backend (the usual case) nothing is allocated.
        let n = self.weights.len();
        if !(0..n).any(|i| may(i) && (live.ramp)(i) < 1.0) {
            return self.dispatch(&may, live, hash_key, random);
        }
        let mut held = vec![false; n];
        let mut any_left = false;
        for (i, h) in held.iter_mut().enumerate() {
            if !may(i) {
                continue;
            }
            let ramp = (live.ramp)(i);
            *h = ramp < 1.0 && unit(random()) >= ramp;
            any_left |= !*h;
        }
        if !any_left {
            held.fill(false);
        }
        self.dispatch(&|i: usize| may(i) && !held[i], live, hash_key, random)
    }

    /// The policy's choice among `eligible` backends.
    fn dispatch(
        &self,
        eligible: &dyn Fn(usize) -> bool,
        live: &Live<'_>,
        hash_key: Option<u64>,
        random: &mut dyn FnMut() -> u64,
    ) -> Option<usize> {
        match self.policy {
            Policy::ConsistentHash => match hash_key {
                Some(key) => self.hash_pick(key, eligible, live.in_flight),
                // No key in this request: spread it like round robin does.
                None => self.round_robin.pick(eligible),
            },
            Policy::RoundRobin => self.round_robin.pick(eligible),
            Policy::Random => pick_weighted_random(&self.weights, eligible, random()),
            Policy::LeastRequests => {
                pick_least_requests(&self.weights, live.in_flight, eligible, random(), random())
            }
        }
    }
}

/// A random u64 as a number in [0, 1).
fn unit(r: u64) -> f64 {
    (r >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn live<'a>(eligible: &'a dyn Fn(usize) -> bool, ramp: &'a dyn Fn(usize) -> f64) -> Live<'a> {
        Live {
            eligible,
            ramp,
            in_flight: &|_| 0,
            prefer: None,
        }
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0u64;
        move || {
            n = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
            n
        }
    }

    /// Health comes in at pick time: a backend that was down when the picker was built
    /// gets its share as soon as it is eligible again.
    #[test]
    fn a_backend_ineligible_at_build_returns_with_its_weight() {
        let p = Picker::new(Policy::RoundRobin, &[1, 1], None, None);
        let mut r = counter();
        let down = live(&|i| i == 1, &|_| 1.0);
        assert!((0..10).all(|_| p.pick(&down, None, &mut r) == Some(1)));
        let up = live(&|_| true, &|_| 1.0);
        let picks: Vec<_> = (0..10).map(|_| p.pick(&up, None, &mut r).unwrap()).collect();
        assert_eq!(picks.iter().filter(|i| **i == 0).count(), 5, "{picks:?}");
        assert_eq!(p.pick(&live(&|_| false, &|_| 1.0), None, &mut r), None);
    }

    #[test]
    fn configured_weight_zero_never_takes_new_sessions() {
        for policy in [
            Policy::RoundRobin,
            Policy::Random,
            Policy::LeastRequests,
            Policy::ConsistentHash,
        ] {
            let ring = HashRing::new(&[("a", 0), ("b", 1)]);
            let p = Picker::new(policy, &[0, 1], Some(ring), None);
            let mut r = counter();
            for k in 0..50 {
                assert_eq!(
                    p.pick(&live(&|_| true, &|_| 1.0), Some(k), &mut r),
                    Some(1),
                    "{policy:?}"
                );
            }
        }
    }

    #[test]
    fn slow_start_holds_back_by_ramp_but_never_refuses() {
        let p = Picker::new(Policy::RoundRobin, &[1, 1], None, None);
        let mut r = counter();
        let ramping = live(&|_| true, &|i| if i == 0 { 0.1 } else { 1.0 });
        let on_0 = (0..2000)
            .filter(|_| p.pick(&ramping, None, &mut r) == Some(0))
            .count();
        // Effective weights 0.1 and 1: a share of 0.1 / 1.1, about 182 of 2000.
        assert!((120..=240).contains(&on_0), "{on_0}");
        let only_ramping = live(&|i| i == 0, &|_| 0.0);
        assert_eq!(p.pick(&only_ramping, None, &mut r), Some(0));
    }

    #[test]
    fn preferred_backends_come_first_when_eligible() {
        let p = Picker::new(Policy::RoundRobin, &[1, 1, 1], None, None);
        let mut r = counter();
        let prefer = |i: usize| i == 2;
        let l = Live {
            eligible: &|_| true,
            ramp: &|_| 1.0,
            in_flight: &|_| 0,
            prefer: Some(&prefer),
        };
        assert!((0..6).all(|_| p.pick(&l, None, &mut r) == Some(2)));
        let l = Live {
            eligible: &|i| i != 2,
            ..l
        };
        assert!((0..6).all(|_| p.pick(&l, None, &mut r) != Some(2)));
    }
}
