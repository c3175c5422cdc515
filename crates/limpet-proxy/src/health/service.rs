//! The service that runs every pool's active checks and publishes health transitions.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::task::JoinSet;

use super::probe::{probe, Connectors};
use crate::attempt::peer_for;
use crate::clock::now_ms;
use crate::shared::Shared;

/// Runs every pool's active checks on the current snapshot, and publishes health
/// transitions (logs, `limpet_backend_up`) and slow-start weights, ten times a second.
pub struct HealthService {
    shared: Arc<Shared>,
    /// Open every check's connection, as Pingora opens a proxied request's.
    connectors: Arc<Connectors>,
}

impl HealthService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            connectors: Arc::new(Connectors::new()),
        }
    }

    fn publish(&self, now: u64) {
        let snap = self.shared.current.load();
        for pool in &snap.pools {
            for b in &pool.backends {
                if let Some(up) = b.live.health.report(now) {
                    b.metrics.up.set(i64::from(up));
                    if up && pool.slow_start.is_some() {
                        tracing::warn!(pool = %pool.id, backend = %b.id, "backend is up again: it takes new sessions (ramping up with slow start), its old sessions stay where they moved");
                    } else if up {
                        tracing::warn!(pool = %pool.id, backend = %b.id, "backend is up again: it takes new sessions, its old sessions stay where they moved");
                    } else {
                        tracing::warn!(pool = %pool.id, backend = %b.id, "backend is down: its sessions move to other backends (or get 503 in a strict pool)");
                    }
                }
                if pool.slow_start.is_some() {
                    let ramp = b.live.health.ramp(pool.slow_start, now);
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
                    // A check's result counts only while what it tested (the
                    // backend's address, the pool's checks) is what this generation
                    // configures: `Health::retarget`.
                    let generation = snap.generation;
                    for pool in &snap.pools {
                        let Some(hc) = &pool.health_check else { continue };
                        for (i, b) in pool.backends.iter().enumerate() {
                            if !b.live.health.check_due(generation, hc.interval, now) {
                                continue;
                            }
                            let (health, metrics, peer, hc) =
                                (b.live.health.clone(), b.metrics.clone(), peer_for(&snap, pool, i), hc.clone());
                            let connectors = self.connectors.clone();
                            probes.spawn(async move {
                                let ok = probe(&connectors, peer, &hc).await;
                                if health.check_done(generation, ok, &hc, now_ms()) {
                                    metrics.count_check(ok);
                                }
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
