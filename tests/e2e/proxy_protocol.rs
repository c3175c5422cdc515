//! Behind an L4 balancer: PROXY protocol v1 and v2 on plain and TLS listeners, only from
//! trusted proxies. The address in the header is the client's for everything after
//! (X-Forwarded-For, `source_ip` affinity); a malformed header or an untrusted peer
//! closes the connection and is counted.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use limpet_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn yaml(
    plain: SocketAddr,
    tls: SocketAddr,
    admin: SocketAddr,
    trusted: &str,
    cert: &str,
    bs: &[Backend],
) -> String {
    format!(
        r#"server:
  trusted_proxies: [{trusted}]
listeners:
  - address: "{plain}"
    proxy_protocol: true
  - address: "{tls}"
    proxy_protocol: true
    tls: {cert}
admin:
  address: "{admin}"
routes:
  - {{ host: "*", path_prefix: /, pool: web }}
pools:
  web:
    persistence:
      - source_ip: {{ ttl: 15m }}
    backends:
{}"#,
        backend_list(bs)
    )
}

/// Reads one HTTP/1.1 response (head and a Content-Length body) from `s`; `None` when
/// the connection closes first.
async fn response(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&buf[..end + 4 + len]).to_string());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("no answer within 10 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

const GET_HEADERS: &[u8] = b"GET /headers HTTP/1.1\r\nHost: app\r\n\r\n";

fn v2(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&ip);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_from_trusted_peers_name_the_client() {
    let dir = scratch();
    let (pem, key) = self_signed(&dir, "app", &["app.test"], Key::EcdsaP256, "limpet");
    let cert = format!("{{ cert: \"{}\", key: \"{}\" }}", pem.display(), key.display());
    let bs = backends("pp", 3).await;
    let (plain, tls, admin) = (free_addr(), free_addr(), free_addr());
    let lb = Limpet::start_with(&yaml(plain, tls, admin, "127.0.0.1", &cert, &bs), plain, admin).await;

    // v1, then a second request on the same connection: the header came once.
    let mut s = TcpStream::connect(plain).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n")
        .await
        .unwrap();
    s.write_all(GET_HEADERS).await.unwrap();
    let first = response(&mut s).await.expect("an answer");
    assert!(
        first.contains("x-forwarded-for: 203.0.113.7\r\n")
            || first.contains("x-forwarded-for: 203.0.113.7\n"),
        "{first}"
    );
    s.write_all(GET_HEADERS).await.unwrap();
    let second = response(&mut s).await.expect("a second answer");
    assert!(second.contains("203.0.113.7"), "{second}");
    let home = |r: &str| {
        r.lines()
            .find_map(|l| l.strip_prefix("x-backend-id: "))
            .map(|v| v.trim().to_string())
            .unwrap()
    };
    assert_eq!(home(&first), home(&second));

    // v2 from another client: its own session, pinned by its address.
    let mut homes = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(plain).await.unwrap();
        s.write_all(&v2([198, 51, 100, 9], 4444)).await.unwrap();
        s.write_all(GET_HEADERS).await.unwrap();
        let r = response(&mut s).await.expect("an answer");
        assert!(r.contains("198.51.100.9"), "{r}");
        homes.push(home(&r));
    }
    assert!(homes.iter().all(|h| *h == homes[0]), "{homes:?}");
    assert_eq!(
        lb.web_decisions("source_ip", "new").await,
        2.0,
        "one session per PROXY client"
    );
    assert_eq!(lb.web_decisions("source_ip", "hit").await, 3.0);

    // No header: the connection is closed without an answer, and counted.
    let mut s = TcpStream::connect(plain).await.unwrap();
    s.write_all(GET_HEADERS).await.unwrap();
    assert!(response(&mut s).await.is_none());
    let refused = format!(r#"limpet_proxy_protocol_refused_total{{listener="{plain}",reason="malformed"}}"#);
    assert_eq!(lb.metric(&refused).await, 1.0);

    // Before TLS: curl sends a v1 header, then the handshake.
    let ok = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--haproxy-protocol",
            "--cacert",
        ])
        .arg(&pem)
        .args(["--resolve", &format!("app.test:{}:127.0.0.1", tls.port())])
        .arg(format!("https://app.test:{}/", tls.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "200", "{}", lb.log_text());
    let without = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "--cacert",
        ])
        .arg(&pem)
        .args(["--resolve", &format!("app.test:{}:127.0.0.1", tls.port())])
        .arg(format!("https://app.test:{}/", tls.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&without.stdout), "000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_from_untrusted_peers_are_refused() {
    let bs = backends("pu", 1).await;
    let (plain, tls, admin) = (free_addr(), free_addr(), free_addr());
    let dir = scratch();
    let (pem, key) = self_signed(&dir, "app", &["app.test"], Key::EcdsaP256, "limpet");
    let cert = format!("{{ cert: \"{}\", key: \"{}\" }}", pem.display(), key.display());
    let lb = Limpet::start_with(&yaml(plain, tls, admin, "10.0.0.0/8", &cert, &bs), plain, admin).await;
    let mut s = TcpStream::connect(plain).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n")
        .await
        .unwrap();
    // limpet may already have closed the connection (a reset): nothing to write to.
    let _ = s.write_all(GET_HEADERS).await;
    assert!(
        response(&mut s).await.is_none(),
        "a spoofed client address was served"
    );
    let refused = format!(r#"limpet_proxy_protocol_refused_total{{listener="{plain}",reason="untrusted"}}"#);
    assert_eq!(lb.metric(&refused).await, 1.0);
}

/// The PROXY header is under `client_idle_timeout` from accept, as a request is: a
/// peer that sends nothing, or stalls in the middle of its header, trusted or not, is
/// closed, and frees its `max_connections` slot. On a TLS listener the handshake must
/// start by the same deadline after the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_stalled_proxy_header_is_closed_after_the_idle_timeout() {
    let dir = scratch();
    let (pem, key) = self_signed(&dir, "app", &["app.test"], Key::EcdsaP256, "limpet");
    let cert = format!("{{ cert: \"{}\", key: \"{}\" }}", pem.display(), key.display());
    let bs = backends("ps", 1).await;
    for trusted in ["127.0.0.1", "10.0.0.0/8"] {
        let (plain, tls, admin) = (free_addr(), free_addr(), free_addr());
        let yaml = yaml(plain, tls, admin, trusted, &cert, &bs).replacen(
            "server:\n",
            "server:\n  client_idle_timeout: 2s\n  request_header_timeout: 2s\n",
            1,
        );
        let lb = Limpet::start_with(&yaml, plain, admin).await;
        let stalls: [(SocketAddr, &[u8]); 5] = [
            (plain, b""),
            (plain, b"PROXY TCP4 "),
            (tls, b"PROXY TCP4 "),
            // A whole header, then no handshake.
            (tls, b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 80\r\n"),
            (plain, b"\r\n\r\n\0\r\nQUIT\n"),
        ];
        for (addr, sent) in stalls {
            let (text, took) = raw_exchange(addr, sent).await;
            assert!(
                text.is_empty() && took < Duration::from_secs(6),
                "trusted {trusted}, sent {sent:?}: {text:?}, closed after {took:?}\n{}",
                lb.log_text()
            );
        }
        let open = format!(r#"limpet_client_connections{{listener="{plain}"}}"#);
        assert_eq!(lb.metric(&open).await, 0.0, "trusted {trusted}");
    }
}
