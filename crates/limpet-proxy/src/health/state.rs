//! The health of one backend: active checks, passive checks fed by real
//! traffic, and the slow-start ramp of backends that join or recover.
//!
//! Each backend has one [`Health`], carried from snapshot to snapshot by backend id, so
//! a reload keeps its state, counters and ramp. A backend is *usable* while its active
//! checks pass (it starts up, as a backend the operator just listed should) and no
//! passive trip holds it out. An unusable backend is treated like a disabled one: it
//! gets nothing, its sessions move (or a strict pool answers 503), and its sessions
//! stay where they moved when it returns: only new sessions go to it, ramping up.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use limpet_config::{HealthCheck, PassiveHealth};

/// `up_since` of a backend listed when limpet started: it takes its full weight at
/// once (limpet starting is not the backend joining).
const NO_RAMP: u64 = u64::MAX;

/// `next_check` while a check is running: the next one is scheduled when it ends.
const RUNNING: u64 = u64::MAX;

/// The health of one backend.
pub struct Health {
    /// The active checks' verdict: up until `fall` consecutive failures, down until
    /// `rise` consecutive passes.
    active_up: AtomicBool,
    /// Passive: held out of rotation until this instant (health clock), 0 if not.
    passive_until: AtomicU64,
    /// When the backend last joined or recovered (health clock): where slow start
    /// begins; [`NO_RAMP`] for a backend that has been up since limpet started.
    up_since: AtomicU64,
    /// When its next active check is due (health clock), or [`RUNNING`].
    next_check: AtomicU64,
    counters: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    passes: u32,
    fails: u32,
    /// Passive failures inside the window (health clock).
    recent: VecDeque<u64>,
    /// Whether the backend was usable when last reported (logs, `limpet_backend_up`).
    reported_up: bool,
}

impl Health {
    /// A backend that joined at `joined_at` (health clock), ramping up from then; or,
    /// with `None`, one listed when limpet started, which needs no ramp.
    pub fn new(joined_at: Option<u64>) -> Self {
        Self {
            active_up: AtomicBool::new(true),
            passive_until: AtomicU64::new(0),
            up_since: AtomicU64::new(joined_at.unwrap_or(NO_RAMP)),
            next_check: AtomicU64::new(0),
            counters: Mutex::new(Counters {
                reported_up: true,
                ..Counters::default()
            }),
        }
    }

