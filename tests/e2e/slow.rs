//! Slow and idle clients: the whole request head must arrive within
//! `server.request_header_timeout` (else 408 and close), a connection must start a
//! request within `client_idle_timeout` (from accept, and between kept-alive requests),
//! and neither limit touches a slow request body.

use std::time::{Duration, Instant};

use limpet_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(bs: &[Backend]) -> Limpet {
    PoolSpec::new(bs)
        .cookie()
        .server_key("request_header_timeout: 1s")
        .server_key("client_idle_timeout: 2s")
        .start()
        .await
}

/// Sends `head` one byte every 150 ms on `s` and reads until the connection closes:
/// every read succeeds, the head never completes in time. Returns what came back and
/// how long it took.
async fn trickle(s: &mut TcpStream, head: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    let (mut r, mut w) = s.split();
    let trickle = async {
        for b in head.iter() {
            if w.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    let (_, (text, _)) = tokio::join!(trickle, until_closed(&mut r));
    (text, started.elapsed())
}

const SLOW_HEAD: &[u8] =
    b"GET / HTTP/1.1\r\nHost: app\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_sent_byte_by_byte_gets_408() {
    let bs = backends("sl", 1).await;
    let lb = start(&bs).await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    let (text, took) = trickle(&mut s, SLOW_HEAD).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}\n{}", lb.log_text());
    assert!(
        text.contains("cache-control: no-store") && text.contains("limpet: "),
        "{text}"
    );
    assert!(took < Duration::from_secs(6), "closed after {took:?}");
    assert_eq!(
        lb.metric(r#"limpet_responses_total{code="408",pool="",reason="request_timeout"}"#)
            .await,
        1.0
    );
}

/// The head deadline holds for every request of a kept-alive connection, not only for
/// its first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_head_on_a_kept_alive_connection_has_the_same_deadline() {
    let bs = backends("sk", 1).await;
    let lb = start(&bs).await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    // The demo backend's answer ends with its body's last line.
    while !String::from_utf8_lossy(&first).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after the first request");
        first.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&first).starts_with("HTTP/1.1 200"));
    let (text, took) = trickle(&mut s, SLOW_HEAD).await;
    assert!(text.contains("HTTP/1.1 408"), "{text:?}\n{}", lb.log_text());
    assert!(took < Duration::from_secs(6), "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_after_client_idle_timeout() {
    let bs = backends("si", 1).await;
    let lb = start(&bs).await;
    // Never sends a request.
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    let (text, took) = until_closed(&mut s).await;
    assert!(text.is_empty(), "{text:?}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );

    // Kept alive between requests within the limit, and a slow body is not cut.
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for b in b"0123456789" {
        tokio::time::sleep(Duration::from_millis(250)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let (text, _) = until_closed(&mut s).await;
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "a slow body was cut: {text:?}\n{}",
        lb.log_text()
    );
}

/// A request head above `max_request_header_bytes` is refused with 431 as soon as the
/// limit is passed, even when it never ends (nothing more of it is buffered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_unfinished_head_gets_431_at_once() {
    let bs = backends("so", 1).await;
    let lb = PoolSpec::new(&bs)
        .server_key("max_request_header_bytes: 16KiB")
        .start()
        .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nX-Big: ")
        .await
        .unwrap();
    // 40 KiB of one header, never finished: the connection stays open from our side.
    let _ = s.write_all(&[b'a'; 40 * 1024]).await;
    let (text, took) = until_closed(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text:?}\n{}", lb.log_text());
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert_eq!(
        lb.metric(r#"limpet_responses_total{code="431",pool="",reason="header_too_large"}"#)
            .await,
        1.0
    );
    // A head within the limit is served.
    let r = get(&client(), &lb.url("/"), &[], "LIMPET").await;
    assert_eq!(r.status, 200);
}

/// A backend response head above `max_response_header_bytes` is a 502 from limpet, not
/// passed through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_head_is_a_502() {
    let bs = backends("sr", 1).await;
    let lb = PoolSpec::new(&bs)
        .server_key("max_request_header_bytes: 256KiB")
        .server_key("max_response_header_bytes: 16KiB")
        .start()
        .await;
    let c = client();
    // The demo backend echoes x-set-cookie as Set-Cookie: a 30 KiB response head.
    let big = format!("a={}", "b".repeat(30 * 1024));
    let r = c
        .get(lb.url("/"))
        .header("x-set-cookie", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().starts_with("limpet: "));
    assert_eq!(
        lb.metric(r#"limpet_responses_total{code="502",pool="web",reason="response_header_too_large"}"#)
            .await,
        1.0
    );
    let small = c
        .get(lb.url("/"))
        .header("x-set-cookie", "a=b")
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
}

/// Above a listener's max_connections new connections are closed at once and counted;
/// the open ones keep being served, and a slot that frees up is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_max_connections_are_closed_at_once() {
    let bs = backends("mc", 1).await;
    // The harness probes the first listener; the limited one is only ours.
    let (probe, addr, admin) = (free_addr(), free_addr(), free_addr());
    let yaml = format!(
        "listeners:\n  - address: \"{probe}\"\n  - address: \"{addr}\"\n    max_connections: 2\nadmin:\n  address: \"{admin}\"\nroutes:\n  - {{ host: \"*\", path_prefix: /, pool: web }}\npools:\n  web:\n    backends:\n{}",
        backend_list(&bs)
    );
    let lb = Limpet::start_with(&yaml, probe, admin).await;
    let open = format!(r#"limpet_client_connections{{listener="{addr}"}}"#);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    while lb.metric(&open).await != 2.0 {
        assert!(Instant::now() < deadline, "{}", lb.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    let (text, took) = until_closed(&mut third).await;
    assert!(
        text.is_empty() && took < Duration::from_secs(3),
        "{text:?} after {took:?}"
    );
    assert_eq!(
        lb.metric(&format!(
            r#"limpet_connections_refused_total{{listener="{addr}"}}"#
        ))
        .await,
        1.0
    );
    assert!(lb.log_text().contains("max_connections reached"));
    // An open connection is still served.
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (text, _) = until_closed(&mut first).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    while lb.metric(&open).await != 1.0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = TcpStream::connect(addr).await.unwrap();
    again
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (text, _) = until_closed(&mut again).await;
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "a freed slot is used again: {text:?}"
    );
}

/// A pipelined request that was read with the one before it and takes longer than
/// `client_idle_timeout` at its backend is answered, not cut as an idle connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pipelined_request_is_not_idle() {
    let bs = backends("sp", 1).await;
    let lb = PoolSpec::new(&bs)
        .server_key("client_idle_timeout: 1s")
        .start()
        .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: app\r\n\r\nGET /slow?ms=1600 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let (text, _) = until_closed(&mut s).await;
    assert_eq!(
        text.matches("HTTP/1.1 200").count(),
        2,
        "{text}\n{}",
        lb.log_text()
    );
    assert!(text.contains("slow 1600"));
}
