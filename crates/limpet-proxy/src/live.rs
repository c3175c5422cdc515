//! Live state: what changes while a configuration generation runs, as opposed to the
//! snapshot, which holds only what the YAML says. Per backend: health (with its
//! slow-start ramp) and the cookie-session sketch; per pool: whether it was last seen
//! with nothing usable, and rebalancing progress. In-flight counts live in the
//! backend's metric handles.
//!
//! One rule carries it across reloads: live state belongs to the id. A backend (or
//! pool) whose id survives a reload keeps its live state; a new id starts fresh. The
//! snapshot only holds handles to it, resolved when the snapshot is built, and reads it
//! at pick time, never freezing it into configuration-derived data.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use limpet_config::Rebalance;
use limpet_sessions::SessionSketch;

use crate::health::Health;

/// The live state of one backend.
#[derive(Clone)]
pub struct BackendLive {
    pub health: Arc<Health>,
    /// Cookie sessions seen, for `limpet_backend_sessions` (pools with a cookie
    /// method).
    pub sessions: Option<Arc<SessionSketch>>,
}

/// When a backend's live state begins.
#[derive(Clone, Copy)]
pub enum Joined {
    /// Listed when limpet started: no slow-start ramp.
    AtStart,
    /// Added by a reload at this instant (health clock): it ramps up from here.
    At(u64),
}

impl BackendLive {
    /// The backend's live state in a new generation: `prev`'s, when the id was there
    /// before, with its session sketch kept while the pool's longest cookie lifetime
    /// (`horizon`, seconds) is unchanged; a fresh state joining at `joined` otherwise.
    pub fn carry(prev: Option<&BackendLive>, horizon: Option<u64>, joined: Joined) -> BackendLive {
        let sessions = horizon.map(|h| match prev.and_then(|p| p.sessions.clone()) {
            Some(s) if s.horizon() == SessionSketch::horizon_for(h) => s,
            _ => Arc::new(SessionSketch::new(h)),
        });
        let health = match (prev, joined) {
            (Some(p), _) => p.health.clone(),
            (None, Joined::AtStart) => Arc::new(Health::new(None)),
            (None, Joined::At(now)) => Arc::new(Health::new(Some(now))),
        };
        BackendLive { health, sessions }
    }
}

/// The live state of one pool.
pub struct PoolLive {
    /// Whether the pool was last seen with no backend able to take a request: the
    /// 503s it answers then are logged once per transition.
    all_down: AtomicBool,
    pub rebalance: Option<Rebalancing>,
}

impl PoolLive {
    /// The pool's live state in a new generation: `prev`'s while its backends (ids,
    /// in order) and rebalancing settings are unchanged, since rebalancing marks are
    /// per backend position; otherwise fresh, keeping only the all-down state.
    pub fn carry(
        prev: Option<&Arc<PoolLive>>,
        same_backends: bool,
        rebalance: Option<Rebalance>,
        backends: usize,
    ) -> Arc<PoolLive> {
        if let Some(p) = prev {
            let same_rebalance = p.rebalance.as_ref().map(|r| r.cfg) == rebalance;
            if same_backends && same_rebalance {
                return p.clone();
            }
        }
        Arc::new(PoolLive {
            all_down: AtomicBool::new(prev.is_some_and(|p| p.all_down.load(Ordering::Relaxed))),
            rebalance: rebalance.map(|r| Rebalancing::new(r, backends)),
        })
    }

    /// Marks the pool as having no usable backend; true on the transition.
    pub fn mark_all_down(&self) -> bool {
        !self.all_down.swap(true, Ordering::Relaxed)
    }

    /// Clears the all-down mark if `usable`; true on the transition.
    pub fn clear_all_down(&self, usable: bool) -> bool {
        usable && self.all_down.load(Ordering::Relaxed) && self.all_down.swap(false, Ordering::Relaxed)
    }
}

/// Rebalancing of a pool: which backends hold more than their share of sessions, and
/// how many sessions may still move in the current minute. Refreshed every second by
/// the store keeper.
pub struct Rebalancing {
    pub cfg: Rebalance,
    /// Backends taking new sessions that hold over a tenth more than their share.
    over: Vec<AtomicBool>,
    /// Backends taking new sessions that hold less than their share: where moved
    /// sessions go.
    under: Vec<AtomicBool>,
    /// Moves left in the current one-minute window.
    allowance: AtomicU64,
    /// Start of that window (health clock); 0 before the first refresh.
    window_start: AtomicU64,
}

