//! Backend health: active checks (run by [`HealthService`]), passive checks fed by real
//! traffic, and the slow-start ramp of backends that join or recover.
//!
//! Each backend has one [`Health`], carried from snapshot to snapshot by backend id, so
//! a reload keeps its state, counters and ramp. A backend is *usable* while its active
//! checks pass (it starts up, as a backend the operator just listed should) and no
//! passive trip holds it out. An unusable backend is treated like a disabled one: it
//! gets nothing, its sessions move (or a strict pool answers 503), and its sessions
//! stay where they moved when it returns: only new sessions go to it, ramping up.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use limpet_config::{CheckKind, HealthCheck, PassiveHealth};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::snapshot::Shared;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since the process's first call: the health clock.
pub fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// The health of one backend.
pub struct Health {
    /// The active checks' verdict: up until `fall` consecutive failures, down until
    /// `rise` consecutive passes.
    active_up: AtomicBool,
    /// Passive: held out of rotation until this instant (health clock), 0 if not.
    passive_until: AtomicU64,
    /// When the backend last joined or recovered (health clock): where slow start
    /// begins.
    up_since: AtomicU64,
    /// When its next active check is due (health clock).
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
    /// A backend that joined at `joined_at` (health clock; 0 for the backends limpet
    /// starts with, which need no ramp).
    pub fn new(joined_at: u64) -> Self {
        Self {
            active_up: AtomicBool::new(true),
            passive_until: AtomicU64::new(0),
            up_since: AtomicU64::new(joined_at),
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
        let since = now.saturating_sub(self.up_since.load(Ordering::Relaxed));
        (since as f64 / window.as_millis().max(1) as f64).min(1.0)
    }

    /// Whether an active check is due; if so, schedules the next one.
    fn check_due(&self, interval: Duration, now: u64) -> bool {
        let due = self.next_check.load(Ordering::Relaxed);
        if now < due {
            return false;
        }
        self.next_check
            .store(now + interval.as_millis() as u64, Ordering::Relaxed);
        true
    }

    /// Usable now, if that differs from what was last reported. A recovery restarts
    /// the slow-start ramp.
    fn report(&self, now: u64) -> Option<bool> {
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

/// One active check: a TCP connect, or an HTTP/1.1 `GET` whose status must fall in
/// `expect_status`, all within `timeout`.
pub async fn probe(addr: SocketAddr, hc: &HealthCheck) -> bool {
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        if hc.kind == CheckKind::Tcp {
            return Ok(true);
        }
        let host = hc.host.clone().unwrap_or_else(|| addr.to_string());
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: limpet-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            hc.path
        );
        stream.write_all(request.as_bytes()).await?;
        // The status line is all that matters: "HTTP/1.x NNN".
        let mut head = [0u8; 12];
        let mut got = 0;
        while got < head.len() {
            let n = stream.read(&mut head[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let status = std::str::from_utf8(&head[..got])
            .ok()
            .filter(|h| h.starts_with("HTTP/1."))
            .and_then(|h| h.get(9..12))
            .and_then(|s| s.parse::<u16>().ok());
        Ok::<_, std::io::Error>(
            status.is_some_and(|s| (hc.expect_status.0..=hc.expect_status.1).contains(&s)),
        )
    };
    matches!(tokio::time::timeout(hc.timeout, check).await, Ok(Ok(true)))
}

/// Runs every pool's active checks on the current snapshot, and publishes health
/// transitions (logs, `limpet_backend_up`) and slow-start weights, ten times a second.
pub struct HealthService {
    shared: Arc<Shared>,
}

impl HealthService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn publish(&self, now: u64) {
        let snap = self.shared.current.load();
        for pool in &snap.pools {
            for b in &pool.backends {
                if let Some(up) = b.health.report(now) {
                    b.metrics.up.set(i64::from(up));
                    if up {
                        tracing::warn!(pool = %pool.id, backend = %b.id, "backend is up again: it takes new sessions (ramping up with slow start), its old sessions stay where they moved");
                    } else {
                        tracing::warn!(pool = %pool.id, backend = %b.id, "backend is down: its sessions move to other backends (or get 503 in a strict pool)");
                    }
                }
                if pool.slow_start.is_some() {
                    let ramp = b.health.ramp(pool.slow_start, now);
                    b.metrics.weight.set(f64::from(b.weight) * ramp);
                }
            }
            pool.note_all_down(now);
        }
    }
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probes: JoinSet<()> = JoinSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = now_ms();
                    let snap = self.shared.current.load_full();
                    for pool in &snap.pools {
                        let Some(hc) = &pool.health_check else { continue };
                        for b in &pool.backends {
                            if !b.health.check_due(hc.interval, now) {
                                continue;
                            }
                            let (health, metrics, addr, hc) =
                                (b.health.clone(), b.metrics.clone(), b.address, hc.clone());
                            probes.spawn(async move {
                                let ok = probe(addr, &hc).await;
                                metrics.count_check(ok);
                                health.record_check(ok, &hc);
                            });
                        }
                    }
                    while probes.try_join_next().is_some() {}
                    self.publish(now);
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
