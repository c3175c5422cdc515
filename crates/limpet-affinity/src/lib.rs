//! Pure session-persistence logic: the signed affinity cookie (encode, verify, TTL
//! rules), cookie header handling, and the per-request decision of which pinned
//! backend to honour. No I/O and no clocks: the caller passes `now`.

mod app;
mod chain;
mod codec;
mod header;
mod issue;
mod resolve;

pub use app::{app_cookie, AppCookie, MAX_APP_VALUE};
pub use chain::{hashed, stored, verdict, Standing, Verdict};
pub use codec::{
    decode, encode, encode_session, KeyError, Keyring, Reject, Scope, SigningKey, Ticket, MAX_ENCODED_LEN,
    MIN_SECRET_LEN,
};
pub use header::{cookie_values, delete_cookie, private_cache_control, set_cookie, Scheme, MAX_CANDIDATES};
pub use issue::{follow, needs_new, Follow, Issue, Lifetime, Served};
pub use resolve::{resolve_cookie, CookieLookup, Held, Outcome};
