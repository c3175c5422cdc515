//! Test certificates, made by the openssl CLI in a test's scratch directory (no key is
//! ever committed).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The key of a test certificate.
#[derive(Clone, Copy, Debug)]
pub enum Key {
    EcdsaP256,
    Rsa2048,
}

/// A self-signed certificate for `names` (the first is the subject's CN, all are DNS
/// subject alternative names) with organisation `org`, as `{file}.pem` and `{file}.key`
/// in `dir`.
pub fn self_signed(dir: &Path, file: &str, names: &[&str], key: Key, org: &str) -> (PathBuf, PathBuf) {
    let (pem, key_file) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut c = Command::new("openssl");
    c.args(["req", "-x509", "-nodes", "-days", "30", "-newkey"]);
    match key {
        Key::Rsa2048 => c.arg("rsa:2048"),
        Key::EcdsaP256 => c.args(["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
    };
    let out = c
        .arg("-keyout")
        .arg(&key_file)
        .arg("-out")
        .arg(&pem)
        .args(["-subj", &format!("/CN={}/O={org}", names[0])])
        .args(["-addext", &format!("subjectAltName={san}")])
        .output()
        .expect("openssl (Debian package openssl; .ci/run installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (pem, key_file)
}
