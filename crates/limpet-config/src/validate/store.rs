//! The `session_store` section (memory or Redis).

use std::time::Duration;

use crate::error::{did_you_mean, Errors};
use crate::model::*;
use crate::surface::{self as s, Lenient};

use super::fields::*;

pub(super) fn session_store(field: Option<Lenient<s::SessionStore>>, errs: &mut Errors) -> SessionStore {
    let default = SessionStore {
        max_entries: DEFAULT_MAX_ENTRIES,
        redis: None,
    };
    let Some(s::SessionStore {
        kind,
        redis_url,
        redis_url_env,
        redis_url_file,
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
                ("redis_url_env", redis_url_env.is_some()),
                ("redis_url_file", redis_url_file.is_some()),
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
            let url = (redis_url, redis_url_env, redis_url_file);
            redis = redis_store(url, key_prefix, timeout, pool_size, errs);
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

/// The URL's three spellings: inline, from the environment, from a file.
type UrlFields = (
    Option<Lenient<String>>,
    Option<Lenient<String>>,
    Option<Lenient<String>>,
);

pub(super) fn redis_store(
    (url, url_env, url_file): UrlFields,
    key_prefix: Option<Lenient<String>>,
    timeout: Option<Lenient<String>>,
    pool_size: Option<Lenient<u64>>,
    errs: &mut Errors,
) -> Option<RedisStore> {
    let up = "session_store.redis_url";
    let given = [url.is_some(), url_env.is_some(), url_file.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        errs.at(
            "session_store",
            "takes one of redis_url, redis_url_env, redis_url_file",
        )
        .hint = Some("keep one; redis_url_env or redis_url_file keep the password out of this file".into());
    }
    let env = take("session_store.redis_url_env", url_env, errs);
    let file = take("session_store.redis_url_file", url_file, errs);
    let url = match (take(up, url, errs), env, file) {
        (None, Some(var), _) => Some((String::new(), SecretSource::Env(var))),
        (None, None, Some(path)) => Some((String::new(), SecretSource::File(path.into()))),
        (None, None, None) => {
            errs.at(
                up,
                "kind: redis needs redis_url (or redis_url_env, redis_url_file)",
            )
            .hint = Some("write e.g. redis://127.0.0.1:6379/0".into());
            None
        }
        (Some(u), _, _) => match redis_url_error(&u) {
            None => Some((u.clone(), SecretSource::Inline(u))),
            Some(msg) => {
                errs.at(up, msg).hint = Some(REDIS_URL_HINT.into());
                None
            }
        },
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
    let (url, url_source) = url?;
    Some(RedisStore {
        url,
        url_source,
        key_prefix,
        pool_size,
        timeout,
    })
}

/// How a Redis URL is written, for errors about one.
const REDIS_URL_HINT: &str =
    "write redis://[user:password@]host[:port][/db], rediss://… for TLS, or unix:///path";

/// What is wrong with `u` as a Redis URL, if anything (the password never shown).
fn redis_url_error(u: &str) -> Option<String> {
    let rest = ["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .find_map(|scheme| u.strip_prefix(scheme));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(char::is_whitespace) => None,
        _ => Some(format!("`{}` is not a Redis URL", redact_url(u))),
    }
}
