//! The two clocks limpet reads: unix seconds (cookie issue times, table expiries, what
//! users and Redis see) and the process's monotonic milliseconds (health, slow start,
//! rebalancing windows: never moved by a wall-clock step).

use std::sync::LazyLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since the process first read this clock.
pub fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// Whole unix seconds now.
pub fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

/// Whole unix seconds of `t` (0 before 1970).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix seconds of `t` with their fraction, as Prometheus timestamps are.
pub fn unix_secs_f64(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
