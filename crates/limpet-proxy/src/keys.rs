//! Resolves secrets given by environment variable, file or inline: cookie signing
//! secrets into a keyring, and the session store's Redis URL (which may carry a
//! password). The config crate does no I/O, so this is where a missing variable or
//! unreadable file becomes an error naming its key path.

use std::path::Path;

use limpet_affinity::{Keyring, SigningKey};
use limpet_config::{ConfigError, CookieKey, RedisStore, SecretSource};

/// A file's contents without the newline `echo` and editors end it with.
fn read_secret(file: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(file)
        .map(|mut b| {
            while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                b.pop();
            }
            b
        })
        .map_err(|e| format!("cannot read `{}`: {e}", file.display()))
}

/// Fills in `redis.url` from `redis_url_env` or `redis_url_file`; returns the key path
/// the URL came from, for errors about it. The URL itself is never put in a message.
pub(crate) fn resolve_redis_url(redis: &mut RedisStore) -> Result<&'static str, Box<ConfigError>> {
    let (path, url) = match &redis.url_source {
        SecretSource::Inline(_) => return Ok("session_store.redis_url"),
        SecretSource::Env(var) => (
            "session_store.redis_url_env",
            std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set (or not UTF-8)")),
        ),
        SecretSource::File(file) => (
            "session_store.redis_url_file",
            read_secret(file)
                .and_then(|b| String::from_utf8(b).map_err(|_| format!("`{}` is not UTF-8", file.display()))),
        ),
    };
    match url {
        Ok(url) if !url.trim().is_empty() => {
            redis.url = url.trim().to_string();
            Ok(path)
        }
        Ok(_) => Err(Box::new(
            ConfigError::new(path, "is empty").hint("it must hold e.g. redis://:password@host:6379/0"),
        )),
        Err(msg) => Err(Box::new(
            ConfigError::new(path, msg).hint("it must hold e.g. redis://:password@host:6379/0"),
        )),
    }
}

/// Builds the keyring; also returns warnings (inline secrets).
pub(crate) fn keyring(keys: &[CookieKey]) -> Result<(Option<Keyring>, Vec<String>), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let (path, secret) = match &k.source {
            SecretSource::Env(var) => (
                format!("cookie_keys[{i}].secret_env"),
                std::env::var_os(var)
                    .map(|v| v.into_encoded_bytes())
                    .ok_or_else(|| format!("environment variable `{var}` is not set")),
            ),
            SecretSource::File(file) => (format!("cookie_keys[{i}].secret_file"), read_secret(file)),
            SecretSource::Inline(s) => {
                warnings.push(format!(
                    "cookie_keys[{i}] (`{}`) has its secret inline in the config file; anyone who can read the file can forge affinity cookies. Prefer secret_env or secret_file.",
                    k.id
                ));
                (format!("cookie_keys[{i}].secret"), Ok(s.as_bytes().to_vec()))
            }
        };
        match secret.and_then(|s| SigningKey::new(k.id.as_str(), &s).map_err(|e| e.to_string())) {
            Ok(key) => out.push(key),
            Err(msg) => errors.push(
                ConfigError::new(path, msg).hint("generate one with: head -c 32 /dev/urandom | base64"),
            ),
        }
    }
    if errors.is_empty() {
        Ok((Keyring::new(out), warnings))
    } else {
        Err(errors)
    }
}
