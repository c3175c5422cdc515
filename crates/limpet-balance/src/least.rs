//! Least requests by the power of two random choices over in-flight counts: two
//! eligible backends are drawn at random and the one with fewer in-flight requests per
//! unit of weight wins. This avoids the herd effect of always taking the global
//! minimum when many proxies threads pick at once, and costs O(n) only to count.

/// `in_flight(i)` is the current number of requests on backend `i`; `r1`, `r2` are
/// caller-supplied random numbers.
pub fn pick_least_requests(
    weights: &[u32],
    in_flight: impl Fn(usize) -> u64,
    eligible: impl Fn(usize) -> bool,
    r1: u64,
    r2: u64,
) -> Option<usize> {
    let usable = |i: usize| eligible(i) && weights[i] > 0;
    let n = (0..weights.len()).filter(|&i| usable(i)).count() as u64;
    let nth = |k: u64| (0..weights.len()).filter(|&i| usable(i)).nth(k as usize);
    match n {
        0 => None,
        1 => nth(0),
        _ => {
            let a = r1 % n;
            // Second draw from the other n-1 so the two choices are distinct.
            let mut b = r2 % (n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (nth(a)?, nth(b)?);
            // Compare (in_flight + 1) / weight without division.
            let score =
                |i: usize| u128::from(in_flight(i) + 1) * u128::from(weights[if i == a { b } else { a }]);
            Some(if score(a) <= score(b) { a } else { b })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_less_loaded() {
        let w = [1, 1, 1];
        let load = [10, 0, 5];
        for r1 in 0..9 {
            for r2 in 0..9 {
                let got = pick_least_requests(&w, |i| load[i], |_| true, r1, r2).unwrap();
                // Never the most loaded one: whichever pair is drawn, the other is lighter.
                assert_ne!(got, 0);
            }
        }
    }

    #[test]
    fn weight_scales_load() {
        // Backend 0 has 4 in flight at weight 4 (1 per unit), backend 1 has 2 at weight 1.
        let got = pick_least_requests(&[4, 1], |i| [4, 2][i], |_| true, 0, 0).unwrap();
        assert_eq!(got, 0);
    }

    #[test]
    fn eligibility_and_edge_cases() {
        assert_eq!(pick_least_requests(&[1, 1], |_| 0, |_| false, 1, 2), None);
        assert_eq!(pick_least_requests(&[1, 1], |_| 0, |i| i == 1, 1, 2), Some(1));
        assert_eq!(pick_least_requests(&[0, 1], |_| 0, |_| true, 7, 9), Some(1));
    }
}
