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

/// A self-signed ECDSA certificate for `name` valid only from `start` to `end`
/// (`YYYYMMDDHHMMSSZ`), as `{file}.pem` and `{file}.key` in `dir`: `openssl req -x509`
/// cannot date a certificate in the past, `openssl ca` can.
pub fn dated(dir: &Path, file: &str, name: &str, start: &str, end: &str) -> (PathBuf, PathBuf) {
    let (pem, key_file) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
    let ca = dir.join(format!("{file}.ca"));
    std::fs::create_dir_all(&ca).unwrap();
    std::fs::write(
        ca.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
         default_md = sha256\npolicy = p\ncopy_extensions = copy\n[p]\ncommonName = supplied\n",
    )
    .unwrap();
    std::fs::write(ca.join("index.txt"), "").unwrap();
    std::fs::write(ca.join("serial"), "01\n").unwrap();
    let csr = ca.join("req.csr");
    let run = |c: &mut Command| {
        let out = c.current_dir(&ca).output().expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .arg("-keyout")
        .arg(&key_file)
        .arg("-out")
        .arg(&csr)
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")]));
    run(Command::new("openssl")
        .args([
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-selfsign",
            "-startdate",
            start,
            "-enddate",
            end,
        ])
        .arg("-keyfile")
        .arg(&key_file)
        .arg("-in")
        .arg(&csr)
        .arg("-out")
        .arg(&pem));
    (pem, key_file)
}
