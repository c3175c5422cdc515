//! limpet at the edge, with real clients: curl over TLS with HTTP/1.1 and HTTP/2,
//! `openssl s_client` for SNI and for a connection held open across a certificate
//! swap, h2c with prior knowledge, the https redirect and HSTS. Certificates are made
//! by the openssl CLI in each test's scratch directory; no key is committed.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use limpet_e2e::*;

/// A self-signed ECDSA or RSA certificate for `names`; `org` tells versions apart.
fn cert(dir: &Path, file: &str, names: &[&str], rsa: bool, org: &str) -> (PathBuf, PathBuf) {
    let key = if rsa { Key::Rsa2048 } else { Key::EcdsaP256 };
    self_signed(dir, file, names, key, org)
}

/// The extra listeners and the route host of a [`config`].
struct Edge<'a> {
    /// YAML list items under `listeners:` after the TLS one.
    listeners: &'a str,
    host: &'a str,
}

const PLAIN: Edge<'static> = Edge {
    listeners: "",
    host: "*",
};

/// A configuration with a TLS listener over `certs`, the `edge` listeners, and pool
/// `web` with the standard cookie method.
fn config(
    tls: SocketAddr,
    admin: SocketAddr,
    certs: &[(PathBuf, PathBuf)],
    edge: &Edge<'_>,
    bs: &[Backend],
) -> String {
    let certs: String = certs
        .iter()
        .map(|(c, k)| {
            format!(
                "        - {{ cert: \"{}\", key: \"{}\" }}\n",
                c.display(),
                k.display()
            )
        })
        .collect();
    format!(
        r#"server:
  threads: 1
  grace_period: 5s
listeners:
  - address: "{tls}"
    tls:
      hsts: 180d
      certificates:
{certs}{extra}admin:
  address: "{admin}"
cookie_keys:
  - {{ id: k1, secret_env: LIMPET_TEST_KEY }}
routes:
  - {{ host: "{host}", path_prefix: /, pool: web }}
pools:
  web:
    persistence:
      - cookie: {{ name: LIMPET, ttl: 15m }}
    backends:
{}"#,
        backend_list(bs),
        extra = edge.listeners,
        host = edge.host,
    )
}

