//! Surface → typed `Config`. Walks the whole file and records every error with its key
//! path; nothing is short-circuited, so one run of `--check` shows everything to fix.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::duration::parse_duration;
use crate::error::{did_you_mean, ConfigError, Errors};
use crate::model::*;
use crate::surface::{self as s, Lenient};

pub(crate) fn validate(file: s::File, errs: &mut Errors) -> Option<Config> {
    unknown_keys("", &file.unknown, s::FILE_KEYS, errs);
    let session_store = session_store(file.session_store, errs);
    let server = server(file.server, errs);
    let listeners = listeners(file.listeners, errs);
    let admin = admin(file.admin, errs);
    let cookie_keys = cookie_keys(file.cookie_keys, errs);
    let pools = pools(file.pools, errs);
    let routes = routes(file.routes, &pools, errs);

    let uses_cookies = pools
        .values()
        .any(|p| p.persistence.iter().any(|m| matches!(m, Persistence::Cookie(_))));
    if uses_cookies && cookie_keys.is_empty() {
        errs.at(
            "cookie_keys",
            "cookie persistence is configured but no signing key is listed",
        )
        .hint = Some("add cookie_keys: [{ id: k1, secret_env: LIMPET_COOKIE_KEY }]".into());
    }
    if let (Some(listeners), Some(admin)) = (&listeners, &admin) {
        if listeners.iter().any(|l| l.address == admin.address) {
            errs.at("admin.address", "is also used by a listener").hint =
                Some("give the admin endpoint its own port".into());
        }
    }

    Some(Config {
        server: server?,
        listeners: listeners?,
        admin: admin?,
        cookie_keys,
        session_store,
        routes,
        pools,
    })
}

// ---------------------------------------------------------------- helpers

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn unknown_keys(path: &str, extra: &Mapping, known: &[&str], errs: &mut Errors) {
    for key in extra.keys() {
        let name = match key {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        let e = errs.at(&join(path, &name), "unknown key");
        e.hint = Some(match did_you_mean(&name, known) {
            Some(k) => format!("did you mean `{k}`?"),
            None => format!("known keys here: {}", known.join(", ")),
        });
    }
}

/// Unwraps a lenient field, recording its deserialisation error.
fn take<T>(path: &str, field: Option<Lenient<T>>, errs: &mut Errors) -> Option<T> {
    match field? {
        Lenient::Ok(v) => Some(v),
        Lenient::Err(msg) => {
            errs.at(path, clean_serde_message(&msg));
            None
        }
    }
}

/// serde_yaml messages name Rust types; say it in the words of the file instead.
fn clean_serde_message(msg: &str) -> String {
    msg.replace("u32", "a whole number")
        .replace("u64", "a whole number")
        .replace("a boolean", "true or false")
        .replace("struct ", "a mapping for ")
        .replace("a sequence", "a list")
}

fn duration(path: &str, field: Option<Lenient<String>>, default: Duration, errs: &mut Errors) -> Duration {
    match take(path, field, errs) {
        None => default,
        Some(text) => match parse_duration(&text) {
            Ok(d) => d,
            Err(msg) => {
                errs.at(path, msg).hint = Some("write a number and a unit: 500ms, 30s, 15m, 4h".into());
                default
            }
        },
    }
}

/// Matches user text against an enum's spellings; lists them all when nothing matches.
/// A number within `lo..=hi`; absent: `default`; outside: an error, and `default`.
fn number_in<T>(path: &str, field: Option<Lenient<T>>, default: T, (lo, hi): (T, T), errs: &mut Errors) -> T
where
    T: Copy + PartialOrd + std::fmt::Display,
{
    match take(path, field, errs) {
        None => default,
        Some(n) if n >= lo && n <= hi => n,
        Some(n) => {
            errs.at(path, format!("{n} is out of range")).hint = Some(format!("use {lo} to {hi}"));
            default
        }
    }
}

/// A duration within `lo..=hi`; absent: `default`; outside: an error with `hint` (or
/// the range).
fn duration_in(
    path: &str,
    field: Option<Lenient<String>>,
    default: Duration,
    (lo, hi): (Duration, Duration),
    hint: Option<&str>,
    errs: &mut Errors,
) -> Duration {
    let d = duration(path, field, default, errs);
    if d < lo || d > hi {
        errs.at(path, format!("{} is out of range", human(d))).hint =
            Some(hint.map_or_else(|| format!("use {} to {}", human(lo), human(hi)), str::to_string));
    }
    d
}

fn choice<T: Copy>(
    path: &str,
    field: Option<Lenient<String>>,
    options: &[(&str, T)],
    default: T,
    errs: &mut Errors,
) -> T {
    let Some(text) = take(path, field, errs) else {
        return default;
    };
    if let Some((_, v)) = options.iter().find(|(name, _)| *name == text) {
        return *v;
    }
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let e = errs.at(path, format!("`{text}` is not one of {}", names.join(", ")));
    if let Some(k) = did_you_mean(&text, &names) {
        e.hint = Some(format!("did you mean `{k}`?"));
    }
    default
}

fn socket_addr(path: &str, text: &str, errs: &mut Errors) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.at(path, format!("`{text}` is not an IP address with a port"))
                .hint = Some("write IP:PORT, e.g. 127.0.0.1:8081 or [::1]:8081".into());
            None
        }
    }
}

