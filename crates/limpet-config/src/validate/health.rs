//! A pool's `health_check` and `passive_health`.

use std::time::Duration;

use serde_yaml::Value;

use crate::error::Errors;
use crate::model::*;
use crate::surface::{self as s, Lenient};

use super::fields::*;

pub(super) fn health_check_config(p: &str, h: s::HealthCheck, errs: &mut Errors) -> HealthCheck {
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
    let kind = choice(&join(p, "kind"), kind, CheckKind::Http, errs);
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
pub(super) fn status_range(v: &Value) -> Option<(u16, u16)> {
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

pub(super) fn passive_health_config(p: &str, h: s::PassiveHealth, errs: &mut Errors) -> PassiveHealth {
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
