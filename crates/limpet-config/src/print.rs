//! The effective configuration as YAML (`limpet --check --print`): every key with the
//! value limpet runs with, defaults filled in, secrets redacted. Parsing the output
//! again gives the same configuration (secrets aside), which the tests check.

use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::model::*;

/// `config` as the YAML that would configure exactly it; inline secrets are `***`
/// and a Redis URL's password is hidden.
pub fn effective_yaml(config: &Config) -> String {
    let mut root = Map::default();
    root.put("server", server(&config.server));
    root.put(
        "listeners",
        Value::Sequence(config.listeners.iter().map(listener).collect()),
    );
    root.put(
        "admin",
        Map::default().with("address", s(config.admin.address)).into(),
    );
    root.put(
        "cookie_keys",
        Value::Sequence(config.cookie_keys.iter().map(cookie_key).collect()),
    );
    root.put("session_store", session_store(&config.session_store));
    root.put(
        "routes",
        Value::Sequence(config.routes.iter().map(route).collect()),
    );
    let mut pools = Map::default();
    for (id, p) in &config.pools {
        pools.put(id.as_str(), pool(p));
    }
    root.put("pools", pools.into());
    serde_yaml::to_string(&Value::Mapping(root.0)).unwrap_or_default()
}

#[derive(Default)]
struct Map(Mapping);

impl Map {
    fn put(&mut self, k: &str, v: Value) {
        self.0.insert(Value::String(k.into()), v);
    }
    fn with(mut self, k: &str, v: Value) -> Self {
        self.put(k, v);
        self
    }
    fn opt(self, k: &str, v: Option<Value>) -> Self {
        match v {
            Some(v) => self.with(k, v),
            None => self,
        }
    }
}

impl From<Map> for Value {
    fn from(m: Map) -> Value {
        Value::Mapping(m.0)
    }
}

fn s(v: impl ToString) -> Value {
    Value::String(v.to_string())
}

fn n(v: impl Into<u64>) -> Value {
    Value::Number(v.into().into())
}

/// A duration as operators write it: the largest unit that divides it.
fn d(v: Duration) -> Value {
    let ms = v.as_millis();
    let text = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")]
        .iter()
        .find(|(unit, _)| ms > 0 && ms.is_multiple_of(*unit))
        .map_or_else(
            || format!("{ms}ms"),
            |(unit, suffix)| format!("{}{suffix}", ms / unit),
        );
    Value::String(text)
}

fn server(v: &Server) -> Value {
    Map::default()
        .with("threads", n(v.threads as u64))
        .with("client_idle_timeout", d(v.client_idle_timeout))
        .with("request_header_timeout", d(v.request_header_timeout))
        .with("max_request_header_bytes", n(v.max_request_header_bytes as u64))
        .with("max_response_header_bytes", n(v.max_response_header_bytes as u64))
        .with("max_connections", n(v.max_connections))
        .with(
            "h2_max_concurrent_streams",
            n(u64::from(v.h2_max_concurrent_streams)),
        )
        .with("upstream_connect_timeout", d(v.upstream_connect_timeout))
        .with("upstream_read_timeout", d(v.upstream_read_timeout))
        .with("grace_period", d(v.grace_period))
        .with(
            "trusted_proxies",
            Value::Sequence(v.trusted_proxies.iter().map(s).collect()),
        )
        .with("log_format", s(v.log_format.as_str()))
        .with("log_level", s(v.log_level.as_str()))
        .with("debug_headers", Value::Bool(v.debug_headers))
        .opt("pid_file", v.pid_file.as_ref().map(|p| s(p.display())))
        .opt(
            "access_log_file",
            v.access_log_file.as_ref().map(|p| s(p.display())),
        )
        .with("access_log_query", Value::Bool(v.access_log_query))
        .into()
}

fn cert(c: &CertFiles) -> Value {
    Map::default()
        .with("cert", s(c.cert.display()))
        .with("key", s(c.key.display()))
        .into()
}

fn listener(l: &Listener) -> Value {
    let tls = l.tls.as_ref().map(|t| {
        Map::default()
            .with(
                "certificates",
                Value::Sequence(t.certificates.iter().map(cert).collect()),
            )
            .with("min_version", s(t.min_version.as_str()))
            .opt("hsts", t.hsts.map(d))
            .into()
    });
    Map::default()
        .with("address", s(l.address))
        .opt("tls", tls)
        .with("h2c", Value::Bool(l.h2c))
        .with("redirect_https", Value::Bool(l.redirect_https))
        .with("proxy_protocol", Value::Bool(l.proxy_protocol))
        .opt("max_connections", l.max_connections.map(n))
        .into()
}

fn cookie_key(k: &CookieKey) -> Value {
    let m = Map::default().with("id", s(k.id.as_str()));
    match &k.source {
        SecretSource::Env(var) => m.with("secret_env", s(var)),
        SecretSource::File(path) => m.with("secret_file", s(path.display())),
        SecretSource::Inline(_) => m.with("secret", s("***")),
    }
    .into()
}