fn id(path: &str, text: Option<String>, what: &str, errs: &mut Errors) -> Option<String> {
    let Some(text) = text else {
        errs.at(path, format!("{what} needs an id")).hint = Some("add id: NAME".into());
        return None;
    };
    if !valid_id(&text) {
        errs.at(path, format!("`{text}` is not a valid id")).hint =
            Some(format!("use 1 to {MAX_ID_LEN} letters, digits, `.`, `_` or `-`"));
        return None;
    }
    Some(text)
}

pub(crate) fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn list<T>(
    path: &str,
    field: Option<Lenient<Vec<Lenient<T>>>>,
    errs: &mut Errors,
) -> Option<Vec<(String, T)>> {
    let items = take(path, field, errs)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let p = format!("{path}[{i}]");
        if let Some(v) = take(&p, Some(item), errs) {
            out.push((p, v));
        }
    }
    Some(out)
}

// ---------------------------------------------------------------- sections

fn server(field: Option<Lenient<s::Server>>, errs: &mut Errors) -> Option<Server> {
    let given = take("server", field, errs);
    let s::Server {
        threads,
        client_idle_timeout,
        upstream_connect_timeout,
        upstream_read_timeout,
        grace_period,
        trusted_proxies,
        log_format,
        debug_headers,
        unknown,
    } = match given {
        Some(s) => s,
        None => serde_yaml::from_value(Value::Mapping(Mapping::new())).ok()?,
    };
    unknown_keys("server", &unknown, s::SERVER_KEYS, errs);
    let threads = number_in("server.threads", threads, 2, (1, 1024), errs) as usize;
    let mut proxies = Vec::new();
    for (p, text) in list("server.trusted_proxies", trusted_proxies, errs).unwrap_or_default() {
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => proxies.push(net.trunc()),
            Err(_) => {
                errs.at(&p, format!("`{text}` is not a CIDR")).hint =
                    Some("write e.g. 10.0.0.0/8 or 192.0.2.7".into());
            }
        }
    }
    let client_idle_timeout = duration(
        "server.client_idle_timeout",
        client_idle_timeout,
        Duration::from_secs(30),
        errs,
    );
    if client_idle_timeout < Duration::from_secs(1) {
        errs.at("server.client_idle_timeout", "must be at least 1s").hint = Some("write e.g. 30s".into());
    }
    let upstream_connect_timeout = duration(
        "server.upstream_connect_timeout",
        upstream_connect_timeout,
        Duration::from_secs(2),
        errs,
    );
    let upstream_read_timeout = duration(
        "server.upstream_read_timeout",
        upstream_read_timeout,
        Duration::from_secs(60),
        errs,
    );
    for (p, d) in [
        ("server.upstream_connect_timeout", upstream_connect_timeout),
        ("server.upstream_read_timeout", upstream_read_timeout),
    ] {
        if d.is_zero() {
            errs.at(p, "must be above zero").hint = Some("write e.g. 2s".into());
        }
    }
    Some(Server {
        threads,
        client_idle_timeout,
        upstream_connect_timeout,
        upstream_read_timeout,
        grace_period: duration("server.grace_period", grace_period, Duration::from_secs(10), errs),
        trusted_proxies: proxies,
        log_format: choice(
            "server.log_format",
            log_format,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
            errs,
        ),
        debug_headers: take("server.debug_headers", debug_headers, errs).unwrap_or(false),
    })
}

