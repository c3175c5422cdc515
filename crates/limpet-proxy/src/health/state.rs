//! The health of one backend: active checks, passive checks fed by real
//! traffic, and the slow-start ramp of backends that join or recover.
//!
//! Each backend has one [`Health`], carried from snapshot to snapshot by backend id, so
//! a reload keeps its state, counters and ramp; [`Health::retarget`] re-validates what
//! the active checks said against what they test in the new generation, and the next
//! check is due the interval in use after the last one ended (never at a time computed
//! under an older interval). A backend is *usable* while its active checks pass (it
//! starts up, as a backend the operator just listed should) and no passive trip holds
//! it out. An unusable backend is treated like a disabled one: it gets nothing, its
//! sessions move (or a strict pool answers 503), and its sessions stay where they
//! moved when it returns: only new sessions go to it, ramping up.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use limpet_config::{HealthCheck, PassiveHealth};

/// `up_since` of a backend listed when limpet started: it takes its full weight at
/// once (limpet starting is not the backend joining).
const NO_RAMP: u64 = u64::MAX;

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
    /// The first configuration generation whose checks test what they test now: a
    /// check started from an older one tested another address, or a check since
    /// removed, and its result is dropped.
    checks_from: u64,
    /// When the last check (of `checks_from` or later) ended, health clock.
    last_check: Option<u64>,
    /// The generation of the check running now, if one runs.
    running: Option<u64>,
}