fn session_store(v: &SessionStore) -> Value {
    let Some(r) = &v.redis else {
        return Map::default()
            .with("kind", s("memory"))
            .with("max_entries", n(v.max_entries as u64))
            .into();
    };
    let m = Map::default().with("kind", s("redis"));
    match &r.url_source {
        SecretSource::Env(var) => m.with("redis_url_env", s(var)),
        SecretSource::File(path) => m.with("redis_url_file", s(path.display())),
        SecretSource::Inline(url) => m.with("redis_url", s(redact_url(url))),
    }
    .with("key_prefix", s(&r.key_prefix))
    .with("pool_size", n(r.pool_size as u64))
    .with("timeout", d(r.timeout))
    .into()
}

fn route(r: &Route) -> Value {
    let host = match &r.host {
        HostMatch::Any => "*".to_string(),
        HostMatch::Exact(h) => h.clone(),
        HostMatch::Suffix(suffix) => format!("*{suffix}"),
    };
    Map::default()
        .with("host", s(host))
        .with("path_prefix", s(&r.path_prefix))
        .with("pool", s(r.pool.as_str()))
        .into()
}

fn hash_key(k: &HashKey) -> String {
    match k {
        HashKey::ClientIp => "client_ip".into(),
        HashKey::Path => "path".into(),
        HashKey::Header(h) => format!("header:{h}"),
        HashKey::Cookie(c) => format!("cookie:{c}"),
        HashKey::Query(q) => format!("query:{q}"),
    }
}

fn f(v: f64) -> Value {
    Value::Number(serde_yaml::Number::from(v))
}

fn persistence(p: &Persistence) -> Value {
    let (method, body): (&str, Value) = match p {
        Persistence::Cookie(c) => (
            "cookie",
            Map::default()
                .with("name", s(&c.name))
                .opt("follow", c.follow.as_ref().map(s))
                // A followed cookie takes its lifetime from the application's, and
                // validation refuses a ttl beside `follow` (the model's ttl is max_ttl).
                .opt("ttl", c.follow.is_none().then(|| d(c.ttl)))
                .with("max_ttl", d(c.max_ttl))
                .with("path", s(&c.path))
                .opt("domain", c.domain.as_ref().map(s))
                .with(
                    "secure",
                    match c.secure {
                        Secure::Auto => s("auto"),
                        Secure::Always => Value::Bool(true),
                        Secure::Never => Value::Bool(false),
                    },
                )
                .with("http_only", Value::Bool(c.http_only))
                .with("same_site", s(c.same_site.as_str()))
                .into(),
        ),
        Persistence::SourceIp(v) => (
            "source_ip",
            Map::default()
                .with("ttl", d(v.ttl))
                .with("ipv4_prefix", n(v.ipv4_prefix))
                .with("ipv6_prefix", n(v.ipv6_prefix))
                .into(),
        ),
        Persistence::Header(h) => (
            "header",
            Map::default()
                .with("name", s(&h.name))
                .with("ttl", d(h.ttl))
                .opt("ttl_header", h.ttl_header.as_ref().map(s))
                .with("max_ttl", d(h.max_ttl))
                .into(),
        ),
        Persistence::Hash => ("hash", Map::default().into()),
    };
    Map::default().with(method, body).into()
}

fn pool(p: &Pool) -> Value {
    let hash = Map::default()
        .with("key", s(hash_key(&p.hash.key)))
        .opt("balance_factor", p.hash.balance_factor.map(f));
    let tls = p.tls.as_ref().map(|t| {
        Map::default()
            .with("verify", Value::Bool(t.verify))
            .opt("ca", t.ca.as_ref().map(|c| s(c.display())))
            .opt("sni", t.sni.as_ref().map(s))
            .opt("client_cert", t.client.as_ref().map(|c| s(c.cert.display())))
            .opt("client_key", t.client.as_ref().map(|c| s(c.key.display())))
            .into()
    });
    let health = p.health_check.as_ref().map(|h| {
        let (lo, hi) = h.expect_status;
        Map::default()
            .with("kind", s(h.kind.as_str()))
            .with("path", s(&h.path))
            .with("interval", d(h.interval))
            .with("timeout", d(h.timeout))
            .with("rise", n(h.rise))
            .with("fall", n(h.fall))
            .with("expect_status", s(format!("{lo}-{hi}")))
            .opt("host", h.host.as_ref().map(s))
            .into()
    });
    let passive = p.passive_health.map(|h| {
        Map::default()
            .with("max_fails", n(h.max_fails))
            .with("window", d(h.window))
            .with("cooldown", d(h.cooldown))
            .into()
    });
    let rebalance = p.rebalance.map(|r| {
        Map::default()
            .with("max_share_per_minute", f(r.max_share_per_minute))
            .with("min_age", d(r.min_age))
            .into()
    });
    let backends = p.backends.iter().map(|b| {
        Map::default()
            .with("id", s(b.id.as_str()))
            .with("address", s(b.address))
            .with("weight", n(b.weight))
            .with("state", s(b.state.as_str()))
            .into()
    });
    Map::default()
        .with("protocol", s(p.protocol.as_str()))
        .opt("tls", tls)
        .with("balance", s(p.balance.as_str()))
        .with("hash", hash.into())
        .with(
            "persistence",
            Value::Sequence(p.persistence.iter().map(persistence).collect()),
        )
        .with("on_backend_down", s(p.on_backend_down.as_str()))
        .with("retries", n(p.retries))
        .opt("slow_start", p.slow_start.map(d))
        .opt("rebalance", rebalance)
        .opt("health_check", health)
        .opt("passive_health", passive)
        .with("backends", Value::Sequence(backends.collect()))
        .into()
}