fn listeners(field: Option<Lenient<Vec<Lenient<s::Listener>>>>, errs: &mut Errors) -> Option<Vec<Listener>> {
    let Some(items) = list("listeners", field, errs) else {
        return Some(vec![Listener {
            address: SocketAddr::from(([0, 0, 0, 0], 8080)),
        }]);
    };
    if items.is_empty() {
        errs.at("listeners", "is empty").hint = Some("add - address: 0.0.0.0:8080".into());
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (
        p,
        s::Listener {
            address,
            tls,
            unknown,
        },
    ) in items
    {
        unknown_keys(&p, &unknown, s::LISTENER_KEYS, errs);
        if tls.is_some() {
            errs.at(
                &join(&p, "tls"),
                "TLS listeners are not supported yet by this version of limpet",
            )
            .hint = Some("terminate TLS in front of limpet for now".into());
        }
        let ap = join(&p, "address");
        let Some(text) = take(&ap, address, errs) else {
            errs.at(&ap, "is required").hint = Some("write address: 0.0.0.0:8080".into());
            continue;
        };
        if let Some(a) = socket_addr(&ap, &text, errs) {
            if !seen.insert(a) {
                errs.at(&ap, format!("{a} is listed twice"));
            }
            out.push(Listener { address: a });
        }
    }
    Some(out)
}

fn admin(field: Option<Lenient<s::Admin>>, errs: &mut Errors) -> Option<Admin> {
    let default = SocketAddr::from(([127, 0, 0, 1], 9090));
    let Some(s::Admin { address, unknown }) = take("admin", field, errs) else {
        return Some(Admin { address: default });
    };
    unknown_keys("admin", &unknown, s::ADMIN_KEYS, errs);
    let address = match take("admin.address", address, errs) {
        Some(text) => socket_addr("admin.address", &text, errs)?,
        None => default,
    };
    Some(Admin { address })
}

fn cookie_keys(field: Option<Lenient<Vec<Lenient<s::CookieKey>>>>, errs: &mut Errors) -> Vec<CookieKey> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (
        p,
        s::CookieKey {
            id: key_id,
            secret_env,
            secret_file,
            secret,
            unknown,
        },
    ) in list("cookie_keys", field, errs).unwrap_or_default()
    {
        unknown_keys(&p, &unknown, s::COOKIE_KEY_KEYS, errs);
        let key_id = id(
            &join(&p, "id"),
            take(&join(&p, "id"), key_id, errs),
            "a key",
            errs,
        );
        let sources = [
            take(&join(&p, "secret_env"), secret_env, errs).map(SecretSource::Env),
            take(&join(&p, "secret_file"), secret_file, errs).map(|f| SecretSource::File(PathBuf::from(f))),
            take(&join(&p, "secret"), secret, errs).map(SecretSource::Inline),
        ];
        let mut given: Vec<SecretSource> = sources.into_iter().flatten().collect();
        if given.len() != 1 {
            errs.at(&p, "needs exactly one of secret_env, secret_file, secret")
                .hint = Some("prefer secret_env: LIMPET_COOKIE_KEY or secret_file: /etc/limpet/key".into());
            continue;
        }
        let Some(key_id) = key_id else { continue };
        if !seen.insert(key_id.clone()) {
            errs.at(&join(&p, "id"), format!("key id `{key_id}` is listed twice"));
            continue;
        }
        if let Some(source) = given.pop() {
            out.push(CookieKey {
                id: KeyId::new(&key_id),
                source,
            });
        }
    }
    out
}

fn session_store(field: Option<Lenient<s::SessionStore>>, errs: &mut Errors) -> SessionStore {
    let default = SessionStore {
        max_entries: DEFAULT_MAX_ENTRIES,
        redis: None,
    };
    let Some(s::SessionStore {
        kind,
        redis_url,
        key_prefix,
        timeout,
        pool_size,
        max_entries,
        unknown,
    }) = take("session_store", field, errs)
    else {
        return default;
    };
    unknown_keys("session_store", &unknown, s::SESSION_STORE_KEYS, errs);
    let only_for = |errs: &mut Errors, key: &str, kind: &str| {
        errs.at(
            &join("session_store", key),
            format!("only applies to kind: {kind}"),
        )
        .hint = Some(format!("remove it, or set kind: {kind}"));
    };
    let mut redis = None;
    match take("session_store.kind", kind, errs).as_deref() {
        None | Some("memory") => {
            for (key, given) in [
                ("redis_url", redis_url.is_some()),
                ("key_prefix", key_prefix.is_some()),
                ("timeout", timeout.is_some()),
                ("pool_size", pool_size.is_some()),
            ] {
                if given {
                    only_for(errs, key, "redis");
                }
            }
        }
        Some("redis") => {
            if max_entries.is_some() {
                only_for(errs, "max_entries", "memory");
            }
            redis = redis_store(redis_url, key_prefix, timeout, pool_size, errs);
        }
        Some(other) => {
            let e = errs.at(
                "session_store.kind",
                format!("`{other}` is not one of memory, redis"),
            );
            if let Some(k) = did_you_mean(other, &["memory", "redis"]) {
                e.hint = Some(format!("did you mean `{k}`?"));
            }
        }
    }
    let max_entries = number_in(
        "session_store.max_entries",
        max_entries,
        DEFAULT_MAX_ENTRIES as u64,
        (1, 1_000_000_000),
        errs,
    ) as usize;
    SessionStore { max_entries, redis }
}

fn redis_store(
    url: Option<Lenient<String>>,
    key_prefix: Option<Lenient<String>>,
    timeout: Option<Lenient<String>>,
    pool_size: Option<Lenient<u64>>,
    errs: &mut Errors,
) -> Option<RedisStore> {
    let up = "session_store.redis_url";
    let url = match take(up, url, errs) {
        None => {
            errs.at(up, "kind: redis needs redis_url").hint =
                Some("write e.g. redis://127.0.0.1:6379/0".into());
            None
        }
        Some(u) => {
            let rest = ["redis://", "rediss://", "unix://", "redis+unix://"]
                .iter()
                .find_map(|scheme| u.strip_prefix(scheme));
            match rest {
                Some(r) if !r.is_empty() && !r.contains(char::is_whitespace) => Some(u),
                _ => {
                    errs.at(up, format!("`{}` is not a Redis URL", redact_url(&u)))
                        .hint = Some(
                        "write redis://[user:password@]host[:port][/db], rediss://… for TLS, or unix:///path"
                            .into(),
                    );
                    None
                }
            }
        }
    };
    let kp = "session_store.key_prefix";
    let key_prefix = take(kp, key_prefix, errs).unwrap_or_else(|| "limpet:".into());
    if key_prefix.len() > 64 || key_prefix.contains(|c: char| c.is_whitespace() || c.is_control()) {
        errs.at(kp, "must be at most 64 characters, without spaces").hint =
            Some("write e.g. \"limpet:prod:\"".into());
    }
    let timeout = duration_in(
        "session_store.timeout",
        timeout,
        Duration::from_millis(50),
        (Duration::from_millis(1), Duration::from_secs(10)),
        Some("use 1ms to 10s; requests wait this long at most for Redis"),
        errs,
    );
    let pool_size = number_in("session_store.pool_size", pool_size, 4, (1, 64), errs) as usize;
    Some(RedisStore {
        url: url?,
        key_prefix,
        pool_size,
        timeout,
    })
}

