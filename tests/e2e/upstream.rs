//! limpet to its backends: a real gRPC server and client (Python grpcio) through an
//! h2c listener and an h2c pool with header stickiness; HTTP/2 over verified TLS to a
//! TLS backend (a second limpet), with health checks on the same path; a wrong name
//! fails verification instead of being ignored.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use limpet_e2e::*;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(STICKY)
}

/// The gRPC server and client, relative to tests/.
const STICKY: &str = "grpc/sticky.py";

/// A Python script run as a test's backend, killed on drop.
struct Script(Child);

impl Script {
    /// Runs `tests/{path}` with `args`; returns it and the first line it prints.
    fn start<S: AsRef<std::ffi::OsStr>>(path: &str, args: &[S]) -> (Script, String) {
        let mut child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (with grpcio for the gRPC tests: .ci/run installs it with pip)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (Script(child), line.trim().to_string())
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A grpcio server answering with its id.
struct GrpcBackend {
    id: String,
    addr: SocketAddr,
    _process: Script,
}

impl GrpcBackend {
    fn start(id: &str) -> GrpcBackend {
        let addr = free_addr();
        let (process, line) = Script::start(STICKY, &["serve", id, &addr.port().to_string()]);
        assert_eq!(line, "ready", "grpc backend {id} did not start");
        GrpcBackend {
            id: id.into(),
            addr,
            _process: process,
        }
    }
}

/// One unary and one streaming call of `n` messages for `session` through `lb`:
/// the backend ids seen, in order.
fn grpc_call(lb: SocketAddr, session: &str, n: usize) -> Vec<String> {
    let out = Command::new("python3")
        .arg(script())
        .args(["call", &lb.to_string(), session, &n.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_streaming_calls_stick_by_header_through_h2c() {
    let gs: Vec<GrpcBackend> = (1..=3).map(|i| GrpcBackend::start(&format!("g-{i}"))).collect();
    let list: String = gs
        .iter()
        .map(|g| format!("      - {{ id: {}, address: \"{}\" }}\n", g.id, g.addr))
        .collect();
    let (addr, admin) = (free_addr(), free_addr());
    let yaml = format!(
        r#"listeners:
  - address: "{addr}"
    h2c: true
admin:
  address: "{admin}"
routes:
  - {{ host: "*", path_prefix: /, pool: grpc }}
pools:
  grpc:
    protocol: h2c
    persistence:
      - header: {{ name: X-Session-Id, ttl: 15m }}
    backends:
{list}"#
    );
    let lb = Limpet::start_with(&yaml, addr, admin).await;
    let mut homes = std::collections::HashSet::new();
    for u in 0..6 {
        let session = format!("user-{u}");
        let first = grpc_call(addr, &session, 4);
        assert_eq!(first.len(), 5, "{first:?}\n{}", lb.log_text());
        assert!(
            first.iter().all(|b| *b == first[0]),
            "{session} moved within its calls: {first:?}"
        );
        let again = grpc_call(addr, &session, 3);
        assert!(
            again.iter().all(|b| *b == first[0]),
            "{session}: {again:?} after {first:?}"
        );
        homes.insert(first[0].clone());
    }
    assert!(homes.len() > 1, "six sessions on one backend: {homes:?}");
    let listener = addr.to_string();
    assert!(
        lb.metric(&format!(
            r#"limpet_requests_total{{listener="{listener}",protocol="h2",tls="false"}}"#
        ))
        .await
            >= 24.0
    );
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a certificate for `name` signed by it (not a CA itself: a
/// self-signed CA certificate is rightly refused as a server's), by the openssl CLI.
/// Returns (CA certificate, server certificate, server key).
fn ca_and_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        &[
            &["req", "-x509", "-days", "30"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=limpet test CA",
            ],
        ]
        .concat(),
        dir,
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
                "-subj",
                &format!("/CN={name}"),
            ],
        ]
        .concat(),
        dir,
    );
    std::fs::write(
        dir.join("srv.ext"),
        format!("subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    sign(dir, "srv.csr", "srv.ext", "srv.pem");
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

/// Signs the request `csr` with the CA in `dir` (ca.pem, ca.key) for 30 days, with
/// the extensions in `ext`, into `out`.
fn sign(dir: &Path, csr: &str, ext: &str, out: &str) {
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            ext,
            "-out",
            out,
        ],
        dir,
    );
}

/// Waits (bounded) until the front's backend `tls-1` is up (1) or down (0).
async fn wait_backend_up(lb: &Limpet, want: f64) {
    let series = r#"limpet_backend_up{backend="tls-1",pool="web"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if lb.metric(series).await == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tls-1 never up={want}: {}",
            lb.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The front limpet's configuration: pool `web` to `backend` with `protocol` and `tls`.
fn front(addr: SocketAddr, admin: SocketAddr, backend: SocketAddr, protocol: &str, tls: &str) -> String {
    format!(
        r#"server:
  upstream_connect_timeout: 1s
listeners:
  - address: "{addr}"
admin:
  address: "{admin}"
routes:
  - {{ host: "*", path_prefix: /, pool: web }}
pools:
  web:
    protocol: {protocol}
    tls: {tls}
    health_check: {{ kind: http, path: /healthz, interval: 100ms, timeout: 1s, rise: 1, fall: 1 }}
    backends:
      - {{ id: tls-1, address: "{backend}" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_verified_tls_to_backends() {
    let dir = scratch();
    let (ca, pem, key) = ca_and_cert(&dir, "b.internal");
    let bs = backends("ut", 1).await;
    // The TLS backend: a second limpet terminating TLS in front of a demo backend.
    let (b_addr, b_admin) = (free_addr(), free_addr());
    let back = format!(
        r#"listeners:
  - address: "{b_addr}"
    tls: {{ cert: "{}", key: "{}" }}
admin:
  address: "{b_admin}"
routes:
  - {{ host: "*", path_prefix: /, pool: app }}
pools:
  app:
    backends:
{}"#,
        pem.display(),
        key.display(),
        backend_list(&bs)
    );
    let b = Limpet::start_with(&back, b_addr, b_admin).await;
    let tls_ok = format!("{{ sni: b.internal, ca: \"{}\" }}", ca.display());
    let (addr, admin) = (free_addr(), free_addr());
    let lb = Limpet::start_with(&front(addr, admin, b_addr, "h2", &tls_ok), addr, admin).await;
    let c = client();
    let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
    assert_eq!((r.status, r.backend.as_str()), (200, "ut-1"), "{}", lb.log_text());
    let over_h2 = format!(r#"limpet_requests_total{{listener="{b_addr}",protocol="h2",tls="true"}}"#);
    assert!(b.metric(&over_h2).await >= 1.0, "the backend saw no HTTP/2");
    // Health checks take the same path (TLS, HTTP/2).
    let checks = r#"limpet_health_check_total{backend="tls-1",pool="web",result="ok"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lb.metric(checks).await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "{}", lb.log_text());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // HTTP/1.1 over TLS.
    assert!(lb.reload(&front(addr, admin, b_addr, "h1", &tls_ok)).await);
    let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
    assert_eq!((r.status, r.backend.as_str()), (200, "ut-1"));
    let over_h1 = format!(r#"limpet_requests_total{{listener="{b_addr}",protocol="h1",tls="true"}}"#);
    assert!(b.metric(&over_h1).await >= 1.0, "the backend saw no HTTP/1.1");

    // A name the certificate does not carry fails verification: never served (502
    // from the failed handshake, or 503 once the health check has seen it too).
    let wrong = format!("{{ sni: other.internal, ca: \"{}\" }}", ca.display());
    assert!(lb.reload(&front(addr, admin, b_addr, "h1", &wrong)).await);
    let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
    assert!(r.status == 502 || r.status == 503, "{} {}", r.status, r.body);
    wait_backend_up(&lb, 0.0).await;
    // Turning verification off must be said in so many words.
    let (_, _, err) = check_config(&front(addr, admin, b_addr, "h1", "{ ca: \"x\" }"));
    assert!(
        err.contains("pools.web.tls.sni: is required while verify is on"),
        "{err}"
    );
    assert!(
        lb.reload(&front(addr, admin, b_addr, "h1", "{ verify: false }"))
            .await
    );
    wait_backend_up(&lb, 1.0).await;
    let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
    assert_eq!(
        (r.status, r.backend.as_str()),
        (200, "ut-1"),
        "{}\n{}",
        r.body,
        lb.log_text()
    );
}

/// A client certificate for `cn` signed by the CA `ca_and_cert` made in `dir`, with
/// extended key usage clientAuth. Returns (certificate, key).
fn client_cert(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let (pem, key) = (format!("{cn}.pem"), format!("{cn}.key"));
    let csr = format!("{cn}.csr");
    openssl(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ],
        dir,
    );
    std::fs::write(
        dir.join("client.ext"),
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    sign(dir, &csr, "client.ext", &pem);
    (dir.join(pem), dir.join(key))
}

/// An HTTPS backend (Python's ssl) that requires a client certificate from `client_ca`
/// and answers with the certificate's common name.
struct MtlsBackend {
    addr: SocketAddr,
    _process: Script,
}

impl MtlsBackend {
    fn start(cert: &Path, key: &Path, client_ca: &Path) -> MtlsBackend {
        let (process, line) = Script::start("tls/mtls_backend.py", &[cert, key, client_ca]);
        let port: u16 = line.parse().expect("the mTLS backend's port");
        MtlsBackend {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _process: process,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_to_backends_that_require_one() {
    let dir = scratch();
    let (ca, pem, key) = ca_and_cert(&dir, "b.internal");
    let (front_cert, front_key) = client_cert(&dir, "limpet-front");
    let backend = MtlsBackend::start(&pem, &key, &ca);
    let with_cert = format!(
        "{{ sni: b.internal, ca: \"{}\", client_cert: \"{}\", client_key: \"{}\" }}",
        ca.display(),
        front_cert.display(),
        front_key.display()
    );
    let (addr, admin) = (free_addr(), free_addr());
    let lb = Limpet::start_with(&front(addr, admin, backend.addr, "h1", &with_cert), addr, admin).await;
    wait_backend_up(&lb, 1.0).await;
    let c = client();
    let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
    assert_eq!(
        (r.status, r.backend.as_str()),
        (200, "limpet-front"),
        "{}\n{}",
        r.body,
        lb.log_text()
    );

    // Without a client certificate the backend refuses the handshake: the request is
    // not served and the health check takes the backend down.
    let without = format!("{{ sni: b.internal, ca: \"{}\" }}", ca.display());
    assert!(lb.reload(&front(addr, admin, backend.addr, "h1", &without)).await);
    wait_backend_up(&lb, 0.0).await;
    let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
    assert!(r.status == 502 || r.status == 503, "{} {}", r.status, r.body);

    // A certificate from another CA is refused the same way.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    ca_and_cert(&other, "unused");
    let (stranger, stranger_key) = client_cert(&other, "stranger");
    let foreign = format!(
        "{{ sni: b.internal, ca: \"{}\", client_cert: \"{}\", client_key: \"{}\" }}",
        ca.display(),
        stranger.display(),
        stranger_key.display()
    );
    assert!(
        lb.reload(&front(addr, admin, backend.addr, "h1", &with_cert))
            .await
    );
    wait_backend_up(&lb, 1.0).await;
    assert!(lb.reload(&front(addr, admin, backend.addr, "h1", &foreign)).await);
    // Checks made with the stranger's certificate fail (they would pass if it were
    // accepted): wait for two more failures, then the backend is down.
    let failed = r#"limpet_health_check_total{backend="tls-1",pool="web",result="fail"}"#;
    let before = lb.metric(failed).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lb.metric(failed).await < before + 2.0 {
        assert!(std::time::Instant::now() < deadline, "{}", lb.log_text());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    wait_backend_up(&lb, 0.0).await;
    let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
    assert!(r.status == 502 || r.status == 503, "{} {}", r.status, r.body);

    // And a reload back to the right certificate serves again.
    assert!(
        lb.reload(&front(addr, admin, backend.addr, "h1", &with_cert))
            .await
    );
    wait_backend_up(&lb, 1.0).await;
    let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
    assert_eq!((r.status, r.backend.as_str()), (200, "limpet-front"));
}
