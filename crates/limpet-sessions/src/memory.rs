//! The embedded session table: sharded, expiry checked on every read and swept in the
//! background, bounded by `session_store.max_entries`.
//!
//! Invariants, per shard: every live entry of `map` has its key in `by_expiry` under its
//! expiry second (the index may also hold stale keys of deleted or replaced entries;
//! they are skipped when met); `counts[slot]` is the number of entries in `map` whose
//! backend slot is `slot`. The store's entry count is exact and stays at `max_entries`
//! (concurrent creators may overshoot by one each): a create into a full store sweeps
//! expired entries, then evicts the soonest-expiring entry of its own shard (or, when
//! that one is empty, of the next shard that has one); with uniform keys that is close
//! to the soonest-expiring entry of the whole store.
//!
//! Memory: an entry is a 16-byte key and 8 bytes of slot and expiry in a hash map, plus
//! its 16-byte key in the expiry index; `make bench-micro` measures about 86 bytes per
//! live entry at 1,000,000 entries (docs/performance.md).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use async_trait::async_trait;
use limpet_config::{BackendId, PoolId};

use crate::{Lookup, SessionStore, StoreError, TableKey};

const SHARDS: usize = 32;

/// Keys are already uniform SHA-256 bits: hashing them again would only cost time.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached through `write_u64` for `[u64; 2]` keys; fold anything else in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
    fn write_usize(&mut self, _len: usize) {
        // The array length prefix carries no information.
    }
}

type Map = HashMap<[u64; 2], Entry, BuildHasherDefault<KeyHasher>>;

#[derive(Clone, Copy)]
struct Entry {
    slot: u32,
    /// Unix seconds; u32 lasts until 2106.
    expires: u32,
}

#[derive(Default)]
struct Shard {
    map: Map,
    by_expiry: BTreeMap<u32, Vec<[u64; 2]>>,
    counts: Vec<u64>,
}

impl Shard {
    fn count(&mut self, slot: u32, delta: i64) {
        let i = slot as usize;
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] = self.counts[i].saturating_add_signed(delta);
    }

    fn remove(&mut self, key: &[u64; 2]) -> Option<Entry> {
        let e = self.map.remove(key)?;
        self.count(e.slot, -1);
        Some(e)
    }

    fn insert(&mut self, key: [u64; 2], e: Entry) {
        if let Some(old) = self.map.insert(key, e) {
            self.count(old.slot, -1);
        }
        self.count(e.slot, 1);
        self.by_expiry.entry(e.expires).or_default().push(key);
    }

    /// Removes every entry that expired at or before `now`. Returns how many.
    fn sweep(&mut self, now: u32) -> usize {
        let mut removed = 0;
        while self.by_expiry.first_key_value().is_some_and(|(t, _)| *t <= now) {
            let Some((second, keys)) = self.by_expiry.pop_first() else {
                break;
            };
            for key in keys {
                if self.map.get(&key).is_some_and(|e| e.expires == second) {
                    self.remove(&key);
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Evicts the soonest-expiring live entry. False when the shard is empty.
    fn evict_one(&mut self) -> bool {
        while let Some((second, mut keys)) = self.by_expiry.pop_first() {
            while let Some(key) = keys.pop() {
                if self.map.get(&key).is_some_and(|e| e.expires == second) {
                    self.remove(&key);
                    if !keys.is_empty() {
                        self.by_expiry.insert(second, keys);
                    }
                    return true;
                }
            }
        }
        false
    }
}

/// A locked shard that settles the store's entry count when released.
struct Guarded<'a> {
    shard: MutexGuard<'a, Shard>,
    before: usize,
    len: &'a AtomicUsize,
}

impl std::ops::Deref for Guarded<'_> {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.shard
    }
}

impl std::ops::DerefMut for Guarded<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.shard
    }
}

impl Drop for Guarded<'_> {
    fn drop(&mut self) {
        let after = self.shard.map.len();
        if after > self.before {
            self.len.fetch_add(after - self.before, Ordering::Relaxed);
        } else {
            self.len.fetch_sub(self.before - after, Ordering::Relaxed);
        }
    }
}

/// Backend identities by slot: entries store a 4-byte slot instead of an id.
#[derive(Default)]
struct Slots {
    by_id: HashMap<(PoolId, BackendId), u32>,
    ids: Vec<(PoolId, BackendId)>,
}

pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    max_entries: usize,
    /// Entries in all shards; kept exact by `Guarded`.
    len: AtomicUsize,
    slots: RwLock<Slots>,
    evicted: AtomicU64,
}

fn secs(t: u64) -> u32 {
    u32::try_from(t).unwrap_or(u32::MAX)
}