/// curl arguments that reach `addr` as `https://{name}` trusting `ca`.
fn via(name: &str, addr: SocketAddr, ca: &Path) -> (Vec<String>, String) {
    (
        vec![
            "--resolve".into(),
            format!("{name}:{}:127.0.0.1", addr.port()),
            "--cacert".into(),
            ca.display().to_string(),
        ],
        format!("https://{name}:{}/", addr.port()),
    )
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The subject line `openssl s_client` prints for a handshake with `sni` (none: no SNI).
fn subject(addr: SocketAddr, sni: Option<&str>) -> String {
    let mut c = Command::new("openssl");
    c.args(["s_client", "-connect", &addr.to_string()]);
    match sni {
        Some(name) => c.args(["-servername", name]),
        None => c.arg("-noservername"),
    };
    let out = c.stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_default()
        .to_string()
}

async fn start(yaml: &str, tls: SocketAddr, admin: SocketAddr) -> Limpet {
    // The harness waits for `addr` to accept; the TLS listener is the one asked.
    Limpet::start_with(yaml, tls, admin).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_speaks_h1_and_h2_picks_certificates_by_sni_and_keeps_users() {
    let dir = scratch();
    let a = cert(&dir, "a", &["a.test", "*.w.test"], false, "v1");
    let b = cert(&dir, "b", &["b.test"], true, "v1");
    let bs = backends("tl", 3).await;
    let (tls, admin) = (free_addr(), free_addr());
    let lb = start(
        &config(tls, admin, &[a.clone(), b.clone()], &PLAIN, &bs),
        tls,
        admin,
    )
    .await;

    // SNI: exact names, a wildcard, and the first certificate for no or unknown names.
    assert!(subject(tls, Some("b.test")).contains("CN = b.test"));
    assert!(subject(tls, Some("x.w.test")).contains("CN = a.test"));
    assert!(subject(tls, Some("unknown.test")).contains("CN = a.test"));
    assert!(subject(tls, None).contains("CN = a.test"));

    // Session resumption, TLS 1.3 (tickets) and TLS 1.2 (session ids).
    for (version, file) in [("-tls1_3", "s13.pem"), ("-tls1_2", "s12.pem")] {
        let session = dir.join(file);
        // The request and -ign_eof keep the client until the server closes, so that
        // a TLS 1.3 ticket always arrives before it leaves.
        let handshake = |arg: &str| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "printf 'GET / HTTP/1.1\\r\\nHost: a.test\\r\\nConnection: close\\r\\n\\r\\n' | openssl s_client -ign_eof {version} -connect {tls} -servername a.test {arg} {}",
                    session.display()
                ))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let first = handshake("-sess_out");
        assert!(first.contains("HTTP/1.1 200"), "{version}: {first}");
        let again = handshake("-sess_in");
        assert!(again.contains("\nReused, "), "{version}: no resumption:\n{again}");
    }

    let (a_args, a_url) = via("a.test", tls, &a.0);
    let h2 = curl(&[args(&a_args), vec!["--http2"]].concat(), &a_url);
    assert_eq!(
        (h2.version.as_str(), h2.status),
        ("HTTP/2", 200),
        "{}",
        lb.log_text()
    );
    assert_eq!(h2.header("strict-transport-security"), Some("max-age=15552000"));
    let set = h2.header("set-cookie").unwrap().to_string();
    assert!(set.contains("; Secure"), "secure: auto over TLS: {set}");
    let home = h2.header("x-backend-id").unwrap().to_string();
    let pin = set.split(';').next().unwrap().to_string();

    // The cookie triad over HTTP/2, the affinity cookie in its own Cookie field among
    // others (RFC 9113 §8.2.3), then HTTP/1.1 on the same listener.
    for _ in 0..3 {
        let again = curl(
            &[
                args(&a_args),
                vec![
                    "--http2",
                    "-H",
                    "cookie: theme=dark",
                    "-H",
                    &format!("cookie: {pin}"),
                    "-H",
                    "cookie: lang=en",
                ],
            ]
            .concat(),
            &a_url,
        );
        assert_eq!(again.version, "HTTP/2");
        assert_eq!(again.header("x-backend-id"), Some(home.as_str()));
        assert!(again.header("set-cookie").is_none());
    }
    let h1 = curl(
        &[args(&a_args), vec!["--http1.1", "-H", &format!("cookie: {pin}")]].concat(),
        &a_url,
    );
    assert_eq!(
        (h1.version.as_str(), h1.header("x-backend-id")),
        ("HTTP/1.1", Some(home.as_str()))
    );
    let forged = curl(
        &[args(&a_args), vec!["--http2", "-H", "cookie: LIMPET=forged"]].concat(),
        &a_url,
    );
    assert_eq!(forged.status, 200);
    assert!(forged
        .header("set-cookie")
        .is_some_and(|c| c.starts_with("LIMPET=")));
    assert_eq!(lb.web_cookie_decisions("invalid").await, 1.0);

    // limpet's own answers on a TLS listener carry HSTS too.
    let big = format!("x-big: {}", "b".repeat(70 * 1024));
    let refused = curl(&[args(&a_args), vec!["--http1.1", "-H", &big]].concat(), &a_url);
    assert_eq!(refused.status, 431);
    assert_eq!(
        refused.header("strict-transport-security"),
        Some("max-age=15552000")
    );

    // A WebSocket over TLS (HTTP/1.1, as browsers open it next to HTTP/2), pinned too.
    let ws = curl(
        &[
            args(&a_args),
            vec![
                "--http1.1",
                "--max-time",
                "2",
                "-H",
                "connection: Upgrade",
                "-H",
                "upgrade: websocket",
                "-H",
                "sec-websocket-version: 13",
                "-H",
                "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
                "-H",
                &format!("cookie: {pin}"),
            ],
        ]
        .concat(),
        &format!("{a_url}chat"),
    );
    assert_eq!((ws.status, ws.header("x-backend-id")), (101, Some(home.as_str())));

    // The backend learns the scheme and the client.
    let headers = curl(
        &[args(&a_args), vec!["--http2"]].concat(),
        &format!("{a_url}headers"),
    );
    assert!(
        headers.body.contains("x-forwarded-proto: https\n"),
        "{}",
        headers.body
    );
    assert!(
        headers.body.contains("forwarded: for=127.0.0.1;proto=https\n"),
        "{}",
        headers.body
    );

    let listener = tls.to_string();
    let h2_count = lb
        .metric(&format!(
            r#"limpet_requests_total{{listener="{listener}",protocol="h2",tls="true"}}"#
        ))
        .await;
    assert!(h2_count >= 6.0, "{h2_count}");
    assert_eq!(
        lb.metric(&format!(
            r#"limpet_requests_total{{listener="{listener}",protocol="h1",tls="true"}}"#
        ))
        .await,
        6.0, // four resumption probes, the HTTP/1.1 request and the WebSocket (the 431 was refused while read, before it was a request)
    );
    assert!(lb.log_text().contains("protocol=\"h2\"") || lb.log_text().contains("protocol=h2"));
}

/// A certificate swap by SIGHUP: a connection opened before keeps working on the old
/// certificate, new handshakes get the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_dropping_a_connection() {
    let dir = scratch();
    let v1 = cert(&dir, "v1", &["a.test"], false, "v1");
    let bs = backends("tr", 1).await;
    let (tls, admin) = (free_addr(), free_addr());
    let lb = start(&config(tls, admin, &[v1], &PLAIN, &bs), tls, admin).await;

    // A client that holds a TLS connection open, idle, across the reload.
    let mut held = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &tls.to_string(),
            "-servername",
            "a.test",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = held.stderr.take().unwrap();
    // -quiet prints the verify lines of the handshake on stderr: wait for the
    // subject of the old certificate.
    let seen_old = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let mut buf = [0u8; 512];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !text.contains("O = v1") && Instant::now() < deadline {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        text
    })
    .await
    .unwrap();
    assert!(seen_old.contains("O = v1"), "{seen_old}");

    let v2 = cert(&dir, "v2", &["a.test"], false, "v2");
    assert!(
        lb.reload(&config(tls, admin, &[v2], &PLAIN, &bs)).await,
        "{}",
        lb.log_text()
    );
    assert!(subject(tls, Some("a.test")).contains("O = v2"));

    // The old connection still carries a request.
    let mut stdin = held.stdin.take().unwrap();
    stdin
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut stdout = held.stdout.take().unwrap();
    let answer = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _ = held.kill();
    let _ = held.wait();
}

