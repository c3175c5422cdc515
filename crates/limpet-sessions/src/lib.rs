//! Session tables for table-based persistence (`source_ip`, `header`) behind one trait.
//!
//! A table maps a session key to a backend id with an expiry fixed at creation (static
//! TTL: nothing ever extends it). The trait is async so that a networked store (Redis)
//! fits behind it; the embedded [`MemoryStore`] answers without awaiting.
//!
//! Keys are digests: [`TableKey::new`] hashes (pool, method, raw id) with SHA-256 and
//! keeps 128 bits, so a client-chosen id of any size costs the same 16 bytes, and two
//! limpet instances derive the same key for the same id.

mod memory;
mod redis_store;
mod sketch;

use async_trait::async_trait;
use limpet_config::{BackendId, PoolId};
use sha2::{Digest, Sha256};

pub use memory::MemoryStore;
pub use redis_store::RedisStore;
pub use sketch::SessionSketch;

/// The stored identity of one session: 128 bits of SHA-256 over pool, method and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableKey(pub [u64; 2]);

impl TableKey {
    pub fn new(pool: &PoolId, method: &str, id: &[u8]) -> Self {
        let mut h = Sha256::new();
        // Lengths first, so that no two (pool, method, id) triples share an encoding.
        h.update((pool.as_str().len() as u32).to_be_bytes());
        h.update(pool.as_str().as_bytes());
        h.update((method.len() as u32).to_be_bytes());
        h.update(method.as_bytes());
        h.update(id);
        let d = h.finalize();
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&d[..8]);
        b.copy_from_slice(&d[8..16]);
        Self([u64::from_le_bytes(a), u64::from_le_bytes(b)])
    }
}

/// What a table says about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A live session: its backend and its expiry (unix seconds).
    Live {
        backend: BackendId,
        expires: u64,
    },
    /// The session existed and has expired; it is gone now.
    Expired,
    Absent,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store timed out")]
    Timeout,
    #[error("session store unreachable: {0}")]
    Connection(String),
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Looks a session up; an expired one is reported once as `Expired` and removed.
    async fn get(&self, key: TableKey, pool: &PoolId, now: u64) -> Result<Lookup, StoreError>;

    /// Creates a session pinned to `backend` until `expires` (unix seconds) unless a live
    /// one exists. Returns the backend of the session that holds the key afterwards:
    /// with two concurrent creators, both learn the winner's.
    async fn create(
        &self,
        key: TableKey,
        pool: &PoolId,
        backend: &BackendId,
        expires: u64,
        now: u64,
    ) -> Result<BackendId, StoreError>;

    /// Ends a session now (its backend is gone and the pool re-pins).
    async fn delete(&self, key: TableKey, pool: &PoolId) -> Result<(), StoreError>;

    /// Live sessions pinned to a backend.
    fn sessions(&self, pool: &PoolId, backend: &BackendId) -> u64;

    /// Live entries of a pool.
    fn entries(&self, pool: &PoolId) -> u64;

    /// Entries evicted so far to respect the store's bound.
    fn evicted(&self) -> u64;

    /// Operations that failed so far: (timed out, could not reach the store).
    fn failures(&self) -> (u64, u64) {
        (0, 0)
    }

    /// Opens what the store needs. Runs once, on the runtime that then drives the
    /// store's connections for the life of the process.
    async fn start(&self) {}

    /// Periodic upkeep (every second): drop expired entries and bring the counts of
    /// `live` backends (pool, its backend ids) up to date.
    async fn maintain(&self, live: &[(PoolId, Vec<BackendId>)], now: u64);
}

impl TableKey {
    /// 32 hex digits: how the key is spelled in a shared store.
    pub fn hex(&self) -> String {
        format!("{:016x}{:016x}", self.0[0], self.0[1])
    }
}