fn health_check_config(p: &str, h: s::HealthCheck, errs: &mut Errors) -> HealthCheck {
    let s::HealthCheck {
        kind,
        path,
        interval,
        timeout,
        rise,
        fall,
        expect_status,
        host,
        unknown,
    } = h;
    unknown_keys(p, &unknown, s::HEALTH_CHECK_KEYS, errs);
    let kind = choice(
        &join(p, "kind"),
        kind,
        &[("http", CheckKind::Http), ("tcp", CheckKind::Tcp)],
        CheckKind::Http,
        errs,
    );
    let pp = join(p, "path");
    let path = take(&pp, path, errs).unwrap_or_else(|| "/healthz".into());
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        errs.at(&pp, format!("`{path}` is not a request path")).hint = Some("write e.g. /healthz".into());
    }
    let interval = duration_in(
        &join(p, "interval"),
        interval,
        Duration::from_secs(2),
        (Duration::from_millis(100), Duration::from_secs(3600)),
        None,
        errs,
    );
    let timeout = duration_in(
        &join(p, "timeout"),
        timeout,
        Duration::from_secs(1).min(interval),
        // A check may outlast its interval: the next starts `interval` after it
        // ends, so checks never overlap (as with Envoy and HAProxy).
        (Duration::from_millis(10), Duration::from_secs(300)),
        Some("use 10ms up to 5m"),
        errs,
    );
    let rise = number_in(&join(p, "rise"), rise, 2, (1, 100), errs);
    let fall = number_in(&join(p, "fall"), fall, 3, (1, 100), errs);
    let ep = join(p, "expect_status");
    let expect_status = match take(&ep, expect_status, errs) {
        None => (200, 399),
        Some(v) => status_range(&v).unwrap_or_else(|| {
            errs.at(&ep, "is not a status or a range of statuses").hint =
                Some("write e.g. 200 or 200-399".into());
            (200, 399)
        }),
    };
    let hp = join(p, "host");
    let host = take(&hp, host, errs).flatten();
    if let Some(h) = &host {
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            errs.at(&hp, format!("`{h}` is not a host")).hint =
                Some("write e.g. app.internal, or null".into());
        }
    }
    HealthCheck {
        kind,
        path,
        interval,
        timeout,
        rise,
        fall,
        expect_status,
        host,
    }
}

/// `200` or `"200-399"`: an inclusive range of statuses from 100 to 599.
fn status_range(v: &Value) -> Option<(u16, u16)> {
    let (lo, hi) = match v {
        Value::Number(n) => {
            let n = u16::try_from(n.as_u64()?).ok()?;
            (n, n)
        }
        Value::String(s) => match s.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let n = s.trim().parse().ok()?;
                (n, n)
            }
        },
        _ => return None,
    };
    ((100..=599).contains(&lo) && (lo..=599).contains(&hi)).then_some((lo, hi))
}

fn rebalance_config(p: &str, r: s::Rebalance, errs: &mut Errors) -> Rebalance {
    let s::Rebalance {
        max_share_per_minute,
        min_age,
        unknown,
    } = r;
    unknown_keys(p, &unknown, s::REBALANCE_KEYS, errs);
    let sp = join(p, "max_share_per_minute");
    let share = match take(&sp, max_share_per_minute, errs) {
        None => {
            errs.at(&sp, "is required").hint = Some("write e.g. 5%".into());
            0.05
        }
        Some(v) => {
            let parsed = match &v {
                Value::String(t) => t
                    .trim()
                    .strip_suffix('%')
                    .and_then(|n| n.trim().parse::<f64>().ok())
                    .map(|n| n / 100.0),
                Value::Number(n) => n.as_f64(),
                _ => None,
            };
            match parsed {
                Some(f) if f > 0.0 && f <= 1.0 => f,
                _ => {
                    errs.at(&sp, "is not a share above 0% and up to 100%").hint =
                        Some("write e.g. 5% (or 0.05)".into());
                    0.05
                }
            }
        }
    };
    let min_age = duration_in(
        &join(p, "min_age"),
        min_age,
        Duration::from_secs(300),
        (Duration::ZERO, Duration::from_secs(24 * 3600)),
        None,
        errs,
    );
    Rebalance {
        max_share_per_minute: share,
        min_age,
    }
}

