//! The cookie method's decision for one request: which of the request's affinity
//! cookies (if any) names a usable backend, and if none, why not.

use crate::codec::{decode, Keyring, Reject, Scope};
use crate::issue::{Issue, Lifetime};
use std::time::Duration;

/// Why a persistence method hit or missed; the `outcome` label of
/// `limpet_persistence_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A valid session named a usable backend.
    Hit,
    /// No session was presented: a new one is created.
    New,
    /// The session's TTL had passed.
    Expired,
    /// Malformed, forged, signed by an unknown key, or naming an unknown backend.
    Invalid,
    /// The session's backend exists but is not usable (disabled, down).
    BackendDown,
    /// A connect failure moved the request to another backend mid-request.
    Repinned,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Self::Hit,
        Self::New,
        Self::Expired,
        Self::Invalid,
        Self::BackendDown,
        Self::Repinned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::New => "new",
            Self::Expired => "expired",
            Self::Invalid => "invalid",
            Self::BackendDown => "backend_down",
            Self::Repinned => "repinned",
        }
    }

    /// Among several misses, the one that tells the operator most.
    fn rank(self) -> u8 {
        match self {
            Self::Hit => 5,
            Self::BackendDown => 4,
            Self::Expired => 3,
            Self::Invalid => 2,
            Self::Repinned => 1,
            Self::New => 0,
        }
    }
}

/// The session a verified cookie holds: when it began and how long it lasts (as
/// issued, before the `max_ttl` cap: enough to re-issue it for another backend
/// without changing its expiry), and its identity ([`crate::Ticket::session`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub issue: Issue,
    pub session: u64,
}

/// Result of looking at a request's affinity cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieLookup<B> {
    Hit(B, Held),
    Miss(Outcome),
}

/// Tries each candidate value in order; the first that verifies and names a usable
/// backend wins. `backend` maps a backend id to the caller's handle and whether it is
/// usable now (`None`: no such backend in this pool).
pub fn resolve_cookie<'v, B>(
    keys: &Keyring,
    scope: Scope<'_>,
    max_ttl: Duration,
    values: impl IntoIterator<Item = &'v [u8]>,
    now: u64,
    mut backend: impl FnMut(&[u8]) -> Option<(B, bool)>,
) -> CookieLookup<B> {
    let mut miss = Outcome::New;
    let mut buf = Vec::new();
    for v in values {
        let why = match decode(keys, scope, v, &mut buf, now, max_ttl) {
            Ok(ticket) => match backend(ticket.backend) {
                Some((b, true)) => {
                    let held = Held {
                        issue: Issue {
                            issued_at: ticket.issued_at,
                            lifetime: Lifetime::from_wire(ticket.ttl),
                        },
                        session: ticket.session,
                    };
                    return CookieLookup::Hit(b, held);
                }
                Some((_, false)) => Outcome::BackendDown,
                None => Outcome::Invalid,
            },
            Err(Reject::Expired) => Outcome::Expired,
            Err(Reject::Malformed | Reject::UnknownKey | Reject::BadSignature | Reject::FromTheFuture) => {
                Outcome::Invalid
            }
        };
        if why.rank() > miss.rank() {
            miss = why;
        }
    }
    CookieLookup::Miss(miss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode, SigningKey};

    const H: Duration = Duration::from_secs(3600);

    fn keys() -> Keyring {
        Keyring::new(vec![SigningKey::new("k1", &[7u8; 32]).unwrap()]).unwrap()
    }

    fn lookup(id: &[u8]) -> Option<(&'static str, bool)> {
        match id {
            b"up" => Some(("up", true)),
            b"down" => Some(("down", false)),
            _ => None,
        }
    }

    #[test]
    fn outcomes() {
        let k = keys();
        let (up, session) = crate::codec::encode_session(&k, "web", "up", 100, H);
        let down = encode(&k, "web", "down", 100, H);
        let gone = encode(&k, "web", "gone", 100, H);
        let r = |vals: Vec<&str>, now| {
            resolve_cookie(
                &k,
                "web".into(),
                H,
                vals.into_iter().map(str::as_bytes),
                now,
                lookup,
            )
        };
        let lease = Held {
            issue: Issue {
                issued_at: 100,
                lifetime: Lifetime::Secs(3600),
            },
            session,
        };
        assert_eq!(r(vec![], 101), CookieLookup::Miss(Outcome::New));
        assert_eq!(r(vec![&up], 101), CookieLookup::Hit("up", lease));
        assert_eq!(r(vec![&up], 100 + 3601), CookieLookup::Miss(Outcome::Expired));
        assert_eq!(r(vec![&down], 101), CookieLookup::Miss(Outcome::BackendDown));
        assert_eq!(r(vec![&gone], 101), CookieLookup::Miss(Outcome::Invalid));
        assert_eq!(r(vec!["garbage"], 101), CookieLookup::Miss(Outcome::Invalid));
        // A stale copy next to a good one (e.g. two paths): the good one wins.
        assert_eq!(
            r(vec!["garbage", &down, &up], 101),
            CookieLookup::Hit("up", lease)
        );
        assert_eq!(
            r(vec!["garbage", &down], 101),
            CookieLookup::Miss(Outcome::BackendDown)
        );
        // Two sessions issued in the same second for the same backend are distinct.
        let (again, other) = crate::codec::encode_session(&k, "web", "up", 100, H);
        assert_ne!(again, up);
        assert_ne!(other, session);
    }

    #[test]
    fn followed_cookies_verify_only_next_to_their_app_value() {
        let k = keys();
        let scope = |app: &'static [u8]| Scope {
            pool: "web",
            follows: Some(app),
        };
        let bound = encode(&k, scope(b"sess-1"), "up", 100, H);
        let plain = encode(&k, "web", "up", 100, H);
        let r = |s: Scope<'_>, v: &str| resolve_cookie(&k, s, H, [v.as_bytes()], 101, lookup);
        assert!(matches!(r(scope(b"sess-1"), &bound), CookieLookup::Hit("up", _)));
        // The app rotated its session, or the cookie is replayed beside another one.
        assert_eq!(r(scope(b"sess-2"), &bound), CookieLookup::Miss(Outcome::Invalid));
        assert_eq!(r(scope(b""), &bound), CookieLookup::Miss(Outcome::Invalid));
        // Neither kind verifies as the other.
        assert_eq!(r("web".into(), &bound), CookieLookup::Miss(Outcome::Invalid));
        assert_eq!(r(scope(b"sess-1"), &plain), CookieLookup::Miss(Outcome::Invalid));
    }
}