impl Rebalancing {
    fn new(cfg: Rebalance, backends: usize) -> Self {
        Self {
            cfg,
            over: (0..backends).map(|_| AtomicBool::new(false)).collect(),
            under: (0..backends).map(|_| AtomicBool::new(false)).collect(),
            allowance: AtomicU64::new(0),
            window_start: AtomicU64::new(0),
        }
    }

    /// Takes one move away from backend `from`, if it is over-loaded, some backend is
    /// under-loaded, and the minute's allowance is not used up.
    pub fn take_move(&self, from: usize) -> bool {
        self.over[from].load(Ordering::Relaxed)
            && self.under.iter().any(|u| u.load(Ordering::Relaxed))
            && self
                .allowance
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
    }

    pub fn is_under(&self, i: usize) -> bool {
        self.under[i].load(Ordering::Relaxed)
    }

    /// New loads: (live sessions, weight, takes new sessions) per backend.
    pub fn refresh(&self, loads: &[(u64, u32, bool)], now: u64) {
        let total: u64 = loads.iter().map(|l| l.0).sum();
        let weights: u64 = loads.iter().filter(|l| l.2).map(|l| u64::from(l.1)).sum();
        for (i, (load, weight, takes)) in loads.iter().enumerate() {
            let fair = if weights == 0 {
                0.0
            } else {
                total as f64 * f64::from(*weight) / weights as f64
            };
            let load = *load as f64;
            // Draining and disabled backends are never over-loaded: draining keeps
            // its sessions, disabled loses them anyway.
            self.over[i].store(*takes && load > fair * 1.1 + 1.0, Ordering::Relaxed);
            self.under[i].store(*takes && load < fair, Ordering::Relaxed);
        }
        let start = self.window_start.load(Ordering::Relaxed);
        if start == 0 || now.saturating_sub(start) >= 60_000 {
            self.window_start.store(now.max(1), Ordering::Relaxed);
            let allowed = (total as f64 * self.cfg.max_share_per_minute).floor() as u64;
            self.allowance.store(allowed, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn backend_state_belongs_to_the_id() {
        let first = BackendLive::carry(None, Some(900), Joined::AtStart);
        assert!(first.health.ramp(Some(Duration::from_secs(1)), 0) >= 1.0);
        let kept = BackendLive::carry(Some(&first), Some(900), Joined::At(5_000));
        assert!(Arc::ptr_eq(&kept.health, &first.health));
        assert!(Arc::ptr_eq(
            kept.sessions.as_ref().unwrap(),
            first.sessions.as_ref().unwrap()
        ));
        // A new cookie lifetime needs a new sketch; health stays.
        let longer = BackendLive::carry(Some(&first), Some(90_000), Joined::At(5_000));
        assert!(Arc::ptr_eq(&longer.health, &first.health));
        assert!(!Arc::ptr_eq(
            longer.sessions.as_ref().unwrap(),
            first.sessions.as_ref().unwrap()
        ));
        // A backend a reload adds ramps up from when it joined.
        let added = BackendLive::carry(None, None, Joined::At(5_000));
        assert_eq!(added.health.ramp(Some(Duration::from_secs(1)), 5_500), 0.5);
        assert!(added.sessions.is_none());
    }

    #[test]
    fn pool_state_is_kept_while_its_backends_are() {
        let cfg = Rebalance {
            max_share_per_minute: 0.1,
            min_age: Duration::from_secs(60),
        };
        let a = PoolLive::carry(None, true, Some(cfg), 2);
        assert!(a.mark_all_down());
        assert!(!a.mark_all_down(), "logged once per transition");
        assert!(Arc::ptr_eq(&PoolLive::carry(Some(&a), true, Some(cfg), 2), &a));
        let b = PoolLive::carry(Some(&a), false, Some(cfg), 3);
        assert!(!Arc::ptr_eq(&b, &a));
        assert!(!b.mark_all_down(), "the all-down mark survives");
        assert!(!b.clear_all_down(false));
        assert!(b.clear_all_down(true));
    }
}