fn passive_health_config(p: &str, h: s::PassiveHealth, errs: &mut Errors) -> PassiveHealth {
    let s::PassiveHealth {
        max_fails,
        window,
        cooldown,
        unknown,
    } = h;
    unknown_keys(p, &unknown, s::PASSIVE_HEALTH_KEYS, errs);
    let max_fails = number_in(&join(p, "max_fails"), max_fails, 3, (1, 1000), errs);
    let range = |key: &str, v: Option<Lenient<String>>, errs: &mut Errors| {
        let bounds = (Duration::from_millis(100), Duration::from_secs(3600));
        duration_in(&join(p, key), v, Duration::from_secs(10), bounds, None, errs)
    };
    let window = range("window", window, errs);
    let cooldown = range("cooldown", cooldown, errs);
    PassiveHealth {
        max_fails,
        window,
        cooldown,
    }
}

fn hash_config(p: &str, field: Option<Lenient<s::Hash>>, errs: &mut Errors) -> HashConfig {
    let Some(s::Hash {
        key,
        balance_factor,
        unknown,
    }) = take(p, field, errs)
    else {
        return HashConfig::default();
    };
    unknown_keys(p, &unknown, s::HASH_KEYS, errs);
    let kp = join(p, "key");
    let key = match take(&kp, key, errs) {
        None => HashKey::ClientIp,
        Some(text) => hash_key(&kp, &text, errs).unwrap_or(HashKey::ClientIp),
    };
    let fp = join(p, "balance_factor");
    let balance_factor = match take(&fp, balance_factor, errs) {
        None => None,
        Some(f) if (1.0..=100.0).contains(&f) => Some(f),
        Some(f) => {
            errs.at(&fp, format!("{f} is out of range")).hint =
                Some("use 1.0 (perfectly even) or more, e.g. 1.25; leave it out for no bound".into());
            None
        }
    };
    HashConfig { key, balance_factor }
}

fn hash_key(p: &str, text: &str, errs: &mut Errors) -> Option<HashKey> {
    let named = |prefix: &str| text.strip_prefix(prefix).map(str::to_string);
    let key = match text {
        "client_ip" => Some(HashKey::ClientIp),
        "path" => Some(HashKey::Path),
        _ => {
            if let Some(n) = named("header:") {
                token(&n).then(|| HashKey::Header(n.to_ascii_lowercase()))
            } else if let Some(n) = named("cookie:") {
                token(&n).then_some(HashKey::Cookie(n))
            } else if let Some(n) = named("query:") {
                (!n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b'&' && b != b'='))
                    .then_some(HashKey::Query(n))
            } else {
                None
            }
        }
    };
    if key.is_none() {
        errs.at(p, format!("`{text}` is not a hash key")).hint =
            Some("write client_ip, path, header:NAME, cookie:NAME or query:NAME".into());
    }
    key
}

fn token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

fn source_ip_method(p: &str, v: s::SourceIp, errs: &mut Errors) -> SourceIpPersistence {
    let s::SourceIp {
        ttl,
        ipv4_prefix,
        ipv6_prefix,
        unknown,
    } = v;
    unknown_keys(p, &unknown, s::SOURCE_IP_KEYS, errs);
    let ttl_p = join(p, "ttl");
    let ttl = duration(&ttl_p, ttl, Duration::from_secs(15 * 60), errs);
    if ttl < Duration::from_secs(1) {
        errs.at(&ttl_p, "must be at least 1s").hint = Some("write e.g. 15m".into());
    }
    let mut prefix =
        |key: &str, field, max: u8, default: u8| number_in(&join(p, key), field, default, (1, max), errs);
    let ipv4_prefix = prefix("ipv4_prefix", ipv4_prefix, 32, 32);
    let ipv6_prefix = prefix("ipv6_prefix", ipv6_prefix, 128, 64);
    SourceIpPersistence {
        ttl,
        ipv4_prefix,
        ipv6_prefix,
    }
}

fn header_method(p: &str, v: s::Header, errs: &mut Errors) -> Option<HeaderPersistence> {
    let s::Header {
        name,
        ttl,
        ttl_header,
        max_ttl,
        unknown,
    } = v;
    unknown_keys(p, &unknown, s::HEADER_KEYS, errs);
    let header_name = |key: &str, field, errs: &mut Errors| -> Option<String> {
        let np = join(p, key);
        let n: String = take(&np, field, errs)?;
        if !token(&n) {
            errs.at(&np, format!("`{n}` is not a header name")).hint =
                Some("use letters, digits and -, e.g. X-Session-Id".into());
            return None;
        }
        Some(n.to_ascii_lowercase())
    };
    let np = join(p, "name");
    let Some(name) = header_name("name", name, errs) else {
        if !errs.list.iter().any(|e| e.path == np) {
            errs.at(&np, "is required").hint = Some("write name: X-Session-Id".into());
        }
        return None;
    };
    let ttl_header = header_name("ttl_header", ttl_header, errs);
    let ttl_p = join(p, "ttl");
    let ttl = duration(&ttl_p, ttl, Duration::from_secs(15 * 60), errs);
    let max_ttl = duration(&join(p, "max_ttl"), max_ttl, Duration::from_secs(4 * 3600), errs);
    ttl_bounds(&ttl_p, ttl, max_ttl, errs);
    Some(HeaderPersistence {
        name,
        ttl,
        ttl_header,
        max_ttl,
    })
}

