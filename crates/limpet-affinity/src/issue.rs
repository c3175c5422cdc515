//! Which affinity cookie a response carries, and with what lifetime: the issue rules
//! of both cookie kinds, pure. The caller says what the request's cookie method found
//! and what the response did to the application's cookie; these functions say whether
//! to issue, keep or delete limpet's cookie.

use crate::app::AppCookie;
use crate::resolve::Outcome;

/// How long a cookie's session lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// As long as the browser keeps the cookie: a session cookie, no `Max-Age`
    /// (an application-controlled cookie following a session cookie).
    Browser,
    /// This many seconds from its issue time.
    Secs(u32),
}

impl Lifetime {
    /// The `ttl` field of the cookie format: seconds, `u32::MAX` for [`Lifetime::Browser`].
    pub fn wire(self) -> u32 {
        match self {
            Lifetime::Browser => u32::MAX,
            Lifetime::Secs(s) => s.min(u32::MAX - 1),
        }
    }

    pub fn from_wire(ttl: u32) -> Self {
        if ttl == u32::MAX {
            Lifetime::Browser
        } else {
            Lifetime::Secs(ttl)
        }
    }

    /// A lifetime of `secs` seconds, or the browser's session when `None`.
    pub fn from_max_age(secs: Option<u64>) -> Self {
        match secs {
            None => Lifetime::Browser,
            Some(s) => Lifetime::Secs(u32::try_from(s).unwrap_or(u32::MAX - 1)),
        }
    }
}

/// A session as a cookie states it: when it began and how long it lasts (before the
/// `max_ttl` cap). What a verified cookie says, and what a new one will say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issue {
    pub issued_at: u64,
    pub lifetime: Lifetime,
}

impl Issue {
    /// When the session ends (unix seconds) for counting it, `max_ttl` seconds at most.
    pub fn expires(&self, max_ttl: u64) -> u64 {
        let life = match self.lifetime {
            Lifetime::Browser => max_ttl,
            Lifetime::Secs(s) => u64::from(s).min(max_ttl),
        };
        self.issued_at + life
    }

    /// `Max-Age` of the cookie issued at `now`: what is left of the lifetime, never
    /// beyond `max_ttl`; `None` (a session cookie) for a browser-session lifetime.
    pub fn max_age(&self, max_ttl: u64, now: u64) -> Option<u64> {
        match self.lifetime {
            Lifetime::Browser => None,
            Lifetime::Secs(_) => Some(self.expires(max_ttl).saturating_sub(now)),
        }
    }
}

/// Where a request was served, against where its session was pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// By the session's backend, or there was no session.
    AsPinned,
    /// By another backend: failover or rebalancing moved the session.
    Moved,
}

/// Does a cookie method's cookie need a new value in this response? When its method
/// was consulted and missed, or when its session moved.
pub fn needs_new(outcome: Option<Outcome>, served: Served) -> bool {
    outcome.is_some_and(|o| o != Outcome::Hit || served == Served::Moved)
}

/// What happens to an application-controlled cookie in one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow<'a> {
    /// Nothing to say: the cookie the browser has is right.
    Keep,
    /// The application ended its session: delete limpet's cookie with it.
    Delete,
    /// Pin the application session `app` to the serving backend.
    Issue { app: &'a [u8], issue: Issue },
}

