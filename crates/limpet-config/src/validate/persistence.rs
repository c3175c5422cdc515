//! A pool's `hash` settings and each persistence method (`cookie`, `source_ip`,
//! `header`, `hash`).

use std::time::Duration;

use serde_yaml::Value;

use crate::error::Errors;
use crate::model::*;
use crate::surface::{self as s, Lenient};

use super::fields::*;

pub(super) fn hash_config(p: &str, field: Option<Lenient<s::Hash>>, errs: &mut Errors) -> HashConfig {
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

pub(super) fn hash_key(p: &str, text: &str, errs: &mut Errors) -> Option<HashKey> {
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

pub(super) fn source_ip_method(p: &str, v: s::SourceIp, errs: &mut Errors) -> SourceIpPersistence {
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

pub(super) fn header_method(p: &str, v: s::Header, errs: &mut Errors) -> Option<HeaderPersistence> {
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

pub(super) fn ttl_bounds(ttl_p: &str, ttl: Duration, max_ttl: Duration, errs: &mut Errors) {
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

pub(super) fn cookie_method(p: &str, c: s::Cookie, errs: &mut Errors) -> Option<CookiePersistence> {
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
    let same_site = choice(&join(p, "same_site"), same_site, SameSite::Lax, errs);
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