fn ttl_bounds(ttl_p: &str, ttl: Duration, max_ttl: Duration, errs: &mut Errors) {
    if ttl < Duration::from_secs(1) {
        errs.at(ttl_p, "must be at least 1s").hint = Some("write e.g. 15m".into());
    }
    if ttl > max_ttl {
        errs.at(
            ttl_p,
            format!("{} is above max_ttl {}", human(ttl), human(max_ttl)),
        )
        .hint = Some("lower ttl or raise max_ttl".into());
    }
}

fn routes(
    field: Option<Lenient<Vec<Lenient<s::Route>>>>,
    pools: &BTreeMap<PoolId, Pool>,
    errs: &mut Errors,
) -> Vec<Route> {
    let Some(items) = list("routes", field, errs) else {
        errs.at(
            "routes",
            "is required: without routes every request would get 404",
        )
        .hint = Some("add routes: [{ host: \"*\", path_prefix: /, pool: NAME }]".into());
        return Vec::new();
    };
    let names: Vec<&str> = pools.keys().map(|p| p.as_str()).collect();
    let mut out = Vec::new();
    for (
        p,
        s::Route {
            host,
            path_prefix,
            pool,
            unknown,
        },
    ) in items
    {
        unknown_keys(&p, &unknown, s::ROUTE_KEYS, errs);
        let hp = join(&p, "host");
        let host = match take(&hp, host, errs).as_deref() {
            None | Some("*") => Some(HostMatch::Any),
            Some(h) => {
                let h = h.to_ascii_lowercase();
                let (suffix, name) = match h.strip_prefix("*.") {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, h.clone()),
                };
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
                {
                    errs.at(&hp, format!("`{h}` is not a host name")).hint =
                        Some("write an exact host, \"*.example.com\" or \"*\"".into());
                    None
                } else if suffix {
                    Some(HostMatch::Suffix(format!(".{name}")))
                } else {
                    Some(HostMatch::Exact(name))
                }
            }
        };
        let pp = join(&p, "path_prefix");
        let path_prefix = take(&pp, path_prefix, errs).unwrap_or_else(|| "/".into());
        if !path_prefix.starts_with('/') {
            errs.at(&pp, format!("`{path_prefix}` does not start with /"))
                .hint = Some(format!("write /{path_prefix}"));
        }
        let pl = join(&p, "pool");
        let pool = match take(&pl, pool, errs) {
            None => {
                errs.at(&pl, "is required").hint = Some(format!("name one of: {}", names.join(", ")));
                None
            }
            Some(name) if pools.contains_key(&PoolId::new(&name)) => Some(PoolId::new(&name)),
            Some(name) => {
                let e = errs.at(&pl, format!("unknown pool `{name}`"));
                e.hint = Some(match did_you_mean(&name, &names) {
                    Some(k) => format!("did you mean `{k}`?"),
                    None => format!("pools defined: {}", names.join(", ")),
                });
                None
            }
        };
        if let (Some(host), Some(pool)) = (host, pool) {
            out.push(Route {
                host,
                path_prefix,
                pool,
            });
        }
    }
    out
}

fn pools(field: Option<Lenient<Mapping>>, errs: &mut Errors) -> BTreeMap<PoolId, Pool> {
    let mut out = BTreeMap::new();
    let Some(map) = take("pools", field, errs) else {
        errs.at("pools", "is required").hint = Some("add pools: { web: { backends: [...] } }".into());
        return out;
    };
    if map.is_empty() {
        errs.at("pools", "is empty").hint = Some("define at least one pool with backends".into());
    }
    for (name, value) in map {
        let Value::String(name) = name else {
            errs.at("pools", "pool names must be strings");
            continue;
        };
        let p = join("pools", &name);
        let Some(name) = id(&p, Some(name.clone()), "a pool", errs) else {
            continue;
        };
        let parsed: Lenient<s::Pool> = match serde_yaml::from_value(value) {
            Ok(v) => v,
            Err(e) => Lenient::Err(e.to_string()),
        };
        if let Some(pool) = take(&p, Some(parsed), errs).and_then(|s| pool(&p, &name, s, errs)) {
            out.insert(pool.id.clone(), pool);
        }
    }
    out
}

