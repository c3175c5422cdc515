//! Pure selection of a backend for a new session. Callers describe the pool as
//! weights plus an `eligible` predicate (state, health, backends already tried in this
//! request); nothing here knows about I/O, health checks or configuration files.

mod hash;
mod least;
mod picker;
mod random;
mod round_robin;

pub use hash::{hash_bytes, Bound, HashRing, PROBES};
pub use least::pick_least_requests;
pub use picker::{Live, Picker, Policy};
pub use random::pick_weighted_random;
pub use round_robin::RoundRobin;
