//! Every kind of bad affinity cookie is a 2xx with a fresh pin (or a clear 4xx for
//! oversized headers): never a 5xx, never a crash, and each is counted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use limpet_affinity::{encode, Keyring, SigningKey};
use limpet_e2e::*;

fn ring(id: &str, secret: &[u8]) -> Keyring {
    Keyring::new(vec![SigningKey::new(id, secret).unwrap()]).unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cookies_get_a_fresh_pin_and_are_counted() {
    let bs = backends("b", 2).await;
    let lb = Limpet::start(&bs, "name: LIMPET, ttl: 15m", "").await;
    let c = client();
    let good = get(&c, &lb.url("/"), &[], "LIMPET").await.set_cookie.unwrap();
    let good_value = good.split_once('=').unwrap().1.to_string();
    let real = ring("k1", TEST_SECRET.as_bytes());
    let hour = Duration::from_secs(3600);

    let invalid: Vec<(&str, String)> = vec![
        ("malformed base64", "LIMPET=%%%not-base64%%%".into()),
        (
            "truncated",
            format!("LIMPET={}", &good_value[..good_value.len() / 2]),
        ),
        (
            "wrong signature",
            format!(
                "LIMPET={}",
                encode(&ring("k1", &[1u8; 32]), "web", "b-1", now(), hour)
            ),
        ),
        (
            "unknown key id",
            format!(
                "LIMPET={}",
                encode(&ring("old", TEST_SECRET.as_bytes()), "web", "b-1", now(), hour)
            ),
        ),
        (
            "backend id that does not exist",
            format!("LIMPET={}", encode(&real, "web", "gone", now(), hour)),
        ),
        (
            "other pool",
            format!("LIMPET={}", encode(&real, "api", "b-1", now(), hour)),
        ),
        ("empty value", "LIMPET=".into()),
    ];
    for (i, (what, cookie)) in invalid.iter().enumerate() {
        let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
        assert_eq!(r.status, 200, "{what}");
        assert!(r.set_cookie.is_some(), "{what}: no fresh pin");
        assert_eq!(lb.web_cookie_decisions("invalid").await, (i + 1) as f64, "{what}");
    }

    let expired = format!("LIMPET={}", encode(&real, "web", "b-1", now() - 7200, hour));
    let r = get(&c, &lb.url("/"), &[expired.as_bytes()], "LIMPET").await;
    assert_eq!((r.status, r.set_cookie.is_some()), (200, true));
    assert_eq!(lb.web_cookie_decisions("expired").await, 1.0);

    // Several Cookie headers: junk in one, the valid session in another → still a hit.
    let hits = lb.web_cookie_decisions("hit").await;
    let r = get(
        &c,
        &lb.url("/"),
        &[b"LIMPET=junk; a=b", good.as_bytes()],
        "LIMPET",
    )
    .await;
    assert_eq!((r.status, r.set_cookie.is_none()), (200, true));
    assert_eq!(lb.web_cookie_decisions("hit").await, hits + 1.0);

    // A 16 KiB cookie header is served with a fresh pin.
    let big = format!("pad={}; LIMPET=AAAA{}", "x".repeat(16 * 1024), "B".repeat(100));
    let r = get(&c, &lb.url("/"), &[big.as_bytes()], "LIMPET").await;
    assert_eq!((r.status, r.set_cookie.is_some()), (200, true));

    // Bytes that are not UTF-8 in the cookie header.
    let r = get(&c, &lb.url("/"), &[b"x=\xff\xfe; LIMPET=\xc3\x28\xa0"], "LIMPET").await;
    assert_eq!((r.status, r.set_cookie.is_some()), (200, true));

    // Oversized header block: a clear 431 from limpet, and the next client is fine.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nCookie: a={}\r\n\r\n",
        "y".repeat(80 * 1024)
    );
    assert_eq!(raw_status(lb.addr, huge.as_bytes()).await, 431);
    // Garbage instead of HTTP: a 4xx, never a crash.
    let status = raw_status(lb.addr, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n").await;
    assert!(status == 0 || (400..500).contains(&status), "{status}");
    let r = get(&c, &lb.url("/"), &[good.as_bytes()], "LIMPET").await;
    assert_eq!(r.status, 200);

    let mut total5 = 0.0;
    for b in ["b-1", "b-2"] {
        total5 += lb
            .metric(&format!(
                r#"limpet_backend_requests_total{{backend="{b}",code="5xx",pool="web"}}"#
            ))
            .await;
    }
    assert_eq!(total5, 0.0, "no bad input may cause a 5xx");
}

/// RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400 from limpet; HTTP/1.0
/// without Host stays allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_without_host_is_refused() {
    let bs = backends("nh", 1).await;
    let lb = Limpet::start(&bs, "name: LIMPET, ttl: 15m", "").await;
    assert_eq!(
        raw_status(lb.addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await,
        400
    );
    assert_eq!(
        lb.metric(r#"limpet_responses_total{code="400",pool="",reason="bad_request"}"#)
            .await,
        1.0
    );
    assert_eq!(raw_status(lb.addr, b"GET / HTTP/1.0\r\n\r\n").await, 200);
    assert_eq!(
        raw_status(
            lb.addr,
            b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
        )
        .await,
        200
    );
}

/// Pipelined requests (RFC 9112 §9.3.2) are answered in order on the same connection,
/// each routed and pinned like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bs = backends("pl", 2).await;
    let lb = Limpet::start(&bs, "name: LIMPET, ttl: 15m", "").await;
    let mut s = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    let mut burst = Vec::new();
    for i in 0..6 {
        let close = if i == 5 { "Connection: close\r\n" } else { "" };
        burst.extend_from_slice(
            format!(
                "GET /slow?ms={} HTTP/1.1\r\nHost: app\r\n{close}\r\n",
                20 * (6 - i)
            )
            .as_bytes(),
        );
    }
    s.write_all(&burst).await.unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert_eq!(
        text.matches("HTTP/1.1 200").count(),
        6,
        "{text}\n{}",
        lb.log_text()
    );
    // In order: the demo backend names the delay it was asked for.
    let delays: Vec<&str> = text
        .match_indices("slow ")
        .map(|(i, _)| text[i + 5..].split_whitespace().next().unwrap())
        .collect();
    assert_eq!(delays, ["120", "100", "80", "60", "40", "20"], "{text}");
}
