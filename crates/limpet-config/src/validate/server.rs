//! The `server`, `listeners`, `admin` and `cookie_keys` sections.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::duration::parse_duration;
use crate::error::Errors;
use crate::model::*;
use crate::surface::{self as s, Lenient};

use super::fields::*;

pub(super) fn server(field: Option<Lenient<s::Server>>, errs: &mut Errors) -> Option<Server> {
    let given = take("server", field, errs);
    let s::Server {
        threads,
        client_idle_timeout,
        request_header_timeout,
        max_request_header_bytes,
        max_response_header_bytes,
        max_connections,
        h2_max_concurrent_streams,
        upstream_connect_timeout,
        upstream_read_timeout,
        grace_period,
        trusted_proxies,
        log_format,
        debug_headers,
        pid_file,
        access_log_file,
        access_log_query,
        log_level,
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
    let request_header_timeout = duration_in(
        "server.request_header_timeout",
        request_header_timeout,
        Duration::from_secs(10),
        (Duration::from_millis(100), Duration::from_secs(300)),
        Some("use 100ms up to 5m"),
        errs,
    );
    let max_request_header_bytes =
        head_limit("server.max_request_header_bytes", max_request_header_bytes, errs);
    let max_response_header_bytes = head_limit(
        "server.max_response_header_bytes",
        max_response_header_bytes,
        errs,
    );
    let max_connections = number_in(
        "server.max_connections",
        max_connections,
        100_000,
        (1, 10_000_000),
        errs,
    );
    let h2_max_concurrent_streams = number_in(
        "server.h2_max_concurrent_streams",
        h2_max_concurrent_streams,
        100,
        (1, 10_000),
        errs,
    ) as u32;
    Some(Server {
        max_connections,
        h2_max_concurrent_streams,
        threads,
        client_idle_timeout,
        request_header_timeout,
        max_request_header_bytes,
        max_response_header_bytes,
        upstream_connect_timeout,
        upstream_read_timeout,
        grace_period: duration("server.grace_period", grace_period, Duration::from_secs(10), errs),
        trusted_proxies: proxies,
        log_format: choice("server.log_format", log_format, LogFormat::Text, errs),
        debug_headers: take("server.debug_headers", debug_headers, errs).unwrap_or(false),
        pid_file: take("server.pid_file", pid_file, errs)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
        access_log_file: take("server.access_log_file", access_log_file, errs)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
        access_log_query: take("server.access_log_query", access_log_query, errs).unwrap_or(true),
        log_level: choice("server.log_level", log_level, LogLevel::Info, errs),
    })
}

pub(super) fn listeners(
    field: Option<Lenient<Vec<Lenient<s::Listener>>>>,
    errs: &mut Errors,
) -> Option<Vec<Listener>> {
    let Some(items) = list("listeners", field, errs) else {
        return Some(vec![Listener {
            address: SocketAddr::from(([0, 0, 0, 0], 8080)),
            tls: None,
            h2c: false,
            redirect_https: false,
            proxy_protocol: false,
            max_connections: None,
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
            h2c,
            redirect_https,
            proxy_protocol,
            max_connections,
            unknown,
        },
    ) in items
    {
        unknown_keys(&p, &unknown, s::LISTENER_KEYS, errs);
        let tp = join(&p, "tls");
        let tls_surface = take(&tp, tls, errs);
        // Checks against the other keys hold even when `tls` itself has errors.
        let has_tls = tls_surface.is_some();
        let tls = tls_surface.and_then(|t| listener_tls(&tp, t, errs));
        let h2c = take(&join(&p, "h2c"), h2c, errs).unwrap_or(false);
        let redirect_https = take(&join(&p, "redirect_https"), redirect_https, errs).unwrap_or(false);
        let proxy_protocol = take(&join(&p, "proxy_protocol"), proxy_protocol, errs).unwrap_or(false);
        let mcp = join(&p, "max_connections");
        let max_connections = take(&mcp, max_connections, errs).filter(|n| {
            let ok = (1..=10_000_000).contains(n);
            if !ok {
                errs.at(&mcp, format!("{n} is out of range")).hint = Some("use 1 to 10000000".into());
            }
            ok
        });
        if has_tls && h2c {
            errs.at(&join(&p, "h2c"), "is for listeners without TLS").hint =
                Some("TLS listeners offer HTTP/2 through ALPN already; remove h2c".into());
        }
        if has_tls && redirect_https {
            errs.at(
                &join(&p, "redirect_https"),
                "on a TLS listener would redirect to itself",
            )
            .hint = Some("set it on the plain listener".into());
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
            out.push(Listener {
                address: a,
                tls,
                h2c,
                redirect_https,
                proxy_protocol,
                max_connections,
            });
        }
    }
    Some(out)
}

/// A listener's `tls`: one `cert`/`key` pair, or `certificates`, never both.
fn listener_tls(p: &str, t: s::ListenerTls, errs: &mut Errors) -> Option<ListenerTls> {
    let s::ListenerTls {
        cert,
        key,
        certificates,
        min_version,
        hsts,
        unknown,
    } = t;
    unknown_keys(p, &unknown, s::LISTENER_TLS_KEYS, errs);
    let mut pairs = Vec::new();
    let single = (
        take(&join(p, "cert"), cert, errs),
        take(&join(p, "key"), key, errs),
    );
    let many = list(&join(p, "certificates"), certificates, errs);
    match (single, many) {
        ((None, None), None) => {
            errs.at(p, "needs a certificate").hint = Some(
                "write tls: { cert: PATH, key: PATH } or tls: { certificates: [{ cert: PATH, key: PATH }] }"
                    .into(),
            );
        }
        ((Some(_), _) | (_, Some(_)), Some(_)) => {
            errs.at(p, "has both cert/key and certificates").hint =
                Some("list every certificate under certificates (the first is the default)".into());
        }
        ((cert, key), None) => pairs.extend(cert_pair(p, cert, key, errs)),
        ((None, None), Some(items)) => {
            if items.is_empty() {
                errs.at(&join(p, "certificates"), "is empty").hint =
                    Some("add - { cert: PATH, key: PATH }".into());
            }
            for (ip, s::CertPair { cert, key, unknown }) in items {
                unknown_keys(&ip, &unknown, s::CERT_PAIR_KEYS, errs);
                let cert = take(&join(&ip, "cert"), cert, errs);
                let key = take(&join(&ip, "key"), key, errs);
                pairs.extend(cert_pair(&ip, cert, key, errs));
            }
        }
    }
    let mp = join(p, "min_version");
    let min_version = choice(&mp, min_version, TlsVersion::V1_2, errs);
    if min_version == TlsVersion::V1_3 {
        errs.at(&mp, "\"1.3\" cannot be enforced by this build's TLS library").hint = Some(
            "rustls as Pingora 0.9.1 drives it always offers TLS 1.2 and 1.3; use \"1.2\" (see docs/config.md)".into(),
        );
    }
    let hp = join(p, "hsts");
    let hsts = take(&hp, hsts, errs).and_then(|text| match parse_duration(&text) {
        Ok(d) if d.as_secs() >= 1 => Some(d),
        Ok(_) => {
            errs.at(&hp, "must be at least 1s").hint = Some("write e.g. hsts: 365d".into());
            None
        }
        Err(e) => {
            errs.at(&hp, format!("`{text}`: {e}")).hint = Some("write e.g. hsts: 365d".into());
            None
        }
    });
    (!pairs.is_empty()).then_some(ListenerTls {
        certificates: pairs,
        min_version,
        hsts,
    })
}

fn cert_pair(p: &str, cert: Option<String>, key: Option<String>, errs: &mut Errors) -> Option<CertFiles> {
    match (cert, key) {
        (Some(cert), Some(key)) if !cert.is_empty() && !key.is_empty() => Some(CertFiles {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        }),
        (cert, _) => {
            let missing = if cert.as_deref().is_none_or(str::is_empty) {
                "cert"
            } else {
                "key"
            };
            errs.at(&join(p, missing), "is required").hint =
                Some("give the PEM file's path, e.g. /etc/limpet/site.pem".into());
            None
        }
    }
}

pub(super) fn admin(field: Option<Lenient<s::Admin>>, errs: &mut Errors) -> Option<Admin> {
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

pub(super) fn cookie_keys(
    field: Option<Lenient<Vec<Lenient<s::CookieKey>>>>,
    errs: &mut Errors,
) -> Vec<CookieKey> {
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

/// A limit on a message head: 1KiB to 1MiB, 64KiB by default.
fn head_limit(path: &str, field: Option<Lenient<Value>>, errs: &mut Errors) -> usize {
    const DEFAULT: usize = 64 * 1024;
    match take(path, field, errs) {
        None => DEFAULT,
        Some(v) => match byte_size(&v) {
            Some(n) if (1024..=1024 * 1024).contains(&n) => n,
            Some(n) => {
                errs.at(path, format!("{n} bytes is out of range")).hint = Some("use 1KiB to 1MiB".into());
                DEFAULT
            }
            None => {
                errs.at(path, "is not a size").hint = Some("write e.g. 64KiB, 16384 or 1MiB".into());
                DEFAULT
            }
        },
    }
}

/// A size in bytes: a number, or a number with `B`, `KiB` or `MiB`.
fn byte_size(v: &Value) -> Option<usize> {
    if let Some(n) = v.as_u64() {
        return usize::try_from(n).ok();
    }
    let text = v.as_str()?.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: usize = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(scale)
}
