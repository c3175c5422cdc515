//! The shared session store: several limpet instances keep their tables in one Redis.
//!
//! Keys (with the configured prefix `P`):
//! - `P s:<32 hex>` → the backend id, with the session's static TTL as the key's own
//!   expiry (`SET … NX PX`): Redis ends the session, reads never extend it.
//! - `P b:<pool>:<backend>` → a sorted set of that backend's sessions scored by their
//!   expiry (Redis clock, ms). Counts for `limpet_backend_sessions` come from it once a
//!   second, for every backend in one round trip, without scanning the keyspace.
//!
//! Creating a session and indexing it is one Lua script, so it is atomic across
//! instances: of two instances creating the same session at once, one wins and both
//! learn its backend. Every call is bounded by `timeout`; a slow or unreachable Redis
//! is an error the caller treats as a miss. Connections are multiplexed
//! (`pool_size` of them, used in turn) and reconnect by themselves.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use limpet_config::{redact_url, BackendId, PoolId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::{Lookup, SessionStore, StoreError, TableKey};

/// How long a failing store is left alone before the next call probes it.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// SET NX PX, and on success index the session under its backend. Returns the backend
/// that holds the key afterwards.
const CREATE: &str = r"
local ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if ok then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
  return ARGV[1]
end
return redis.call('GET', KEYS[1]) or ARGV[1]
";

/// Delete a session and its index entry.
const DELETE: &str = r"
local b = redis.call('GET', KEYS[1])
if b then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', ARGV[1] .. b, ARGV[2])
end
return 1
";

/// Drop expired index entries and count the live ones, per index key.
const COUNT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, k in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
  out[i] = redis.call('ZCARD', k)
end
return out
";

pub struct RedisStore {
    client: redis::Client,
    /// Set by [`SessionStore::start`]; until then every call fails fast.
    conns: ArcSwapOption<Vec<ConnectionManager>>,
    next: AtomicUsize,
    pool_size: usize,
    prefix: String,
    timeout: Duration,
    create: redis::Script,
    delete: redis::Script,
    count: redis::Script,
    /// Live sessions per (pool, backend), refreshed by `maintain`.
    counts: RwLock<HashMap<PoolId, HashMap<BackendId, u64>>>,
    timeouts: AtomicU64,
    unreachable: AtomicU64,
    /// Whether the last call failed: failures are logged once per transition.
    failing: AtomicBool,
    /// While failing, calls before this instant (ms since `epoch`) fail at once without
    /// waiting on Redis, so an outage costs requests nothing: one call in each
    /// `RETRY_AFTER` probes it.
    retry_at: AtomicU64,
    epoch: std::time::Instant,
    redacted_url: String,
}

impl RedisStore {
    /// Checks the configuration; connects later, in [`SessionStore::start`].
    pub fn new(cfg: &limpet_config::RedisStore) -> Result<Self, String> {
        // rediss:// needs a process-wide TLS provider; a second install is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| format!("session_store.redis_url `{}`: {e}", redact_url(&cfg.url)))?;
        Ok(Self {
            client,
            conns: ArcSwapOption::empty(),
            next: AtomicUsize::new(0),
            pool_size: cfg.pool_size.max(1),
            prefix: cfg.key_prefix.clone(),
            timeout: cfg.timeout,
            create: redis::Script::new(CREATE),
            delete: redis::Script::new(DELETE),
            count: redis::Script::new(COUNT),
            counts: RwLock::default(),
            timeouts: AtomicU64::new(0),
            unreachable: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            redacted_url: redact_url(&cfg.url),
        })
    }

    fn session_key(&self, key: TableKey) -> String {
        format!("{}s:{}", self.prefix, key.hex())
    }

    fn index_prefix(&self, pool: &PoolId) -> String {
        format!("{}b:{}:", self.prefix, pool.as_str())
    }

    fn conn(&self) -> Option<ConnectionManager> {
        let conns = self.conns.load();
        let conns = conns.as_ref()?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len();
        Some(conns[i].clone())
    }