impl MemoryStore {
    pub fn new(max_entries: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_entries: max_entries.max(1),
            len: AtomicUsize::new(0),
            slots: RwLock::default(),
            evicted: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &TableKey) -> Guarded<'_> {
        self.lock(shard_index(key))
    }

    fn lock(&self, i: usize) -> Guarded<'_> {
        // A poisoned lock only means a panic elsewhere mid-update; the table stays usable.
        let shard = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
        let before = shard.map.len();
        Guarded {
            shard,
            before,
            len: &self.len,
        }
    }

    fn slot(&self, pool: &PoolId, backend: &BackendId) -> u32 {
        if let Some(s) = self.known_slot(pool, backend) {
            return s;
        }
        let key = (pool.clone(), backend.clone());
        let mut w = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = w.by_id.get(&key) {
            return *s;
        }
        let s = w.ids.len() as u32;
        w.ids.push(key.clone());
        w.by_id.insert(key, s);
        s
    }

    fn backend_of(&self, slot: u32) -> Option<BackendId> {
        let r = self.slots.read().unwrap_or_else(|p| p.into_inner());
        r.ids.get(slot as usize).map(|(_, b)| b.clone())
    }

    fn known_slot(&self, pool: &PoolId, backend: &BackendId) -> Option<u32> {
        let r = self.slots.read().unwrap_or_else(|p| p.into_inner());
        r.by_id.get(&(pool.clone(), backend.clone())).copied()
    }

    fn total(&self, slot: u32) -> u64 {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.counts.get(slot as usize).copied().unwrap_or(0)
            })
            .sum()
    }

    /// Removes every expired entry. Returns how many.
    pub fn sweep(&self, now: u64) -> usize {
        let now = secs(now);
        (0..SHARDS).map(|i| self.lock(i).sweep(now)).sum()
    }

    /// The store's entry count including the uncommitted change of a locked shard.
    fn len_with(&self, shard: &Guarded<'_>) -> usize {
        (self.len() + shard.map.len()).saturating_sub(shard.before)
    }

    /// Entries in the whole store (expired ones not swept yet included).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get_now(&self, key: TableKey, now: u64) -> Lookup {
        let mut shard = self.shard(&key);
        let Some(e) = shard.map.get(&key.0).copied() else {
            return Lookup::Absent;
        };
        if u64::from(e.expires) <= now {
            shard.remove(&key.0);
            return Lookup::Expired;
        }
        drop(shard);
        match self.backend_of(e.slot) {
            Some(backend) => Lookup::Live {
                backend,
                expires: u64::from(e.expires),
            },
            None => Lookup::Absent,
        }
    }

    fn create_now(
        &self,
        key: TableKey,
        pool: &PoolId,
        backend: &BackendId,
        expires: u64,
        now: u64,
    ) -> BackendId {
        let slot = self.slot(pool, backend);
        let entry = Entry {
            slot,
            expires: secs(expires),
        };
        let i = shard_index(&key);
        for attempt in 0..2 {
            let mut shard = self.lock(i);
            if let Some(e) = shard.map.get(&key.0).copied() {
                if u64::from(e.expires) > now {
                    drop(shard);
                    return self.backend_of(e.slot).unwrap_or_else(|| backend.clone());
                }
                shard.remove(&key.0);
            }
            // The second attempt inserts whatever `make_room` achieved: concurrent
            // creators may overshoot the bound by one entry each, never more.
            if attempt == 1 || self.len_with(&shard) < self.max_entries {
                shard.insert(key.0, entry);
                return backend.clone();
            }
            drop(shard);
            self.make_room(i, secs(now));
        }
        backend.clone()
    }

    /// Frees one entry's room: expired entries first, then the soonest-expiring of the
    /// first shard (from `start` on) that has any. One shard is locked at a time.
    fn make_room(&self, start: usize, now: u32) {
        for k in 0..SHARDS {
            let mut shard = self.lock((start + k) % SHARDS);
            shard.sweep(now);
            while self.len_with(&shard) >= self.max_entries {
                if !shard.evict_one() {
                    break;
                }
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            if self.len_with(&shard) < self.max_entries {
                return;
            }
        }
    }
}

fn shard_index(key: &TableKey) -> usize {
    // The high bits choose the shard; the map hashes with the low word.
    (key.0[1] >> 59) as usize % SHARDS
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, key: TableKey, _pool: &PoolId, now: u64) -> Result<Lookup, StoreError> {
        Ok(self.get_now(key, now))
    }

    async fn create(
        &self,
        key: TableKey,
        pool: &PoolId,
        backend: &BackendId,
        expires: u64,
        now: u64,
    ) -> Result<BackendId, StoreError> {
        Ok(self.create_now(key, pool, backend, expires, now))
    }

    async fn delete(&self, key: TableKey, _pool: &PoolId) -> Result<(), StoreError> {
        self.shard(&key).remove(&key.0);
        Ok(())
    }

    fn sessions(&self, pool: &PoolId, backend: &BackendId) -> u64 {
        self.known_slot(pool, backend).map_or(0, |s| self.total(s))
    }

    fn entries(&self, pool: &PoolId) -> u64 {
        let slots: Vec<u32> = {
            let r = self.slots.read().unwrap_or_else(|p| p.into_inner());
            r.ids
                .iter()
                .enumerate()
                .filter(|(_, (p, _))| p == pool)
                .map(|(i, _)| i as u32)
                .collect()
        };
        slots.into_iter().map(|s| self.total(s)).sum()
    }

    async fn maintain(&self, _live: &[(PoolId, Vec<BackendId>)], now: u64) {
        self.sweep(now);
    }

    fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