fn pool(p: &str, name: &str, surface: s::Pool, errs: &mut Errors) -> Option<Pool> {
    let s::Pool {
        balance,
        hash,
        persistence,
        on_backend_down,
        retries,
        slow_start,
        rebalance,
        health_check,
        passive_health,
        backends,
        unknown,
    } = surface;
    unknown_keys(p, &unknown, s::POOL_KEYS, errs);
    let hash = hash_config(&join(p, "hash"), hash, errs);
    let rebalance = take(&join(p, "rebalance"), rebalance, errs)
        .map(|r| rebalance_config(&join(p, "rebalance"), r, errs));
    let ssp = join(p, "slow_start");
    let slow_start = take(&ssp, slow_start, errs).and_then(|text| match parse_duration(&text) {
        Ok(d) if d.is_zero() => None,
        Ok(d) if d <= Duration::from_secs(3600) => Some(d),
        Ok(d) => {
            errs.at(&ssp, format!("{} is out of range", human(d))).hint = Some("use 0s (off) to 1h".into());
            None
        }
        Err(msg) => {
            errs.at(&ssp, msg).hint = Some("write a duration, e.g. 30s".into());
            None
        }
    });
    let health_check = take(&join(p, "health_check"), health_check, errs)
        .map(|h| health_check_config(&join(p, "health_check"), h, errs));
    let passive_health = take(&join(p, "passive_health"), passive_health, errs)
        .map(|h| passive_health_config(&join(p, "passive_health"), h, errs));
    let balance = choice(
        &join(p, "balance"),
        balance,
        &[
            ("round_robin", Balance::RoundRobin),
            ("least_requests", Balance::LeastRequests),
            ("random", Balance::Random),
            ("consistent_hash", Balance::ConsistentHash),
        ],
        Balance::RoundRobin,
        errs,
    );
    let on_backend_down = choice(
        &join(p, "on_backend_down"),
        on_backend_down,
        &[
            ("redispatch", OnBackendDown::Redispatch),
            ("strict", OnBackendDown::Strict),
        ],
        OnBackendDown::Redispatch,
        errs,
    );
    let retries = number_in(&join(p, "retries"), retries, 2, (0, 16), errs);
    let mut methods = Vec::new();
    let mut cookie_names = HashSet::new();
    for (
        mp,
        s::Persistence {
            cookie,
            source_ip,
            header,
            hash,
            unknown,
        },
    ) in list(&join(p, "persistence"), persistence, errs).unwrap_or_default()
    {
        unknown_keys(&mp, &unknown, s::PERSISTENCE_KEYS, errs);
        let given = [
            cookie.is_some(),
            source_ip.is_some(),
            header.is_some(),
            hash.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            errs.at(&mp, "each persistence entry names exactly one method")
                .hint =
                Some("write - cookie: {...} (or source_ip, header, hash) as separate list items".into());
            continue;
        }
        let cp = join(&mp, "cookie");
        if let Some(c) = take(&cp, cookie, errs).and_then(|c| cookie_method(&cp, c, errs)) {
            if !cookie_names.insert(c.name.clone()) {
                errs.at(
                    &join(&cp, "name"),
                    format!("cookie `{}` is used twice in this pool", c.name),
                );
            }
            methods.push(Persistence::Cookie(c));
        }
        let sp = join(&mp, "source_ip");
        if let Some(v) = take(&sp, source_ip, errs) {
            methods.push(Persistence::SourceIp(source_ip_method(&sp, v, errs)));
        }
        let hp = join(&mp, "header");
        if let Some(h) = take(&hp, header, errs).and_then(|h| header_method(&hp, h, errs)) {
            methods.push(Persistence::Header(h));
        }
        let hp = join(&mp, "hash");
        if let Some(m) = take(&hp, hash, errs) {
            if !m.is_empty() {
                errs.at(&hp, "takes no keys here").hint =
                    Some("write hash: {} and set the key under the pool's hash:".into());
            }
            methods.push(Persistence::Hash);
        }
    }
    let mut kinds = HashSet::new();
    for m in &methods {
        if !matches!(m, Persistence::Cookie(_)) && !kinds.insert(m.method()) {
            errs.at(&join(p, "persistence"), format!("{} is listed twice", m.method()))
                .hint = Some("list each table or hash method once per pool".into());
        }
    }
    let bkp = join(p, "backends");
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    match list(&bkp, backends, errs) {
        None => {
            errs.at(&bkp, "is required: a pool needs at least one backend")
                .hint = Some("add backends: [{ id: web-1, address: 127.0.0.1:8081 }]".into());
        }
        Some(items) if items.is_empty() => {
            errs.at(&bkp, "is empty: a pool needs at least one backend").hint =
                Some("add backends: [{ id: web-1, address: 127.0.0.1:8081 }]".into());
        }
        Some(items) => {
            for (bp, b) in items {
                let (bid, b) = backend(&bp, b, errs);
                if let Some(bid) = bid {
                    if !ids.insert(bid.clone()) {
                        errs.at(
                            &join(&bp, "id"),
                            format!("backend id `{bid}` is used twice in pool `{name}`"),
                        )
                        .hint = Some("backend ids must be unique within their pool".into());
                        continue;
                    }
                }
                out.extend(b);
            }
        }
    }
    Some(Pool {
        id: PoolId::new(name),
        balance,
        hash,
        persistence: methods,
        on_backend_down,
        retries,
        slow_start,
        health_check,
        passive_health,
        rebalance,
        backends: out,
    })
}

