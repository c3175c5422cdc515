//! The validated, immutable configuration. Everything downstream of limpet-config
//! reads only these types: no string here is parsed again later.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A whole validated configuration file.
/// A closed set of YAML spellings. Each enum that users write as a word has one
/// `ALL` and one `as_str`, which validation, `/status`, metric labels and messages all
/// use: a spelling lives in one place.
pub trait Spelled: Copy + PartialEq + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
}

macro_rules! spelled {
    ($t:ident { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $t {
            pub const ALL: &'static [$t] = &[$($t::$v),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($t::$v => $s),+
                }
            }
        }

        impl Spelled for $t {
            const ALL: &'static [$t] = $t::ALL;

            fn as_str(self) -> &'static str {
                $t::as_str(self)
            }
        }
    };
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: Server,
    pub listeners: Vec<Listener>,
    pub admin: Admin,
    pub cookie_keys: Vec<CookieKey>,
    pub session_store: SessionStore,
    pub routes: Vec<Route>,
    /// Pools by name, in name order.
    pub pools: BTreeMap<PoolId, Pool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub threads: usize,
    pub client_idle_timeout: Duration,
    /// The whole request head must arrive within this from its first byte, else 408.
    pub request_header_timeout: Duration,
    /// A request head larger than this is refused with 431 while it is read.
    pub max_request_header_bytes: usize,
    /// A backend's response head larger than this is refused with 502.
    pub max_response_header_bytes: usize,
    /// Client connections open at once, all listeners together.
    pub max_connections: u64,
    /// Streams one HTTP/2 client connection may have open at once (restart-only).
    pub h2_max_concurrent_streams: u32,
    pub upstream_connect_timeout: Duration,
    pub upstream_read_timeout: Duration,
    pub grace_period: Duration,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub log_format: LogFormat,
    pub debug_headers: bool,
    /// Written with limpet's process id at start, removed at stop (restart-only).
    pub pid_file: Option<PathBuf>,
    /// The access log's file (reopened on SIGUSR1); standard error when absent
    /// (restart-only).
    pub access_log_file: Option<PathBuf>,
    /// Whether the access log records query strings.
    pub access_log_query: bool,
    /// The log level when `LIMPET_LOG` is not set (reloadable).
    pub log_level: LogLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

spelled!(LogLevel { Error => "error", Warn => "warn", Info => "info", Debug => "debug" });

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

spelled!(LogFormat { Text => "text", Json => "json" });

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    /// TLS on this listener (certificates reload; TLS on or off is restart-only).
    pub tls: Option<ListenerTls>,
    /// Cleartext HTTP/2 with prior knowledge, beside HTTP/1.1 (restart-only).
    pub h2c: bool,
    /// Answer every request with a 308 to the same host and path over https.
    pub redirect_https: bool,
    /// Expect a PROXY protocol v1/v2 header from `server.trusted_proxies` (restart-only).
    pub proxy_protocol: bool,
    /// Client connections open at once on this listener, within the server's limit.
    pub max_connections: Option<u64>,
}

impl Listener {
    /// The part of a listener that only a restart changes: the socket and how it
    /// accepts connections.
    pub fn binding(&self) -> (SocketAddr, bool, bool, bool) {
        (self.address, self.tls.is_some(), self.h2c, self.proxy_protocol)
    }
}

/// A TLS listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Chosen by SNI from the names in each certificate; the first is the default for
    /// clients that send no name or an unknown one. Never empty.
    pub certificates: Vec<CertFiles>,
    pub min_version: TlsVersion,
    /// `Strict-Transport-Security: max-age=…` on responses, when set.
    pub hsts: Option<Duration>,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

spelled!(TlsVersion { V1_2 => "1.2", V1_3 => "1.3" });

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub address: SocketAddr,
}

/// Where a cookie signing secret comes from. Reading it is the caller's job
/// (this crate does no I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    Inline(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieKey {
    pub id: KeyId,
    pub source: SecretSource,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(s: &str) -> Self {
                Self(Arc::from(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A pool's name, as written under `pools:`.
    PoolId
);
id_type!(
    /// A backend's stable identity: cookies, tables, metrics and logs use it, never the address.
    BackendId
);
id_type!(
    /// A signing key's id, carried in every cookie so that rotation keeps old cookies valid.
    KeyId
);

/// Longest id accepted for pools, backends and keys: ids travel in cookies and labels.
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    /// Lower-case host without port.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches any host ending with it.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: HostMatch,
    pub path_prefix: String,
    pub pool: PoolId,
}

/// Where table-based sessions (`source_ip`, `header`) live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStore {
    /// Bound on live entries of the embedded store; the soonest-expiring go first.
    pub max_entries: usize,
    /// `kind: redis`: the shared store several limpet instances use.
    pub redis: Option<RedisStore>,
}

/// A Redis session store.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisStore {
    /// `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS) or `unix://path`;
    /// empty until loading reads it when it comes from the environment or a file.
    pub url: String,
    /// Where the URL comes from: inline (`redis_url`), `redis_url_env` or
    /// `redis_url_file`, so that a password need not sit in the YAML.
    pub url_source: SecretSource,
    /// Prepended to every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Multiplexed connections, used in turn.
    pub pool_size: usize,
    /// A slower answer counts as a miss (and an error), never as a client error.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    /// The URL may carry a password: it is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A Redis URL with any password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequests,
    Random,
    ConsistentHash,
}

spelled!(Balance {
    RoundRobin => "round_robin",
    LeastRequests => "least_requests",
    Random => "random",
    ConsistentHash => "consistent_hash",
});

