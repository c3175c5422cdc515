//! The certificates of TLS listeners: read and checked together with the rest of the
//! configuration (so `--check`, start-up and SIGHUP report a missing file, a key that
//! does not match its certificate, an expired certificate or one that covers none of
//! the routes, each with its path), then chosen per handshake by SNI from the snapshot
//! in use. A reload swaps the snapshot: new handshakes get the new certificates,
//! connections already open keep theirs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use limpet_config::{CertFiles, Config, ConfigError, HostMatch, ListenerTls};
use pingora_core::tls::sign::CertifiedKey;
use pingora_core::tls::{ClientHello, ResolvesServerCert};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::shared::Shared;

/// One listener's certificates, by the names they cover.
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For clients that send no name or one no certificate covers: the first listed.
    default: Arc<CertifiedKey>,
}

impl CertStore {
    /// The certificate for server name `sni`.
    pub fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(c) = self.exact.get(&name) {
                return c.clone();
            }
            if let Some(c) = name
                .split_once('.')
                .and_then(|(_, parent)| self.wildcard.get(parent))
            {
                return c.clone();
            }
        }
        self.default.clone()
    }
}

/// A loaded certificate and what it says about itself.
struct Loaded {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
    /// Unix seconds.
    not_before: i64,
    not_after: i64,
}

/// Each listener's certificates, by listener index (`None` for plain listeners).
pub type ListenerCerts = Vec<Option<Arc<CertStore>>>;

/// Loads every TLS listener's certificates, checks them against `config`'s routes at
/// unix time `now`, and returns warnings beside them.
pub fn load_all(config: &Config, now: i64) -> Result<(ListenerCerts, Vec<String>), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut out = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let Some(tls) = &l.tls else {
            out.push(None);
            continue;
        };
        let path = format!("listeners[{i}].tls");
        match store(&path, tls, config, now, &mut warnings) {
            Ok(s) => out.push(Some(Arc::new(s))),
            Err(mut e) => {
                errors.append(&mut e);
                out.push(None);
            }
        }
    }
    if errors.is_empty() {
        Ok((out, warnings))
    } else {
        Err(errors)
    }
}

fn store(
    path: &str,
    tls: &ListenerTls,
    config: &Config,
    now: i64,
    warnings: &mut Vec<String>,
) -> Result<CertStore, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut loaded = Vec::new();
    for files in &tls.certificates {
        match load_pair(files) {
            Ok(l) => loaded.push((files, l)),
            Err(msg) => errors.push(ConfigError::new(path, msg).hint(
                "give a PEM certificate chain (leaf first) and its PEM private key (PKCS#8, RSA or EC); check the paths and that limpet may read them",
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    for (files, l) in &loaded {
        let cert = files.cert.display();
        if l.not_after < now {
            warnings.push(format!(
                "{path}: certificate {cert} expired {} days ago; clients will refuse it",
                (now - l.not_after) / 86_400
            ));
        } else if l.not_before > now {
            warnings.push(format!("{path}: certificate {cert} is not valid yet"));
        }
        if l.names.is_empty() {
            warnings.push(format!(
                "{path}: certificate {cert} names no host (no DNS subject alternative name); it can only be the default"
            ));
        }
        for name in &l.names {
            // The first certificate listed wins a name two certificates share.
            match name.strip_prefix("*.") {
                Some(parent) => wildcard
                    .entry(parent.to_string())
                    .or_insert_with(|| l.key.clone()),
                None => exact.entry(name.clone()).or_insert_with(|| l.key.clone()),
            };
        }
    }
    let Some((_, first)) = loaded.first() else {
        return Err(vec![ConfigError::new(path, "has no certificate")]);
    };
    let store = CertStore {
        exact,
        wildcard,
        default: first.key.clone(),
    };
    let uncovered: Vec<String> = config
        .routes
        .iter()
        .filter_map(|r| match &r.host {
            HostMatch::Any => None,
            HostMatch::Exact(h) => (!store.covers(h)).then(|| h.clone()),
            HostMatch::Suffix(s) => {
                (!store.wildcard.contains_key(s.trim_start_matches('.'))).then(|| format!("*{s}"))
            }
        })
        .collect();
    let any_route = config.routes.iter().any(|r| r.host == HostMatch::Any);
    if !any_route && uncovered.len() == config.routes.len() && !config.routes.is_empty() {
        warnings.push(format!(
            "{path}: no certificate covers any route's host ({}); clients will see a name mismatch",
            uncovered.join(", ")
        ));
    }
    Ok(store)
}

impl CertStore {
    fn covers(&self, host: &str) -> bool {
        self.exact.contains_key(host)
            || host
                .split_once('.')
                .is_some_and(|(_, parent)| self.wildcard.contains_key(parent))
    }
}

/// Reads a certificate chain and its key; checks that they belong together.
fn load_pair(files: &CertFiles) -> Result<Loaded, String> {
    let chain = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "the key {} does not belong to the certificate {}",
            files.key.display(),
            files.cert.display()
        ),
        other => format!("cannot use the key {}: {other}", files.key.display()),
    })?;
    let leaf = key
        .cert
        .first()
        .ok_or_else(|| format!("{} holds no certificate", files.cert.display()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("{} is not a valid X.509 certificate: {e}", files.cert.display()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    let validity = parsed.validity();
    let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    Ok(Loaded {
        key: Arc::new(key),
        names,
        not_before,
        not_after,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read the certificate {}: {e}", path.display()))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the key {}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?
        .ok_or_else(|| format!("{} holds no PEM private key", path.display()))
}

/// Chooses a listener's certificate for each handshake from the snapshot in use.
pub struct SniResolver {
    shared: Arc<Shared>,
    listener: usize,
}

impl SniResolver {
    pub fn new(shared: Arc<Shared>, listener: usize) -> Self {
        Self { shared, listener }
    }
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SniResolver(listener {})", self.listener)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snap = self.shared.current.load();
        let store = snap.listeners.get(self.listener)?.certs.as_ref()?;
        Some(store.pick(hello.server_name()))
    }
}