/// Bad certificate files never reach the TLS library: `--check` and a reload report
/// each with its path, and the running certificate keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_refused_by_check_and_by_reload() {
    let dir = scratch();
    let good = cert(&dir, "good", &["a.test"], false, "v1");
    let other = cert(&dir, "other", &["b.test"], true, "v1");
    let bs = backends("tb", 1).await;
    let (tls, admin) = (free_addr(), free_addr());
    let lb = start(
        &config(tls, admin, std::slice::from_ref(&good), &PLAIN, &bs),
        tls,
        admin,
    )
    .await;

    let cases = [
        (
            "missing",
            (dir.join("nope.pem"), good.1.clone()),
            "cannot read the certificate",
        ),
        (
            "mismatch",
            (good.0.clone(), other.1.clone()),
            "does not belong to the certificate",
        ),
        (
            "not pem",
            (good.1.clone(), good.1.clone()),
            "holds no PEM certificate",
        ),
    ];
    for (what, pair, message) in cases {
        let yaml = config(tls, admin, &[pair], &PLAIN, &bs);
        let (code, _, err) = check_config(&yaml);
        assert_eq!(code, 1, "{what}: {err}");
        assert!(
            err.contains("listeners[0].tls") && err.contains(message),
            "{what}: {err}"
        );
        assert!(!lb.reload(&yaml).await, "{what} was accepted by a reload");
        assert!(subject(tls, Some("a.test")).contains("CN = a.test"), "{what}");
    }
    assert!(lb.admin_get("/status").await.contains("listeners[0].tls"));

    // A certificate that covers none of the routes' hosts is a warning, not an error.
    let app = Edge {
        listeners: "",
        host: "app.test",
    };
    let (code, _, err) = check_config(&config(tls, admin, &[other], &app, &bs));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("no certificate covers any route's host (app.test)"),
        "{err}"
    );

    // An expired certificate, or one not valid yet, is a warning with its path, from
    // --check and from a reload, and is served as told (the operator may be mid-rotation).
    let expired = dated(&dir, "expired", "a.test", "20200101000000Z", "20200102000000Z");
    let early = dated(&dir, "early", "a.test", "20990101000000Z", "20990102000000Z");
    let cases = [
        (expired, "expired.pem expired", "expired"),
        (early, "early.pem is not valid yet", "early"),
    ];
    for (pair, message, what) in cases {
        let yaml = config(tls, admin, &[pair], &PLAIN, &bs);
        let (code, _, err) = check_config(&yaml);
        assert_eq!(code, 0, "{what}: {err}");
        assert!(
            err.contains("listeners[0].tls") && err.contains(message),
            "{what}: {err}"
        );
        assert!(lb.reload(&yaml).await, "{what} was refused by a reload");
        let log = lb.log_text();
        assert!(log.contains(message), "{what}: the reload did not warn: {log}");
    }
    assert!(subject(tls, Some("a.test")).contains("CN = a.test"));
}

/// A plain listener can send everyone to https, or speak cleartext HTTP/2 beside
/// HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_listeners_redirect_to_https_or_speak_h2c() {
    let dir = scratch();
    let a = cert(&dir, "a", &["a.test"], false, "v1");
    let bs = backends("tp", 1).await;
    let (tls, plain, h2c, admin) = (free_addr(), free_addr(), free_addr(), free_addr());
    let listeners = format!(
        "  - address: \"{plain}\"\n    redirect_https: true\n  - address: \"{h2c}\"\n    h2c: true\n"
    );
    let edge = Edge {
        listeners: &listeners,
        host: "*",
    };
    let lb = start(&config(tls, admin, &[a], &edge, &bs), tls, admin).await;
    let r = curl(&["-H", "host: a.test:80"], &format!("http://{plain}/cart?id=7"));
    assert_eq!(r.status, 308, "{}", lb.log_text());
    assert_eq!(r.header("location"), Some("https://a.test/cart?id=7"));
    assert_eq!(
        lb.metric(r#"limpet_responses_total{code="308",pool="",reason="https_redirect"}"#)
            .await,
        1.0
    );

    let prior = curl(&["--http2-prior-knowledge"], &format!("http://{h2c}/"));
    assert_eq!(
        (prior.version.as_str(), prior.status),
        ("HTTP/2", 200),
        "{}",
        lb.log_text()
    );
    let h1 = curl(&["--http1.1"], &format!("http://{h2c}/"));
    assert_eq!((h1.version.as_str(), h1.status), ("HTTP/1.1", 200));
    let set = prior.header("set-cookie").unwrap();
    assert!(
        !set.contains("Secure"),
        "plain http: no Secure under secure: auto"
    );
}
