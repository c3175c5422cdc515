//! The persistence chain's rules, pure: what a stored session means for the request,
//! and what the chain does after each consulted method. limpet-proxy runs the methods
//! (cookie verification, table lookups, hashing) and asks these functions what follows.

use crate::resolve::Outcome;

/// The outcome of a session found in a table: `Invalid` when it names no backend of
/// the pool (`None`), `Hit` when its backend may keep sessions, `BackendDown` when it
/// exists but may not (disabled, down). Returns the backend on a hit.
pub fn stored<B>(backend: Option<(B, bool)>) -> (Outcome, Option<B>) {
    match backend {
        None => (Outcome::Invalid, None),
        Some((b, true)) => (Outcome::Hit, Some(b)),
        Some((_, false)) => (Outcome::BackendDown, None),
    }
}

/// What the chain does after one consulted method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<B> {
    /// The method named the backend that serves the request: stop here.
    Pin(B),
    /// Rebalancing moves this session: stop, and pick a new backend among the
    /// under-loaded ones.
    Move,
    /// The session's backend is down and the pool is strict: answer 503, move no one.
    Refuse,
    /// Nothing usable from this method: consult the next one.
    Next,
}

/// The chain's rule after one method found `outcome` and, maybe, a backend (`hit`; a
/// `BackendDown` may still name one, as the hash method does when a key walks on to
/// the next backend of the ring). `strict`: the pool's `on_backend_down` is `strict`.
/// `may_move(b)`: rebalancing lets this session leave `b` now (asked only of hits).
/// Returns the outcome to count (`Repinned` for a session rebalancing moves).
pub fn verdict<B: Copy>(
    outcome: Outcome,
    hit: Option<B>,
    strict: bool,
    may_move: impl FnOnce(B) -> bool,
) -> (Outcome, Verdict<B>) {
    match (outcome, hit) {
        (Outcome::Hit, Some(b)) if may_move(b) => (Outcome::Repinned, Verdict::Move),
        (Outcome::BackendDown, _) if strict => (outcome, Verdict::Refuse),
        (_, Some(b)) => (outcome, Verdict::Pin(b)),
        (_, None) => (outcome, Verdict::Next),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    #[test]
    fn stored_sessions() {
        assert_eq!(stored::<u8>(None), (Outcome::Invalid, None));
        assert_eq!(stored(Some((3u8, true))), (Outcome::Hit, Some(3)));
        assert_eq!(stored(Some((3u8, false))), (Outcome::BackendDown, None));
    }

    #[test]
    fn verdicts() {
        let never = |_: u8| false;
        assert_eq!(
            verdict(Outcome::Hit, Some(1u8), false, never),
            (Outcome::Hit, Verdict::Pin(1))
        );
        assert_eq!(
            verdict(Outcome::Hit, Some(1u8), true, |b| b == 1),
            (Outcome::Repinned, Verdict::Move)
        );
        // Only hits are rebalanced; misses go on down the chain.
        for o in [Outcome::New, Outcome::Expired, Outcome::Invalid] {
            assert_eq!(
                verdict(o, None, true, |_: u8| panic!("asked")),
                (o, Verdict::Next)
            );
        }
        assert_eq!(
            verdict::<u8>(Outcome::BackendDown, None, false, never),
            (Outcome::BackendDown, Verdict::Next)
        );
        assert_eq!(
            verdict::<u8>(Outcome::BackendDown, None, true, never),
            (Outcome::BackendDown, Verdict::Refuse)
        );
        // A key whose backend is down walks on along the ring, unless the pool is strict.
        assert_eq!(
            verdict(Outcome::BackendDown, Some(2u8), false, never),
            (Outcome::BackendDown, Verdict::Pin(2))
        );
        assert_eq!(
            verdict(Outcome::BackendDown, Some(2u8), true, never),
            (Outcome::BackendDown, Verdict::Refuse)
        );
    }
}