    /// Runs one call against Redis within the timeout, counting and logging failures.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        if self.failing.load(Ordering::Relaxed) && now_ms < self.retry_at.load(Ordering::Relaxed) {
            return Err(StoreError::Connection("unavailable, retrying shortly".into()));
        }
        let result = match self.conn() {
            None => Err(StoreError::Connection("not connected yet".into())),
            Some(conn) => match tokio::time::timeout(self.timeout, f(conn)).await {
                Err(_) => Err(StoreError::Timeout),
                Ok(Err(e)) => Err(StoreError::Connection(e.to_string())),
                Ok(Ok(v)) => Ok(v),
            },
        };
        match &result {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::warn!(url = %self.redacted_url, "session store reachable again");
                }
            }
            Err(e) => {
                let counter = match e {
                    StoreError::Timeout => &self.timeouts,
                    StoreError::Connection(_) => &self.unreachable,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.retry_at
                    .store(now_ms + RETRY_AFTER.as_millis() as u64, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        url = %self.redacted_url,
                        error = %e,
                        "session store unavailable: table methods miss and requests fall through to the next method or balance until it answers again"
                    );
                }
            }
        }
        result
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn get(&self, key: TableKey, _pool: &PoolId, now: u64) -> Result<Lookup, StoreError> {
        let k = self.session_key(key);
        let (backend, pttl): (Option<String>, i64) = self
            .call(|mut c| async move { redis::pipe().get(&k).pttl(&k).query_async(&mut c).await })
            .await?;
        // Redis ends sessions by itself: an expired one is simply absent.
        Ok(match backend {
            Some(b) => Lookup::Live {
                backend: BackendId::new(&b),
                expires: now + u64::try_from(pttl.max(0)).unwrap_or(0).div_ceil(1000),
            },
            None => Lookup::Absent,
        })
    }

    async fn create(
        &self,
        key: TableKey,
        pool: &PoolId,
        backend: &BackendId,
        expires: u64,
        now: u64,
    ) -> Result<BackendId, StoreError> {
        let k = self.session_key(key);
        let index = format!("{}{}", self.index_prefix(pool), backend.as_str());
        let ttl_ms = expires.saturating_sub(now).max(1) * 1000;
        let member = key.hex();
        let winner: String = self
            .call(|mut c| async move {
                self.create
                    .key(&k)
                    .key(&index)
                    .arg(backend.as_str())
                    .arg(ttl_ms)
                    .arg(&member)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(BackendId::new(&winner))
    }

    async fn delete(&self, key: TableKey, pool: &PoolId) -> Result<(), StoreError> {
        let k = self.session_key(key);
        let prefix = self.index_prefix(pool);
        let member = key.hex();
        let _: i64 = self
            .call(|mut c| async move {
                self.delete
                    .key(&k)
                    .arg(&prefix)
                    .arg(&member)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    fn sessions(&self, pool: &PoolId, backend: &BackendId) -> u64 {
        let counts = self.counts.read().unwrap_or_else(|p| p.into_inner());
        counts
            .get(pool)
            .and_then(|b| b.get(backend))
            .copied()
            .unwrap_or(0)
    }

    fn entries(&self, pool: &PoolId) -> u64 {
        let counts = self.counts.read().unwrap_or_else(|p| p.into_inner());
        counts.get(pool).map_or(0, |b| b.values().sum())
    }

    fn evicted(&self) -> u64 {
        // Redis applies its own memory policy; limpet evicts nothing.
        0
    }

    fn failures(&self) -> (u64, u64) {
        (
            self.timeouts.load(Ordering::Relaxed),
            self.unreachable.load(Ordering::Relaxed),
        )
    }

    async fn start(&self) {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let mut conns = Vec::with_capacity(self.pool_size);
        for _ in 0..self.pool_size {
            // Lazy: each connects on first use and reconnects after any failure.
            match self.client.get_connection_manager_lazy(config.clone()) {
                Ok(c) => conns.push(c),
                Err(e) => {
                    tracing::error!(url = %self.redacted_url, error = %e, "session store: cannot set up a connection")
                }
            }
        }
        if !conns.is_empty() {
            self.conns.store(Some(std::sync::Arc::new(conns)));
        }
    }

    async fn maintain(&self, live: &[(PoolId, Vec<BackendId>)], _now: u64) {
        let mut keys = Vec::new();
        for (pool, backends) in live {
            let prefix = self.index_prefix(pool);
            for b in backends {
                keys.push(format!("{prefix}{}", b.as_str()));
            }
        }
        if keys.is_empty() {
            return;
        }
        let counted: Result<Vec<u64>, _> = self
            .call(|mut c| async move {
                let mut inv = self.count.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                inv.invoke_async(&mut c).await
            })
            .await;
        // Unreachable: keep the last known counts rather than report zero sessions.
        let Ok(counted) = counted else { return };
        let mut fresh: HashMap<PoolId, HashMap<BackendId, u64>> = HashMap::new();
        let mut n = counted.into_iter();
        for (pool, backends) in live {
            let per = fresh.entry(pool.clone()).or_default();
            for b in backends {
                per.insert(b.clone(), n.next().unwrap_or(0));
            }
        }
        *self.counts.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }
}