/// The rule of an application-controlled cookie. `response` is what the response did
/// to the application cookie; `request` the application session the request carried
/// and, when limpet's cookie verified, its session; `served` whether the session moved
/// off its backend (its expiry is then kept).
pub fn follow<'a>(
    response: Option<&'a AppCookie>,
    request: Option<(&'a [u8], Option<Issue>)>,
    needs_new: bool,
    served: Served,
    now: u64,
) -> Follow<'a> {
    match response {
        Some(AppCookie::Deleted) => Follow::Delete,
        // A new or renewed application session: limpet's cookie copies its lifetime.
        Some(AppCookie::Set { value, max_age }) => Follow::Issue {
            app: value,
            issue: Issue {
                issued_at: now,
                lifetime: Lifetime::from_max_age(*max_age),
            },
        },
        // The application said nothing: pin its current session where it was served,
        // keeping the expiry limpet's cookie had when the session moved.
        None => match request {
            Some((app, held)) if needs_new => Follow::Issue {
                app,
                issue: held.filter(|_| served == Served::Moved).unwrap_or(Issue {
                    issued_at: now,
                    lifetime: Lifetime::Browser,
                }),
            },
            _ => Follow::Keep,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_round_trip_the_wire_and_cap_at_max_ttl() {
        for l in [Lifetime::Browser, Lifetime::Secs(0), Lifetime::Secs(900)] {
            assert_eq!(Lifetime::from_wire(l.wire()), l);
        }
        assert_eq!(Lifetime::Secs(u32::MAX).wire(), u32::MAX - 1);
        assert_eq!(
            Lifetime::from_max_age(Some(u64::MAX)),
            Lifetime::Secs(u32::MAX - 1)
        );
        let browser = Issue {
            issued_at: 1000,
            lifetime: Lifetime::Browser,
        };
        assert_eq!((browser.expires(600), browser.max_age(600, 1100)), (1600, None));
        let long = Issue {
            issued_at: 1000,
            lifetime: Lifetime::Secs(3600),
        };
        assert_eq!((long.expires(600), long.max_age(600, 1100)), (1600, Some(500)));
        assert_eq!(long.max_age(600, 2000), Some(0));
    }

    #[test]
    fn duration_cookies_change_on_miss_or_move() {
        assert!(
            !needs_new(None, Served::Moved),
            "a method not consulted says nothing"
        );
        assert!(!needs_new(Some(Outcome::Hit), Served::AsPinned));
        assert!(needs_new(Some(Outcome::Hit), Served::Moved));
        for o in [
            Outcome::New,
            Outcome::Expired,
            Outcome::Invalid,
            Outcome::BackendDown,
            Outcome::Repinned,
        ] {
            assert!(needs_new(Some(o), Served::AsPinned), "{o:?}");
        }
    }

    #[test]
    fn followed_cookie_rules() {
        let set = AppCookie::Set {
            value: b"s2".to_vec(),
            max_age: Some(60),
        };
        let held = Issue {
            issued_at: 10,
            lifetime: Lifetime::Secs(900),
        };
        // The response wins: deleted or set by the application.
        assert_eq!(
            follow(Some(&AppCookie::Deleted), None, true, Served::AsPinned, 100),
            Follow::Delete
        );
        assert_eq!(
            follow(
                Some(&set),
                Some((b"s1", Some(held))),
                false,
                Served::AsPinned,
                100
            ),
            Follow::Issue {
                app: b"s2",
                issue: Issue {
                    issued_at: 100,
                    lifetime: Lifetime::Secs(60)
                }
            }
        );
        // Silent application, session still right: keep.
        assert_eq!(
            follow(None, Some((b"s1", Some(held))), false, Served::AsPinned, 100),
            Follow::Keep
        );
        // Silent application, session moved: same expiry on the new backend.
        assert_eq!(
            follow(None, Some((b"s1", Some(held))), true, Served::Moved, 100),
            Follow::Issue {
                app: b"s1",
                issue: held
            }
        );
        // Silent application, no valid cookie of limpet's: a browser-session pin.
        assert_eq!(
            follow(None, Some((b"s1", None)), true, Served::AsPinned, 100),
            Follow::Issue {
                app: b"s1",
                issue: Issue {
                    issued_at: 100,
                    lifetime: Lifetime::Browser
                }
            }
        );
        // No application session at all: nothing to follow.
        assert_eq!(follow(None, None, true, Served::AsPinned, 100), Follow::Keep);
    }
}
