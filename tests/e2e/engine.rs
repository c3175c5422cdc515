//! What the outside review of the HTTP/1 engine found: a replayed request body, a client
//! that stops reading, response trailers, a WebSocket client that half-closes, and the
//! answer to a stalled request body. Each test failed on the engine's first build.

use std::time::{Duration, Instant};

use limpet_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An idempotent request with a body, whose first backend closes before answering, goes
/// whole to the next backend (the first build panicked while replaying it: 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_with_a_body_is_replayed_whole() {
    let dying = raw_backend(|_| None).await;
    let bs = backends("rb", 1).await;
    let lb = PoolSpec::new(&bs)
        .backend("dying", dying.addr)
        .pool_key("passive_health: { max_fails: 1000, window: 10s, cooldown: 1s }")
        .start()
        .await;
    let c = client();
    for _ in 0..6 {
        let r = c
            .put(lb.url("/upload"))
            .body("twelve bytes")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", lb.log_text());
        assert_eq!(r.text().await.unwrap(), "12\n");
    }
    assert!(
        !dying.heads.lock().unwrap().is_empty(),
        "the dying backend was never tried"
    );
    assert!(!lb.log_text().contains("panicked"), "{}", lb.log_text());
}

/// A client that stops reading its response is closed after `client_idle_timeout`
/// without progress, and its backend connection and in-flight slot are released (as
/// HAProxy's `timeout client`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed() {
    let bs = backends("sr", 1).await;
    let lb = PoolSpec::new(&bs)
        .server_key("client_idle_timeout: 2s")
        .start()
        .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET /download?bytes=200000000 HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let in_flight = format!(r#"limpet_backend_in_flight{{backend="{}",pool="web"}}"#, bs[0].id);
    lb.wait_metric(&in_flight, |v| v == 1.0).await;
    let started = Instant::now();
    // Reads nothing: limpet's writes stall once the socket buffers are full.
    lb.wait_metric(&in_flight, |v| v == 0.0).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "released after {:?}",
        started.elapsed()
    );
    // The connection was closed: what the socket buffers held, then the end, long
    // before the 200 MB the response announced.
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let drained = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got += n;
        }
    })
    .await;
    assert!(drained.is_ok() && got < 100_000_000, "read {got} bytes");
}

/// Trailers a backend declares reach a client that accepts them (`Trailer` is no
/// hop-by-hop field).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_trailers_are_passed_on() {
    let rb = raw_backend(|_| {
        Some((
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n"
                .to_vec(),
            true,
        ))
    })
    .await;
    let lb = PoolSpec::new(&[]).backend("raw", rb.addr).start().await;
    let (text, _) = raw_exchange(
        lb.addr,
        b"GET / HTTP/1.1\r\nHost: app\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.contains("hello"), "{text:?}");
    assert!(text.to_ascii_lowercase().contains("x-sum: 42"), "{text:?}");
}

/// A WebSocket client that half-closes its side still gets what the backend sends after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_tunnel_still_carries_the_other_way() {
    let rb = raw_backend(|_| {
        Some((
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec(),
            true,
        ))
    })
    .await;
    let lb = PoolSpec::new(&[]).backend("raw", rb.addr).start().await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "{:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    // Data and the client's FIN at once: the backend's echo comes after the FIN.
    s.write_all(b"ping").await.unwrap();
    s.shutdown().await.unwrap();
    let (text, _) = until_closed(&mut s).await;
    assert_eq!(text, "ping", "{}", lb.log_text());
}

/// A client that stops sending its body is told so, not that its head was slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_as_such() {
    let bs = backends("sb", 1).await;
    let lb = PoolSpec::new(&bs)
        .server_key("upstream_read_timeout: 1s")
        .start()
        .await;
    let (text, _) = raw_exchange(
        lb.addr,
        b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(!text.contains("head"), "{text:?}");
}
