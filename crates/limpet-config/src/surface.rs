//! The YAML surface: serde structs that mirror the file. Every leaf is `Lenient`, so one
//! wrong value never hides the others; unknown keys are captured (not dropped) so that
//! validation reports all of them with a suggestion.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_yaml::{Mapping, Value};

/// A value that failed to deserialise keeps its error message instead of aborting the file.
#[derive(Debug, Clone)]
pub enum Lenient<T> {
    Ok(T),
    Err(String),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(match serde_yaml::from_value::<T>(v) {
            Ok(t) => Lenient::Ok(t),
            Err(e) => Lenient::Err(e.to_string()),
        })
    }
}

type F<T> = Option<Lenient<T>>;

#[derive(Debug, Deserialize)]
pub struct File {
    pub server: F<Server>,
    pub listeners: F<Vec<Lenient<Listener>>>,
    pub admin: F<Admin>,
    pub cookie_keys: F<Vec<Lenient<CookieKey>>>,
    pub session_store: F<SessionStore>,
    pub routes: F<Vec<Lenient<Route>>>,
    pub pools: F<Mapping>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const FILE_KEYS: &[&str] = &[
    "server",
    "listeners",
    "admin",
    "cookie_keys",
    "session_store",
    "routes",
    "pools",
];

#[derive(Debug, Clone, Deserialize)]
pub struct SessionStore {
    pub kind: F<String>,
    pub redis_url: F<String>,
    pub redis_url_env: F<String>,
    pub redis_url_file: F<String>,
    pub key_prefix: F<String>,
    pub timeout: F<String>,
    pub pool_size: F<u64>,
    pub max_entries: F<u64>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const SESSION_STORE_KEYS: &[&str] = &[
    "kind",
    "redis_url",
    "redis_url_env",
    "redis_url_file",
    "key_prefix",
    "timeout",
    "pool_size",
    "max_entries",
];

#[derive(Debug, Clone, Deserialize)]
pub struct Hash {
    pub key: F<String>,
    pub balance_factor: F<f64>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const HASH_KEYS: &[&str] = &["key", "balance_factor"];

#[derive(Debug, Clone, Deserialize)]
pub struct SourceIp {
    pub ttl: F<String>,
    pub ipv4_prefix: F<u8>,
    pub ipv6_prefix: F<u8>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const SOURCE_IP_KEYS: &[&str] = &["ttl", "ipv4_prefix", "ipv6_prefix"];

#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub name: F<String>,
    pub ttl: F<String>,
    pub ttl_header: F<String>,
    pub max_ttl: F<String>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const HEADER_KEYS: &[&str] = &["name", "ttl", "ttl_header", "max_ttl"];

#[derive(Debug, Clone, Deserialize)]
pub struct Server {
    pub threads: F<u64>,
    pub client_idle_timeout: F<String>,
    pub request_header_timeout: F<String>,
    pub max_request_header_bytes: F<Value>,
    pub max_response_header_bytes: F<Value>,
    pub max_connections: F<u64>,
    pub h2_max_concurrent_streams: F<u64>,
    pub upstream_connect_timeout: F<String>,
    pub upstream_read_timeout: F<String>,
    pub grace_period: F<String>,
    pub trusted_proxies: F<Vec<Lenient<String>>>,
    pub log_format: F<String>,
    pub debug_headers: F<bool>,
    pub pid_file: F<String>,
    pub access_log_file: F<String>,
    pub access_log_query: F<bool>,
    pub log_level: F<String>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const SERVER_KEYS: &[&str] = &[
    "pid_file",
    "access_log_file",
    "access_log_query",
    "log_level",
    "threads",
    "client_idle_timeout",
    "request_header_timeout",
    "max_request_header_bytes",
    "max_response_header_bytes",
    "max_connections",
    "h2_max_concurrent_streams",
    "upstream_connect_timeout",
    "upstream_read_timeout",
    "grace_period",
    "trusted_proxies",
    "log_format",
    "debug_headers",
];

#[derive(Debug, Clone, Deserialize)]
pub struct Listener {
    pub address: F<String>,
    pub tls: F<ListenerTls>,
    pub h2c: F<bool>,
    pub redirect_https: F<bool>,
    pub proxy_protocol: F<bool>,
    pub max_connections: F<u64>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const LISTENER_KEYS: &[&str] = &[
    "address",
    "tls",
    "h2c",
    "redirect_https",
    "proxy_protocol",
    "max_connections",
];

#[derive(Debug, Clone, Deserialize)]
pub struct ListenerTls {
    pub cert: F<String>,
    pub key: F<String>,
    pub certificates: F<Vec<Lenient<CertPair>>>,
    pub min_version: F<String>,
    pub hsts: F<String>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const LISTENER_TLS_KEYS: &[&str] = &["cert", "key", "certificates", "min_version", "hsts"];

#[derive(Debug, Clone, Deserialize)]
pub struct CertPair {
    pub cert: F<String>,
    pub key: F<String>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const CERT_PAIR_KEYS: &[&str] = &["cert", "key"];

#[derive(Debug, Clone, Deserialize)]
pub struct Admin {
    pub address: F<String>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const ADMIN_KEYS: &[&str] = &["address"];

#[derive(Debug, Clone, Deserialize)]
pub struct CookieKey {
    pub id: F<String>,
    pub secret_env: F<String>,
    pub secret_file: F<String>,
    pub secret: F<String>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const COOKIE_KEY_KEYS: &[&str] = &["id", "secret_env", "secret_file", "secret"];

#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    pub host: F<String>,
    pub path_prefix: F<String>,
    pub pool: F<String>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const ROUTE_KEYS: &[&str] = &["host", "path_prefix", "pool"];

#[derive(Debug, Clone, Deserialize)]
pub struct Pool {
    pub balance: F<String>,
    pub hash: F<Hash>,
    pub persistence: F<Vec<Lenient<Persistence>>>,
    pub on_backend_down: F<String>,
    pub retries: F<u32>,
    pub slow_start: F<String>,
    pub rebalance: F<Rebalance>,
    pub health_check: F<HealthCheck>,
    pub passive_health: F<PassiveHealth>,
    pub protocol: F<String>,
    pub tls: F<UpstreamTls>,
    pub backends: F<Vec<Lenient<Backend>>>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamTls {
    pub verify: F<bool>,
    pub ca: F<String>,
    pub sni: F<String>,
    pub client_cert: F<String>,
    pub client_key: F<String>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const UPSTREAM_TLS_KEYS: &[&str] = &["verify", "ca", "sni", "client_cert", "client_key"];

pub const POOL_KEYS: &[&str] = &[
    "protocol",
    "tls",
    "balance",
    "hash",
    "persistence",
    "on_backend_down",
    "retries",
    "slow_start",
    "rebalance",
    "health_check",
    "passive_health",
    "backends",
];

#[derive(Debug, Clone, Deserialize)]
pub struct Persistence {
    pub cookie: F<Cookie>,
    pub source_ip: F<SourceIp>,
    pub header: F<Header>,
    pub hash: F<Mapping>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const PERSISTENCE_KEYS: &[&str] = &["cookie", "source_ip", "header", "hash"];

#[derive(Debug, Clone, Deserialize)]
pub struct Cookie {
    pub name: F<String>,
    pub ttl: F<String>,
    pub max_ttl: F<String>,
    pub follow: F<String>,
    pub path: F<String>,
    pub domain: F<String>,
    pub secure: F<Value>,
    pub http_only: F<bool>,
    pub same_site: F<String>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const COOKIE_KEYS: &[&str] = &[
    "name",
    "ttl",
    "max_ttl",
    "follow",
    "path",
    "domain",
    "secure",
    "http_only",
    "same_site",
];

#[derive(Debug, Clone, Deserialize)]
pub struct Backend {
    pub id: F<String>,
    pub address: F<String>,
    pub weight: F<u32>,
    pub state: F<String>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const BACKEND_KEYS: &[&str] = &["id", "address", "weight", "state"];

#[derive(Debug, Clone, Deserialize)]
pub struct HealthCheck {
    pub kind: F<String>,
    pub path: F<String>,
    pub interval: F<String>,
    pub timeout: F<String>,
    pub rise: F<u32>,
    pub fall: F<u32>,
    pub expect_status: F<Value>,
    pub host: F<Option<String>>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const HEALTH_CHECK_KEYS: &[&str] = &[
    "kind",
    "path",
    "interval",
    "timeout",
    "rise",
    "fall",
    "expect_status",
    "host",
];

#[derive(Debug, Clone, Deserialize)]
pub struct PassiveHealth {
    pub max_fails: F<u32>,
    pub window: F<String>,
    pub cooldown: F<String>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const PASSIVE_HEALTH_KEYS: &[&str] = &["max_fails", "window", "cooldown"];

#[derive(Debug, Clone, Deserialize)]
pub struct Rebalance {
    pub max_share_per_minute: F<Value>,
    pub min_age: F<String>,
    #[serde(flatten)]
    pub unknown: Mapping,
}

pub const REBALANCE_KEYS: &[&str] = &["max_share_per_minute", "min_age"];