impl Health {
    /// A backend that joined at `joined_at` (health clock), ramping up from then; or,
    /// with `None`, one listed when limpet started, which needs no ramp.
    pub fn new(joined_at: Option<u64>) -> Self {
        Self {
            active_up: AtomicBool::new(true),
            passive_until: AtomicU64::new(0),
            up_since: AtomicU64::new(joined_at.unwrap_or(NO_RAMP)),
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
    fn record_check(&self, c: &mut Counters, ok: bool, hc: &HealthCheck) {
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

    /// Whether an active check started from configuration generation `generation`,
    /// whose checks run every `interval`, is due at `now`; if so, claims it: no other
    /// check of this backend starts until [`Health::check_done`] records it. A check
    /// slower than its interval therefore never overlaps the next, as with Envoy and
    /// HAProxy.
    pub fn check_due(&self, generation: u64, interval: Duration, now: u64) -> bool {
        let mut c = self.counters();
        // A check of an older target may still run: it holds nothing.
        let running = c.running.is_some_and(|g| g >= c.checks_from);
        let due = c
            .last_check
            .is_none_or(|t| now >= t.saturating_add(interval.as_millis() as u64));
        if generation < c.checks_from || running || !due {
            return false;
        }
        c.running = Some(generation);
        true
    }

    /// The check claimed by [`Health::check_due`] for generation `generation` ended
    /// at `now` with `ok`: its result counts, and the next check is due an interval
    /// from now, unless a reload has since changed what checks test. True when the
    /// result counted.
    pub fn check_done(&self, generation: u64, ok: bool, hc: &HealthCheck, now: u64) -> bool {
        let mut c = self.counters();
        if generation < c.checks_from {
            return false;
        }
        c.running = None;
        c.last_check = Some(now);
        self.record_check(&mut c, ok, hc);
        true
    }

    /// A reload carried this backend's health into configuration generation
    /// `generation`. `before` and `after` are the address active checks tested and
    /// now test, `None` where the pool has no active check.
    ///
    /// Unchanged: nothing to do (a new interval applies by itself, see
    /// [`Health::check_due`]). Changed: counts start over, a check is due at once, and
    /// a check still in flight counts for nothing, since it tested what no longer is.
    /// With checks removed, their down verdict is lifted too: nothing would ever lift
    /// it otherwise. A verdict of checks that remain stands until the new target's
    /// checks overturn it. A passive trip is left to run its cooldown either way.
    pub fn retarget(&self, before: Option<SocketAddr>, after: Option<SocketAddr>, generation: u64) {
        if before == after {
            return;
        }
        let mut c = self.counters();
        c.checks_from = generation;
        c.passes = 0;
        c.fails = 0;
        c.last_check = None;
        c.running = None;
        if after.is_none() {
            self.active_up.store(true, Ordering::Relaxed);
        }
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

    fn addr(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_passes() {
        let hc = check(2, 3);
        let h = Health::new(None);
        let check = |ok| assert!(h.check_done(1, ok, &hc, 0));
        assert!(h.usable(0), "a listed backend starts up");
        check(false);
        check(false);
        assert!(h.usable(0), "two failures of three");
        check(true);
        check(false);
        check(false);
        assert!(h.usable(0), "a pass resets the failure count");
        check(false);
        assert!(!h.usable(0));
        check(true);
        check(false);
        check(true);
        assert!(!h.usable(0), "a failure resets the pass count");
        check(true);
        assert!(h.usable(0));
    }

    #[test]
    fn recovery_is_reported_once_and_restarts_the_ramp() {
        let hc = check(1, 1);
        let h = Health::new(None);
        let ramp = Some(Duration::from_millis(1000));
        assert_eq!(h.ramp(ramp, 5), 1.0, "up since limpet started: no ramp");
        assert_eq!(h.report(5), None);
        h.check_done(1, false, &hc, 10);
        assert_eq!(h.report(10), Some(false));
        assert_eq!(h.report(20), None);
        h.check_done(1, true, &hc, 500);
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
        let (h, hc, every) = (Health::new(None), check(1, 1), Duration::from_millis(100));
        assert!(h.check_due(1, every, 0), "the first check is due at once");
        assert!(!h.check_due(1, every, 10_000), "the running check holds the next");
        assert!(h.check_done(1, true, &hc, 2_000));
        assert!(!h.check_due(1, every, 2_099));
        assert!(h.check_due(1, every, 2_100));
    }

    /// Carried: the active verdict. Checks removed lift a down verdict; a passive trip
    /// runs its cooldown all the same.
    #[test]
    fn removing_the_checks_lifts_their_verdict_but_not_a_passive_trip() {
        let hc = check(1, 1);
        let h = Health::new(None);
        h.check_done(1, false, &hc, 0);
        assert!(!h.usable(0));
        h.retarget(addr(1), None, 2);
        assert!(h.usable(0), "nothing would ever test it again");
        assert_eq!(h.report(0), None, "reported up before, up now");

        let trip = PassiveHealth {
            max_fails: 1,
            window: Duration::from_secs(1),
            cooldown: Duration::from_secs(5),
        };
        let h = Health::new(None);
        h.check_done(1, false, &hc, 0);
        assert!(h.record_failure(&trip, 1_000));
        h.retarget(addr(1), None, 2);
        assert!(!h.usable(1_000) && !h.usable(5_999));
        assert!(h.usable(6_000));
    }

    /// Carried: the schedule. A new interval applies from the last check's end,
    /// shorter or longer.
    #[test]
    fn a_new_interval_schedules_from_the_last_check() {
        let (h, hc) = (Health::new(None), check(1, 1));
        let hour = Duration::from_secs(3600);
        assert!(h.check_due(1, hour, 0));
        h.check_done(1, true, &hc, 1_000);
        h.retarget(addr(1), addr(1), 2);
        assert!(!h.check_due(2, Duration::from_secs(1), 1_999));
        assert!(
            h.check_due(2, Duration::from_secs(1), 2_000),
            "by the new interval"
        );
        h.check_done(2, true, &hc, 3_000);
        assert!(!h.check_due(3, hour, 3_000 + 60_000), "a longer one applies too");
    }

    /// Carried: a check in flight. One that tested the old address counts for nothing
    /// and holds nothing up; the new address is checked at once.
    #[test]
    fn a_check_in_flight_at_an_address_change_counts_for_nothing() {
        let (h, hc, every) = (Health::new(None), check(1, 1), Duration::from_secs(5));
        assert!(h.check_due(1, every, 0));
        h.retarget(addr(1), addr(2), 2);
        assert!(!h.check_due(1, every, 10), "an old snapshot starts no check");
        assert!(h.check_due(2, every, 10), "the new address is checked at once");
        assert!(!h.check_done(1, false, &hc, 20), "the old address's result");
        assert!(h.usable(20));
        assert!(!h.check_due(2, every, 30), "the new address's check still runs");
        assert!(h.check_done(2, true, &hc, 40));
        assert!(!h.check_due(2, every, 41));
        assert!(h.check_due(2, every, 5_040));
    }

    /// Carried: the counts and the verdict of checks that remain. A new address starts
    /// the counts over; the verdict stands until its own checks overturn it.
    #[test]
    fn a_new_address_starts_the_counts_over() {
        let h = Health::new(None);
        let hc = check(2, 2);
        h.check_done(1, false, &hc, 0);
        h.retarget(addr(1), addr(2), 2);
        h.check_done(2, false, &hc, 10);
        assert!(h.usable(10), "one failure at each address is not two in a row");
        h.check_done(2, false, &hc, 20);
        assert!(!h.usable(20));
        h.check_done(2, true, &hc, 30);
        h.retarget(addr(2), addr(3), 3);
        assert!(!h.usable(30), "down stays down until the new address passes");
        h.check_done(3, true, &hc, 40);
        assert!(!h.usable(40), "one pass of two");
        h.check_done(3, true, &hc, 50);
        assert!(h.usable(50));
        // Checks added where there were none: due at once.
        let added = Health::new(None);
        added.retarget(None, addr(1), 4);
        assert!(added.check_due(4, Duration::from_secs(3600), 0));
    }
}
