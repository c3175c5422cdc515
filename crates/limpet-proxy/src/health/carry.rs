//! Active-check state across a reload: health travels with the backend id, and what
//! its checks said is re-validated against what they test in the new generation (the
//! backend's address, or nothing once the pool's checks are removed).

use std::collections::HashMap;

use crate::pool::{BackendRt, PoolRt};
use crate::snapshot::Snapshot;

/// Re-validates the check state of every backend `next` carries over from `prev` by
/// id (see [`super::Health::retarget`]). Runs before `next` is swapped in, so no
/// check starts from `next` on stale state.
pub fn carry_checks(prev: &Snapshot, next: &Snapshot) {
    let before: HashMap<_, &PoolRt> = prev.pools.iter().map(|p| (&p.id, p)).collect();
    // What active checks of `b` test in pool `p`'s generation.
    let target = |p: &PoolRt, b: &BackendRt| p.health_check.as_ref().map(|_| b.address);
    for pool in &next.pools {
        let Some(old) = before.get(&pool.id) else { continue };
        for b in &pool.backends {
            let Some(i) = old.backend_index(b.id.as_str().as_bytes()) else {
                continue;
            };
            b.live
                .health
                .retarget(target(old, &old.backends[i]), target(pool, b), next.generation);
        }
    }
}
