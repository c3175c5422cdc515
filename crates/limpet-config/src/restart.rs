//! Keys a reload may not change: they are fixed when limpet starts (listening sockets,
//! threads, the log format, the session store). A reload that changes one is refused
//! with every such key named, and the running configuration stays.

use crate::{Config, ConfigError, ConfigErrors, Listener};

/// Keys that only a restart (or a SIGQUIT upgrade) can change.
pub fn restart_only(old: &Config, new: &Config) -> Result<(), ConfigErrors> {
    let mut errs = Vec::new();
    let mut check = |path: &str, same: bool| {
        if !same {
            errs.push(
                ConfigError::new(path, "changed, but it only takes effect on restart")
                    .hint("restart limpet (or upgrade with SIGQUIT and -u), or revert this change"),
            );
        }
    };
    // Sockets, TLS on or off, h2c and PROXY protocol are fixed when limpet binds;
    // certificates, HSTS and redirects reload.
    let bindings = |c: &Config| c.listeners.iter().map(Listener::binding).collect::<Vec<_>>();
    check("listeners", bindings(old) == bindings(new));
    check("admin.address", old.admin == new.admin);
    check("server.threads", old.server.threads == new.server.threads);
    check(
        "server.log_format",
        old.server.log_format == new.server.log_format,
    );
    check("server.pid_file", old.server.pid_file == new.server.pid_file);
    check(
        "server.access_log_file",
        old.server.access_log_file == new.server.access_log_file,
    );
    // Pingora takes its HTTP/2 settings once, when the listeners are built.
    check(
        "server.h2_max_concurrent_streams",
        old.server.h2_max_concurrent_streams == new.server.h2_max_concurrent_streams,
    );
    // The table's bound is fixed when the store is made; its sessions outlive reloads.
    check("session_store", old.session_store == new.session_store);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errs))
    }
}

/// Reloadable keys whose change reaches HTTP/1 connections at once but HTTP/2 ones only
/// after a restart (Pingora takes its HTTP/2 settings when the listeners are built):
/// one warning each, when some listener speaks HTTP/2.
pub fn http2_restart_warnings(old: &Config, new: &Config) -> Vec<String> {
    if !new.listeners.iter().any(|l| l.tls.is_some() || l.h2c) {
        return Vec::new();
    }
    let changed = [
        (
            "server.client_idle_timeout",
            old.server.client_idle_timeout != new.server.client_idle_timeout,
        ),
        (
            "server.max_request_header_bytes",
            old.server.max_request_header_bytes != new.server.max_request_header_bytes,
        ),
    ];
    changed
        .iter()
        .filter(|(_, c)| *c)
        .map(|(key, _)| {
            format!("{key}: changed; HTTP/1 connections use the new value now, HTTP/2 connections after a restart")
        })
        .collect()
}