    /// May this backend receive traffic now?
    pub fn usable(&self, now: u64) -> bool {
        self.active_up.load(Ordering::Relaxed) && now >= self.passive_until.load(Ordering::Relaxed)
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an active check's result.
    pub fn record_check(&self, ok: bool, hc: &HealthCheck) {
        let mut c = self.counters();
        if ok {
            c.passes = c.passes.saturating_add(1);
            c.fails = 0;
            if c.passes >= hc.rise {
                self.active_up.store(true, Ordering::Relaxed);
            }
        } else {
            c.fails = c.fails.saturating_add(1);
            c.passes = 0;
            if c.fails >= hc.fall {
                self.active_up.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Records a failure seen in real traffic (connect error, 5xx, timeout). True when
    /// it takes the backend out: `max_fails` failures within `window`.
    pub fn record_failure(&self, p: &PassiveHealth, now: u64) -> bool {
        let mut c = self.counters();
        let window = p.window.as_millis() as u64;
        while c.recent.front().is_some_and(|t| now.saturating_sub(*t) > window) {
            c.recent.pop_front();
        }
        c.recent.push_back(now);
        if c.recent.len() < p.max_fails as usize || now < self.passive_until.load(Ordering::Relaxed) {
            return false;
        }
        c.recent.clear();
        self.passive_until
            .store(now + p.cooldown.as_millis() as u64, Ordering::Relaxed);
        true
    }

    /// Share of its weight the backend gets for new sessions now: 0 → 1 over
    /// `slow_start` after it joined or recovered.
    pub fn ramp(&self, slow_start: Option<Duration>, now: u64) -> f64 {
        let Some(window) = slow_start else { return 1.0 };
        let up_since = self.up_since.load(Ordering::Relaxed);
        if up_since == NO_RAMP {
            return 1.0;
        }
        let since = now.saturating_sub(up_since);
        (since as f64 / window.as_millis().max(1) as f64).min(1.0)
    }

    /// Whether an active check is due; if so, claims it: no other check of this
    /// backend starts until [`Health::check_done`] schedules the next.
    pub fn check_due(&self, now: u64) -> bool {
        let due = self.next_check.load(Ordering::Relaxed);
        due != RUNNING
            && now >= due
            && self
                .next_check
                .compare_exchange(due, RUNNING, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// A check ended at `now`: the next starts `interval` later. A check slower than
    /// its interval therefore never overlaps the next, as with Envoy and HAProxy.
    pub fn check_done(&self, interval: Duration, now: u64) {
        self.next_check
            .store(now + interval.as_millis() as u64, Ordering::Relaxed);
    }

    /// Usable now, if that differs from what was last reported. A recovery restarts
    /// the slow-start ramp.
    pub(super) fn report(&self, now: u64) -> Option<bool> {
        let up = self.usable(now);
        let mut c = self.counters();
        if c.reported_up == up {
            return None;
        }
        c.reported_up = up;
        if up {
            self.up_since.store(now, Ordering::Relaxed);
        }
        Some(up)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use limpet_config::CheckKind;

    fn check(rise: u32, fall: u32) -> HealthCheck {
        HealthCheck {
            kind: CheckKind::Tcp,
            path: "/healthz".into(),
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            rise,
            fall,
            expect_status: (200, 399),
            host: None,
        }
    }

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_passes() {
        let hc = check(2, 3);
        let h = Health::new(None);
        assert!(h.usable(0), "a listed backend starts up");
        h.record_check(false, &hc);
        h.record_check(false, &hc);
        assert!(h.usable(0), "two failures of three");
        h.record_check(true, &hc);
        h.record_check(false, &hc);
        h.record_check(false, &hc);
        assert!(h.usable(0), "a pass resets the failure count");
        h.record_check(false, &hc);
        assert!(!h.usable(0));
        h.record_check(true, &hc);
        h.record_check(false, &hc);
        h.record_check(true, &hc);
        assert!(!h.usable(0), "a failure resets the pass count");
        h.record_check(true, &hc);
        assert!(h.usable(0));
    }

    #[test]
    fn recovery_is_reported_once_and_restarts_the_ramp() {
        let hc = check(1, 1);
        let h = Health::new(None);
        let ramp = Some(Duration::from_millis(1000));
        assert_eq!(h.ramp(ramp, 5), 1.0, "up since limpet started: no ramp");
        assert_eq!(h.report(5), None);
        h.record_check(false, &hc);
        assert_eq!(h.report(10), Some(false));
        assert_eq!(h.report(20), None);
        h.record_check(true, &hc);
        assert_eq!(h.report(500), Some(true));
        assert_eq!(h.ramp(ramp, 750), 0.25);
        assert_eq!(h.ramp(ramp, 5000), 1.0);
        assert_eq!(h.ramp(None, 500), 1.0);
    }

    #[test]
    fn passive_failures_trip_within_the_window_for_the_cooldown() {
        let p = PassiveHealth {
            max_fails: 3,
            window: Duration::from_millis(1000),
            cooldown: Duration::from_millis(2000),
        };
        let h = Health::new(None);
        assert!(!h.record_failure(&p, 0));
        assert!(!h.record_failure(&p, 500));
        // The first failure left the window: still two.
        assert!(!h.record_failure(&p, 1200));
        assert!(h.record_failure(&p, 1300));
        assert!(!h.usable(1300) && !h.usable(3299));
        assert!(h.usable(3300));
    }

    #[test]
    fn checks_never_overlap() {
        let h = Health::new(None);
        assert!(h.check_due(0));
        assert!(!h.check_due(10_000), "the running check holds the next");
        h.check_done(Duration::from_millis(100), 2_000);
        assert!(!h.check_due(2_099));
        assert!(h.check_due(2_100));
    }
}
