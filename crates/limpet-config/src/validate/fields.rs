//! Field helpers shared by every section: key paths, unknown keys, typed reads with
//! defaults and ranges, ids, and the spellings of durations in messages.

use std::net::SocketAddr;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::duration::parse_duration;
use crate::error::{did_you_mean, Errors};
use crate::model::*;
use crate::surface::Lenient;

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn unknown_keys(path: &str, extra: &Mapping, known: &[&str], errs: &mut Errors) {
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
pub(super) fn take<T>(path: &str, field: Option<Lenient<T>>, errs: &mut Errors) -> Option<T> {
    match field? {
        Lenient::Ok(v) => Some(v),
        Lenient::Err(msg) => {
            errs.at(path, clean_serde_message(&msg));
            None
        }
    }
}

/// serde_yaml messages name Rust types; say it in the words of the file instead.
pub(super) fn clean_serde_message(msg: &str) -> String {
    msg.replace("u32", "a whole number")
        .replace("u64", "a whole number")
        .replace("a boolean", "true or false")
        .replace("struct ", "a mapping for ")
        .replace("a sequence", "a list")
}

pub(super) fn duration(
    path: &str,
    field: Option<Lenient<String>>,
    default: Duration,
    errs: &mut Errors,
) -> Duration {
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
pub(super) fn number_in<T>(
    path: &str,
    field: Option<Lenient<T>>,
    default: T,
    (lo, hi): (T, T),
    errs: &mut Errors,
) -> T
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
pub(super) fn duration_in(
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

/// One of `T`'s spellings, or `default` when absent.
pub(super) fn choice<T: Spelled>(
    path: &str,
    field: Option<Lenient<String>>,
    default: T,
    errs: &mut Errors,
) -> T {
    let Some(text) = take(path, field, errs) else {
        return default;
    };
    if let Some(v) = T::ALL.iter().find(|v| v.as_str() == text) {
        return *v;
    }
    let names: Vec<&str> = T::ALL.iter().map(|v| v.as_str()).collect();
    let e = errs.at(path, format!("`{text}` is not one of {}", names.join(", ")));
    if let Some(k) = did_you_mean(&text, &names) {
        e.hint = Some(format!("did you mean `{k}`?"));
    }
    default
}

pub(super) fn socket_addr(path: &str, text: &str, errs: &mut Errors) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.at(path, format!("`{text}` is not an IP address with a port"))
                .hint = Some("write IP:PORT, e.g. 127.0.0.1:8081 or [::1]:8081".into());
            None
        }
    }
}

pub(super) fn id(path: &str, text: Option<String>, what: &str, errs: &mut Errors) -> Option<String> {
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

pub(super) fn list<T>(
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

pub(super) fn token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn is_attr_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b';'
}

pub(super) fn human(d: Duration) -> String {
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
