//! Surface → typed `Config`. Walks the whole file and records every error with its key
//! path; nothing is short-circuited, so one run of `--check` shows everything to fix.

use crate::error::{ConfigError, Errors};
use crate::model::*;
use crate::surface::{self as s};

mod fields;
mod health;
mod persistence;
mod pool;
mod routes;
mod server;
mod store;

use fields::*;
use pool::*;
use routes::*;
use server::*;
use store::*;

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
    if let (Some(listeners), Some(server)) = (&listeners, &server) {
        for (i, l) in listeners.iter().enumerate() {
            if l.proxy_protocol && server.trusted_proxies.is_empty() {
                errs.at(
                    &format!("listeners[{i}].proxy_protocol"),
                    "is only accepted from server.trusted_proxies, which is empty",
                )
                .hint = Some("list the L4 balancers' addresses in server.trusted_proxies".into());
            }
        }
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

/// Used by lib.rs to report structural errors in the same form.
pub(crate) fn structural(path: String, msg: String) -> ConfigError {
    ConfigError::new(path, clean_serde_message(&msg))
}