fn cookie_method(p: &str, c: s::Cookie, errs: &mut Errors) -> Option<CookiePersistence> {
    let s::Cookie {
        name,
        ttl,
        max_ttl,
        follow,
        path,
        domain,
        secure,
        http_only,
        same_site,
        unknown,
    } = c;
    unknown_keys(p, &unknown, s::COOKIE_KEYS, errs);
    let fp = join(p, "follow");
    let follow = take(&fp, follow, errs);
    let ttl_p = join(p, "ttl");
    if follow.is_some() && ttl.is_some() {
        // The application cookie's own lifetime is the session's; a second one would
        // contradict it.
        errs.at(
            &ttl_p,
            "a cookie that follows an application cookie takes its lifetime from it",
        )
        .hint = Some("remove ttl; max_ttl still bounds how long any session lasts".into());
    }
    if let Some(f) = &follow {
        if !token(f) {
            errs.at(&fp, format!("`{f}` is not a valid cookie name")).hint =
                Some("name the application's session cookie, e.g. JSESSIONID".into());
        }
    }
    let np = join(p, "name");
    let name = take(&np, name, errs).unwrap_or_else(|| "LIMPET".into());
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        errs.at(&np, format!("`{name}` is not a valid cookie name")).hint =
            Some("use letters, digits and !#$%&'*+-.^_`|~".into());
    }
    let ttl = duration(&ttl_p, ttl, Duration::from_secs(15 * 60), errs);
    let max_ttl = duration(&join(p, "max_ttl"), max_ttl, Duration::from_secs(4 * 3600), errs);
    // A followed cookie has no TTL of its own: max_ttl is the longest it may last.
    let ttl = if follow.is_some() { max_ttl } else { ttl };
    ttl_bounds(&ttl_p, ttl, max_ttl, errs);
    if let Some(f) = &follow {
        if *f == name {
            errs.at(&fp, "names limpet's own cookie").hint =
                Some("give limpet's cookie a name of its own".into());
        }
    }
    let pp = join(p, "path");
    let path = take(&pp, path, errs).unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || !path.bytes().all(is_attr_byte) {
        errs.at(&pp, format!("`{path}` is not a cookie path")).hint =
            Some("write a path starting with /, e.g. /".into());
    }
    let dp = join(p, "domain");
    let domain = take(&dp, domain, errs);
    if let Some(d) = &domain {
        if d.is_empty()
            || !d
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        {
            errs.at(&dp, format!("`{d}` is not a domain")).hint =
                Some("write e.g. example.com, or null".into());
        }
    }
    let sp = join(p, "secure");
    let secure = match take(&sp, secure, errs) {
        None => Secure::Auto,
        Some(Value::Bool(true)) => Secure::Always,
        Some(Value::Bool(false)) => Secure::Never,
        Some(Value::String(s)) if s == "auto" => Secure::Auto,
        Some(_) => {
            errs.at(&sp, "must be auto, true or false").hint =
                Some("auto sets Secure on TLS listeners".into());
            Secure::Auto
        }
    };
    let same_site = choice(
        &join(p, "same_site"),
        same_site,
        &[
            ("strict", SameSite::Strict),
            ("lax", SameSite::Lax),
            ("none", SameSite::None),
        ],
        SameSite::Lax,
        errs,
    );
    Some(CookiePersistence {
        name,
        follow,
        ttl,
        max_ttl,
        path,
        domain,
        secure,
        http_only: take(&join(p, "http_only"), http_only, errs).unwrap_or(true),
        same_site,
    })
}

/// Returns the id on its own too, so that duplicates are found even when another
/// field of the backend is wrong.
fn backend(p: &str, b: s::Backend, errs: &mut Errors) -> (Option<String>, Option<Backend>) {
    let s::Backend {
        id: bid,
        address,
        weight,
        state,
        unknown,
    } = b;
    unknown_keys(p, &unknown, s::BACKEND_KEYS, errs);
    let ip = join(p, "id");
    let bid = id(&ip, take(&ip, bid, errs), "a backend", errs);
    let ap = join(p, "address");
    let address = match take(&ap, address, errs) {
        None => {
            errs.at(&ap, "is required").hint = Some("write address: 127.0.0.1:8081".into());
            None
        }
        Some(text) => socket_addr(&ap, &text, errs),
    };
    let wp = join(p, "weight");
    let weight = match take(&wp, weight, errs) {
        None => 1,
        Some(w) if w <= MAX_WEIGHT => w,
        Some(w) => {
            errs.at(&wp, format!("{w} is above {MAX_WEIGHT}")).hint = Some(format!("use 0 to {MAX_WEIGHT}"));
            1
        }
    };
    let state = choice(
        &join(p, "state"),
        state,
        &[
            ("active", BackendState::Active),
            ("draining", BackendState::Draining),
            ("disabled", BackendState::Disabled),
        ],
        BackendState::Active,
        errs,
    );
    let built = match (&bid, address) {
        (Some(bid), Some(address)) => Some(Backend {
            id: BackendId::new(bid),
            address,
            weight,
            state,
        }),
        _ => None,
    };
    (bid, built)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_attr_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b';'
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(3600) && s > 0 {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Used by lib.rs to report structural errors in the same form.
pub(crate) fn structural(path: String, msg: String) -> ConfigError {
    ConfigError::new(path, clean_serde_message(&msg))
}
