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
    // The access log says the response was cut, not only its status.
    lb.wait_log("path=/download").await;
    let line = lb
        .log_text()
        .lines()
        .find(|l| l.contains("path=/download"))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("error=ConnectionClosed"), "{line}");
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

/// A client that reads slowly but steadily is never cut, however long the response
/// takes (second outside review: the stall timer saw no progress while the kernel's
/// megabytes of send buffer drained, and cut the download after `client_idle_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_steady_reader_gets_the_whole_response() {
    let bs = backends("ss", 1).await;
    let lb = PoolSpec::new(&bs)
        .server_key("client_idle_timeout: 2s")
        .start()
        .await;
    let total: usize = 20 << 20;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(
        format!("GET /download?bytes={total} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    // About 64 KB/s for three and a half timeouts, then the rest at full speed.
    let slow_until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < slow_until {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {got} bytes\n{}", lb.log_text());
        got += n;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rest = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(rest.is_ok());
    assert!(got > total, "got {got} of {total} body bytes\n{}", lb.log_text());
}

/// limpet's own 431 to a pipelined head closes the connection, as for any other head
/// (second outside review: the requests after it were served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_pipelined_head_closes_the_connection() {
    let bs = backends("op", 1).await;
    let lb = PoolSpec::new(&bs)
        .server_key("max_request_header_bytes: 16KiB")
        .start()
        .await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: app\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let mut request = String::new();
    request.push_str("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    request.push_str(&big);
    request.push_str("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    let (text, _) = raw_exchange(lb.addr, request.as_bytes()).await;
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &text[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["200", "431"], "{text:?}");
}
