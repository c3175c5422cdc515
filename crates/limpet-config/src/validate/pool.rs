//! The `pools` section: each pool, its backends and its rebalancing.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::duration::parse_duration;
use crate::error::Errors;
use crate::model::*;
use crate::surface::{self as s, Lenient};

use super::fields::*;
use super::health::*;
use super::persistence::*;

pub(super) fn pools(field: Option<Lenient<Mapping>>, errs: &mut Errors) -> BTreeMap<PoolId, Pool> {
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

pub(super) fn pool(p: &str, name: &str, surface: s::Pool, errs: &mut Errors) -> Option<Pool> {
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
        protocol,
        tls,
        backends,
        unknown,
    } = surface;
    let protocol = choice(&join(p, "protocol"), protocol, UpstreamProtocol::H1, errs);
    let tp = join(p, "tls");
    let tls = take(&tp, tls, errs).map(|t| upstream_tls(&tp, t, errs));
    match (protocol, &tls) {
        (UpstreamProtocol::H2, None) => {
            errs.at(&join(p, "protocol"), "h2 needs tls").hint = Some(
                "add tls: { sni: NAME } for HTTP/2 over TLS, or use protocol: h2c for cleartext HTTP/2"
                    .into(),
            );
        }
        (UpstreamProtocol::H2c, Some(_)) => {
            errs.at(&join(p, "protocol"), "h2c is cleartext, but the pool has tls")
                .hint = Some("use protocol: h2 for HTTP/2 over TLS".into());
        }
        _ => {}
    }
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
    let balance = choice(&join(p, "balance"), balance, Balance::RoundRobin, errs);
    let on_backend_down = choice(
        &join(p, "on_backend_down"),
        on_backend_down,
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
        protocol,
        tls,
        backends: out,
    })
}

/// Returns the id on its own too, so that duplicates are found even when another
/// field of the backend is wrong.
pub(super) fn backend(p: &str, b: s::Backend, errs: &mut Errors) -> (Option<String>, Option<Backend>) {
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
    let state = choice(&join(p, "state"), state, BackendState::Active, errs);
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

pub(super) fn rebalance_config(p: &str, r: s::Rebalance, errs: &mut Errors) -> Rebalance {
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

/// A pool's `tls`: verification on unless turned off in so many words, and a name to
/// verify (Pingora sends no SNI, and verifies nothing, when the name is empty).
fn upstream_tls(p: &str, t: s::UpstreamTls, errs: &mut Errors) -> UpstreamTls {
    let s::UpstreamTls {
        verify,
        ca,
        sni,
        client_cert,
        client_key,
        unknown,
    } = t;
    unknown_keys(p, &unknown, s::UPSTREAM_TLS_KEYS, errs);
    let verify = take(&join(p, "verify"), verify, errs).unwrap_or(true);
    let ca = take(&join(p, "ca"), ca, errs).map(PathBuf::from);
    let sp = join(p, "sni");
    let sni = take(&sp, sni, errs).filter(|s| !s.is_empty());
    if let Some(name) = &sni {
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            errs.at(&sp, format!("`{name}` is not a host name")).hint =
                Some("write e.g. sni: api.internal".into());
        }
    }
    if verify && sni.is_none() {
        errs.at(&sp, "is required while verify is on").hint = Some(
            "name the host the backends' certificates are for (sni: api.internal); without it nothing could be verified"
                .into(),
        );
    }
    let cert = take(&join(p, "client_cert"), client_cert, errs);
    let key = take(&join(p, "client_key"), client_key, errs);
    let client = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(CertFiles {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        }),
        (Some(_), None) => {
            errs.at(&join(p, "client_key"), "is required with client_cert");
            None
        }
        (None, Some(_)) => {
            errs.at(&join(p, "client_cert"), "is required with client_key");
            None
        }
    };
    UpstreamTls {
        verify,
        ca,
        sni,
        client,
    }
}
