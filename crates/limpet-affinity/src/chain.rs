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

/// Where a backend stands for the chain now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It takes new sessions (active, weight above 0, usable).
    TakesNew,
    /// It keeps the sessions it has and takes no new one (draining).
    KeepsOnly,
    /// It serves nothing (disabled, down).
    Out,
}

/// The `hash` method's decision for a key whose ring owner stands at `owner`: the
/// outcome to count and the backend, where `placed` is the first backend of the key's
/// ring walk that takes new sessions (within the pool's load bound, if it has one).
///
/// A key is no session record, and a request that reaches this method has no session
/// the chain found: earlier methods missed (and will record the backend that answers)
/// or there are none. So the key is placed like a new session and never lands on a
/// backend that takes none, a draining owner included; otherwise a draining backend
/// would win every new client its keys hash to and never drain. Its keys walk on
/// exactly as if it were removed, and come back when it takes new sessions again.
/// A draining owner is not a session's backend going down: the outcome stays a hit, as
/// with a busy owner under bounded loads, and a strict pool does not refuse it.
pub fn hashed<B>(owner: Standing, placed: Option<B>) -> (Outcome, Option<B>) {
    match owner {
        Standing::TakesNew | Standing::KeepsOnly => (Outcome::Hit, placed),
        Standing::Out => (Outcome::BackendDown, placed),
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

    /// A hash key lands where the walk among backends taking new sessions puts it,
    /// whatever its owner's state; only a down owner changes the outcome.
    #[test]
    fn hashed_keys_are_placed_like_new_sessions() {
        let never = |_: u8| false;
        assert_eq!(hashed(Standing::TakesNew, Some(1u8)), (Outcome::Hit, Some(1)));
        // Draining owner: the key walks on, a hit that even a strict pool serves.
        let (o, b) = hashed(Standing::KeepsOnly, Some(2u8));
        assert_eq!((o, b), (Outcome::Hit, Some(2)));
        assert_eq!(verdict(o, b, true, never), (Outcome::Hit, Verdict::Pin(2)));
        // No backend takes new sessions: nothing to pin, the pool answers for itself.
        let (o, b) = hashed::<u8>(Standing::KeepsOnly, None);
        assert_eq!(verdict(o, b, true, never), (Outcome::Hit, Verdict::Next));
        // Down owner: `backend_down`, moved on unless the pool is strict.
        let (o, b) = hashed(Standing::Out, Some(2u8));
        assert_eq!(o, Outcome::BackendDown);
        assert_eq!(verdict(o, b, false, never), (o, Verdict::Pin(2)));
        assert_eq!(verdict(o, b, true, never), (o, Verdict::Refuse));
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