/// What a pool's consistent hash is computed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client address (after `server.trusted_proxies`).
    ClientIp,
    /// A request header, by lower-case name.
    Header(String),
    /// A request cookie, by name.
    Cookie(String),
    /// A query-string parameter, by name.
    Query(String),
    /// The request path, without the query.
    Path,
}

/// `pool.hash`: the key and the load bound of consistent hashing.
#[derive(Debug, Clone, PartialEq)]
pub struct HashConfig {
    pub key: HashKey,
    /// Bounded loads: no backend above ⌈factor × average⌉ (≥ 1.0); `None` = unbounded.
    pub balance_factor: Option<f64>,
}

impl Default for HashConfig {
    fn default() -> Self {
        Self {
            key: HashKey::ClientIp,
            balance_factor: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBackendDown {
    /// Re-pin to a healthy backend with a new cookie.
    Redispatch,
    /// Answer 503 rather than move the user.
    Strict,
}

spelled!(OnBackendDown { Redispatch => "redispatch", Strict => "strict" });

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub id: PoolId,
    pub balance: Balance,
    pub hash: HashConfig,
    pub persistence: Vec<Persistence>,
    pub on_backend_down: OnBackendDown,
    /// Connect failures retried on other backends, per request.
    pub retries: u32,
    /// A backend that joins or recovers ramps its share of new sessions up over this.
    pub slow_start: Option<Duration>,
    pub health_check: Option<HealthCheck>,
    pub passive_health: Option<PassiveHealth>,
    pub rebalance: Option<Rebalance>,
    /// How limpet speaks to the backends.
    pub protocol: UpstreamProtocol,
    /// Encryption to the backends, when set.
    pub tls: Option<UpstreamTls>,
    pub backends: Vec<Backend>,
}

/// The HTTP version limpet speaks to a pool's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (WebSocket upgrades need it).
    H1,
    /// HTTP/2 over TLS (ALPN `h2`), for gRPC and multiplexing.
    H2,
    /// HTTP/2 in cleartext with prior knowledge, for gRPC without TLS.
    H2c,
}

spelled!(UpstreamProtocol { H1 => "h1", H2 => "h2", H2c => "h2c" });

/// TLS from limpet to a pool's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Verify the backend's certificate chain and name. Never silently off.
    pub verify: bool,
    /// CA bundle (PEM) to verify against instead of the system roots.
    pub ca: Option<PathBuf>,
    /// The name sent as SNI and verified in the certificate; required with `verify`.
    pub sni: Option<String>,
    /// Client certificate for mutual TLS, with its key.
    pub client: Option<CertFiles>,
}

/// Re-pinning of old sessions from over-loaded to under-loaded backends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rebalance {
    /// At most this share (0–1] of the pool's live sessions moves per minute.
    pub max_share_per_minute: f64,
    /// Only sessions at least this old move.
    pub min_age: Duration,
}

/// Active health checks of a pool's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// `http`: the path requested.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
    /// `http`: the statuses that pass, inclusive.
    pub expect_status: (u16, u16),
    /// `http`: the Host header; the backend's address when absent.
    pub host: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Http,
    Tcp,
}

spelled!(CheckKind { Http => "http", Tcp => "tcp" });

/// Passive health: failures seen in real traffic take a backend out for `cooldown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealth {
    pub max_fails: u32,
    pub window: Duration,
    pub cooldown: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Persistence {
    Cookie(CookiePersistence),
    SourceIp(SourceIpPersistence),
    Header(HeaderPersistence),
    /// Consistent hashing over `pool.hash`; always resolves while a backend is usable.
    Hash,
}

impl Persistence {
    /// The `method` label of this method's decisions.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Cookie(_) => "cookie",
            Self::SourceIp(_) => "source_ip",
            Self::Header(_) => "header",
            Self::Hash => "hash",
        }
    }
}

/// Client-IP affinity: a table entry per (masked) client address, static TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIpPersistence {
    pub ttl: Duration,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

/// Session-id table: an id sent by the client in a header maps to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPersistence {
    /// Lower-case header name.
    pub name: String,
    pub ttl: Duration,
    /// Optional per-request TTL in minutes, read when the session is created.
    pub ttl_header: Option<String>,
    pub max_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secure {
    /// On for TLS listeners.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

spelled!(SameSite { Strict => "strict", Lax => "lax", None => "none" });

/// Affinity cookie. Duration-based (`follow: None`): limpet issues it with a fixed,
/// absolute TTL. Application-controlled (`follow: Some(APP)`): limpet issues it when the
/// backend sets `APP`, with the same lifetime, and deletes it when the app deletes `APP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookiePersistence {
    pub name: String,
    pub follow: Option<String>,
    pub ttl: Duration,
    pub max_ttl: Duration,
    pub path: String,
    pub domain: Option<String>,
    pub secure: Secure,
    pub http_only: bool,
    pub same_site: SameSite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    Active,
    /// Keeps its existing sessions, gets no new ones.
    Draining,
    /// Gets nothing; its sessions are re-pinned.
    Disabled,
}

spelled!(BackendState {
    Active => "active",
    Draining => "draining",
    Disabled => "disabled",
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub id: BackendId,
    pub address: SocketAddr,
    /// 0 gives no new sessions (existing ones stay), like `draining`.
    pub weight: u32,
    pub state: BackendState,
}

/// Highest accepted backend weight.
pub const MAX_WEIGHT: u32 = 1000;
