//! How limpet speaks to a pool's backends: HTTP/1.1, HTTP/2 over TLS or cleartext
//! HTTP/2, with TLS material (CA bundle, client certificate) read and checked with the
//! configuration, so that a bad file is a configuration error and never a panic inside
//! the TLS library on the first connection.

use std::collections::HashMap;
use std::sync::Arc;

use limpet_config::{CertFiles, Config, ConfigError, PoolId, UpstreamProtocol};
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{CertKey, WrappedX509};
use rustls::pki_types::CertificateDer;

/// The TLS material of one pool, ready for Pingora's connector.
#[derive(Clone)]
pub struct UpstreamTlsRt {
    pub verify: bool,
    /// Empty only when `verify` is off (Pingora then sends no SNI).
    pub sni: String,
    pub ca: Option<Arc<[WrappedX509]>>,
    pub client: Option<Arc<CertKey>>,
}

/// Each pool's upstream TLS material, by pool id (pools without `tls` are absent).
pub type PoolTls = HashMap<PoolId, UpstreamTlsRt>;

/// Reads every pool's CA bundle and client certificate.
pub fn load_all(config: &Config) -> Result<PoolTls, Vec<ConfigError>> {
    let mut out = HashMap::new();
    let mut errors = Vec::new();
    for pool in config.pools.values() {
        let Some(tls) = &pool.tls else { continue };
        let path = format!("pools.{}.tls", pool.id);
        let ca = match &tls.ca {
            None => Ok(None),
            Some(file) => read_certs(file).map(|certs| {
                let wrapped: Vec<WrappedX509> = certs
                    .into_iter()
                    .map(|c| WrappedX509::new(c.as_ref().to_vec(), pingora_core::utils::tls::parse_x509))
                    .collect();
                Some(Arc::from(wrapped))
            }),
        };
        let client = match &tls.client {
            None => Ok(None),
            Some(files) => client_cert(files).map(|c| Some(Arc::new(c))),
        };
        match (ca, client) {
            (Ok(ca), Ok(client)) => {
                out.insert(
                    pool.id.clone(),
                    UpstreamTlsRt {
                        verify: tls.verify,
                        sni: tls.sni.clone().unwrap_or_default(),
                        ca,
                        client,
                    },
                );
            }
            (ca, client) => {
                for msg in [ca.err(), client.err()].into_iter().flatten() {
                    errors.push(ConfigError::new(&path, msg).hint(
                        "give PEM files limpet may read: a CA bundle, and a client certificate with its key",
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// PEM certificates of `file`, each checked to be X.509 (Pingora parses them again and
/// panics on a bad one).
fn read_certs(file: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", file.display()));
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c.as_ref())
            .map_err(|e| format!("{} holds an invalid certificate: {e}", file.display()))?;
    }
    Ok(certs)
}

fn client_cert(files: &CertFiles) -> Result<CertKey, String> {
    let certs = read_certs(&files.cert)?;
    let bytes = std::fs::read(&files.key).map_err(|e| format!("cannot read {}: {e}", files.key.display()))?;
    let key = rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| format!("{} is not PEM: {e}", files.key.display()))?
        .ok_or_else(|| format!("{} holds no PEM private key", files.key.display()))?;
    // The same check as for listener certificates: the key must be the certificate's.
    let provider = rustls::crypto::ring::default_provider();
    pingora_core::tls::sign::CertifiedKey::from_der(certs.clone(), key.clone_key(), &provider).map_err(
        |_| {
            format!(
                "the key {} does not belong to the certificate {}",
                files.key.display(),
                files.cert.display()
            )
        },
    )?;
    Ok(CertKey::new(
        certs.iter().map(|c| c.as_ref().to_vec()).collect(),
        key.secret_der().to_vec(),
    ))
}

/// The protocol settings of a peer for `protocol`, and TLS when `tls` is set. An
/// upgrade (`websocket`) always asks for HTTP/1.1.
pub fn configure(
    peer: &mut HttpPeer,
    protocol: UpstreamProtocol,
    tls: Option<&UpstreamTlsRt>,
    upgrade: bool,
) {
    if let Some(tls) = tls {
        peer.options.verify_cert = tls.verify;
        peer.options.verify_hostname = tls.verify;
        peer.options.ca = tls.ca.clone();
        peer.client_cert_key = tls.client.clone();
    }
    if upgrade {
        peer.options.alpn = ALPN::H1;
        return;
    }
    match protocol {
        UpstreamProtocol::H1 => peer.options.alpn = ALPN::H1,
        // gRPC needs HTTP/2 end to end: no fallback to HTTP/1.1.
        UpstreamProtocol::H2 | UpstreamProtocol::H2c => {
            peer.options.set_http_version(2, 2);
            peer.options.max_h2_streams = 100;
        }
    }
}
