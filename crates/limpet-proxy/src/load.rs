//! Read → parse → validate → resolve secrets: the one function that startup, `--check`
//! and SIGHUP all run, so they can never disagree about what is valid.

use std::path::Path;
use std::sync::Arc;

use limpet_affinity::Keyring;
use limpet_config::{Config, ConfigError, ConfigErrors};

use crate::tls::ListenerCerts;
use crate::upstream::PoolTls;

/// A configuration ready to become a snapshot.
#[derive(Clone)]
pub struct Loaded {
    pub config: Arc<Config>,
    pub keyring: Option<Keyring>,
    /// Each listener's certificates (`None` for plain listeners), by listener index.
    pub certs: ListenerCerts,
    /// Each pool's TLS material to its backends.
    pub pool_tls: PoolTls,
    pub warnings: Vec<String>,
}

/// Loads and validates `path`, reporting every error found.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read(path).map_err(|e| {
        ConfigErrors::single(
            ConfigError::new("", format!("cannot read {}: {e}", path.display()))
                .hint("pass the file with --config PATH"),
        )
    })?;
    let text = String::from_utf8(text).map_err(|e| {
        ConfigErrors::single(
            ConfigError::new(
                "",
                format!(
                    "{} is not UTF-8 (byte {})",
                    path.display(),
                    e.utf8_error().valid_up_to()
                ),
            )
            .hint("save the file as UTF-8"),
        )
    })?;
    let mut config = limpet_config::parse(&text)?;
    let (keyring, mut warnings) = crate::keys::keyring(&config.cookie_keys).map_err(|mut errs| {
        let locations = limpet_config::Locations::index(&text);
        for e in &mut errs {
            e.location = locations.find(&e.path);
        }
        ConfigErrors(errs)
    })?;
    if let Some(redis) = &mut config.session_store.redis {
        let path = crate::keys::resolve_redis_url(redis).map_err(|e| {
            let mut e = *e;
            e.location = limpet_config::Locations::index(&text).find(&e.path);
            ConfigErrors::single(e)
        })?;
        // The client's own URL parser has the last word (ports, database numbers).
        if let Err(msg) = limpet_sessions::RedisStore::new(redis) {
            let mut e = ConfigError::new(path, msg);
            e.location = limpet_config::Locations::index(&text).find(&e.path);
            return Err(ConfigErrors::single(e));
        }
    }
    let now = i64::try_from(crate::clock::unix_now()).unwrap_or(i64::MAX);
    let (certs, cert_warnings) = crate::tls::load_all(&config, now).map_err(|mut errs| {
        let locations = limpet_config::Locations::index(&text);
        for e in &mut errs {
            e.location = locations.find(&e.path);
        }
        ConfigErrors(errs)
    })?;
    warnings.extend(cert_warnings);
    let pool_tls = crate::upstream::load_all(&config).map_err(|mut errs| {
        let locations = limpet_config::Locations::index(&text);
        for e in &mut errs {
            e.location = locations.find(&e.path);
        }
        ConfigErrors(errs)
    })?;
    Ok(Loaded {
        config: Arc::new(config),
        keyring,
        certs,
        pool_tls,
        warnings,
    })
}
