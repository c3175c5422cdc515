//! The session store's upkeep, apart from the reload loop so that a slow store never
//! delays a SIGHUP.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::clock::{now_ms, unix_now};
use crate::shared::{table_pools, Shared};

/// Owns the session store's upkeep: opens its connections (on this service's own
/// runtime, which lives as long as the process) and every second drops expired entries
/// and refreshes the per-backend counts. Apart from the reload loop, so that a slow
/// store never delays a SIGHUP.
pub struct StoreKeeper {
    shared: Arc<Shared>,
}

impl StoreKeeper {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[async_trait]
impl BackgroundService for StoreKeeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.shared.store.start().await;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = unix_now();
                    let snap = self.shared.current.load_full();
                    self.shared.store.maintain(&table_pools(&snap), now).await;
                    let clock = now_ms();
                    for pool in &snap.pools {
                        let Some(rb) = &pool.live.rebalance else { continue };
                        let loads: Vec<(u64, u32, bool)> = pool
                            .backends
                            .iter()
                            .map(|b| {
                                let n = pool.sessions(b, self.shared.store.as_ref(), now).unwrap_or(0);
                                (n, b.weight, b.takes_new(clock))
                            })
                            .collect();
                        rb.refresh(&loads, clock);
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
