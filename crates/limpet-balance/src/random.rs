//! Weighted random choice among eligible backends.

/// Picks an eligible backend with probability proportional to its weight. `r` is a
/// uniformly random number supplied by the caller.
pub fn pick_weighted_random(weights: &[u32], eligible: impl Fn(usize) -> bool, r: u64) -> Option<usize> {
    let total: u64 = weights
        .iter()
        .enumerate()
        .filter(|(i, _)| eligible(*i))
        .map(|(_, w)| u64::from(*w))
        .sum();
    if total == 0 {
        return None;
    }
    let mut target = r % total;
    for (i, w) in weights.iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        let w = u64::from(*w);
        if target < w {
            return Some(i);
        }
        target -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportional_and_respects_eligibility() {
        let w = [1, 3, 0, 4];
        let mut counts = [0u32; 4];
        for r in 0..8000u64 {
            counts[pick_weighted_random(&w, |_| true, r).unwrap()] += 1;
        }
        assert_eq!(counts, [1000, 3000, 0, 4000]);
        for r in 0..100 {
            assert_ne!(pick_weighted_random(&w, |i| i != 3, r), Some(3));
        }
        assert_eq!(pick_weighted_random(&w, |i| i == 2, 5), None);
    }
}
