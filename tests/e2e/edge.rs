//! The HTTP/1 edge against what a hostile or odd client or backend does: where a request
//! head ends, pipelined heads, half-closed clients, interim responses, upgrades other
//! than WebSocket, truncated responses, and backends that reset a request before
//! answering it. Each test is one defect an outside review reproduced.

use std::time::{Duration, Instant};

use limpet_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads from `s` until the connection closes or `until` appears in what came back.
async fn read_until(s: &mut TcpStream, until: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while !String::from_utf8_lossy(&out).contains(until) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Defect 2: a head ending in bare `\n\n` (which the parser accepts) is a complete head
/// for the deadlines too: a slow response is not cut by a 408, and a large body is not
/// taken for a large head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_ending_in_bare_newlines_is_complete() {
    let bs = backends("bl", 1).await;
    let lb = PoolSpec::new(&bs)
        .server_key("request_header_timeout: 1s")
        .server_key("max_request_header_bytes: 16KiB")
        .start()
        .await;
    let (text, _) = raw_exchange(
        lb.addr,
        b"GET /slow?ms=2200 HTTP/1.1\nHost: app\nConnection: close\n\n",
    )
    .await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("slow 2200") && !text.contains("408"),
        "{text:?}\n{}",
        lb.log_text()
    );

    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    let body = vec![b'x'; 100 * 1024];
    s.write_all(
        format!(
            "POST /upload HTTP/1.1\nHost: app\nContent-Length: {}\nConnection: close\n\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(&body).await.unwrap();
    let (text, _) = until_closed(&mut s).await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("102400"),
        "{text:?}\n{}",
        lb.log_text()
    );
}

/// Defect 6: a pipelined request's head is under `request_header_timeout` and
/// `max_request_header_bytes` like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_head_has_the_same_deadline_and_limit() {
    let bs = backends("pd", 1).await;
    let lb = PoolSpec::new(&bs)
        .server_key("request_header_timeout: 1s")
        .server_key("max_request_header_bytes: 16KiB")
        .start()
        .await;
    // The second head starts in the same write as the first request, then trickles.
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\nGET / HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut r, mut w) = s.split();
    let trickle = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if w.write_all(b"X-Slow: a\r\n").await.is_err() {
                return;
            }
        }
    };
    let (_, (text, _)) = tokio::join!(trickle, until_closed(&mut r));
    let took = started.elapsed();
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(
        text.contains("HTTP/1.1 408") && took < Duration::from_secs(6),
        "closed after {took:?}: {text:?}\n{}",
        lb.log_text()
    );

    // A pipelined head that never ends is refused once it passes the limit.
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\nGET / HTTP/1.1\r\nHost: app\r\nX-Big: ")
        .await
        .unwrap();
    let _ = s.write_all(&[b'a'; 40 * 1024]).await;
    let (text, took) = until_closed(&mut s).await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("HTTP/1.1 431") && took < Duration::from_secs(5),
        "after {took:?}: {text:?}\n{}",
        lb.log_text()
    );
}

/// Defect 9: a client that half-closes after its request still gets the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_gets_its_response() {
    let bs = backends("hc", 1).await;
    let lb = PoolSpec::new(&bs).cookie().start().await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET /slow?ms=300 HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let (text, _) = until_closed(&mut s).await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("slow 300"),
        "{text:?}\n{}",
        lb.log_text()
    );
}

/// Defect 8: an interim `100 Continue` is passed on as it is; only the final response
/// gets the cookie and the debug header, and the session starts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_get_no_cookie() {
    let bs = backends("ic", 1).await;
    let lb = PoolSpec::new(&bs)
        .cookie()
        .server_key("debug_headers: true")
        .start()
        .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = read_until(&mut s, "\r\n\r\n").await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim:?}");
    s.write_all(b"hello").await.unwrap();
    let (rest, _) = until_closed(&mut s).await;
    let text = interim + &rest;
    let (head100, fin) = text.split_once("\r\n\r\n").unwrap();
    let lower = head100.to_ascii_lowercase();
    assert!(
        !lower.contains("set-cookie")
            && !lower.contains("x-limpet-backend")
            && !lower.contains("cache-control"),
        "the 100 was decorated: {head100:?}"
    );
    assert!(fin.starts_with("HTTP/1.1 200"), "{fin:?}");
    assert_eq!(
        fin.to_ascii_lowercase().matches("set-cookie: limpet=").count(),
        1,
        "{fin:?}"
    );
    assert!(fin.to_ascii_lowercase().contains("x-limpet-backend"), "{fin:?}");
    assert_eq!(lb.web_sessions_started("cookie").await, 1.0);
    let sessions = lb
        .metric(&format!(
            r#"limpet_backend_sessions{{backend="{}",pool="web"}}"#,
            bs[0].id
        ))
        .await;
    assert_eq!(sessions, 1.0, "one session, not two");
}

/// Defect 4: only WebSocket upgrades are tunnelled. `Upgrade: h2c` (and any other
/// protocol) is taken out and the request proxied as a plain one, so no raw bytes reach
/// a backend outside a routed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrades_are_not_tunnelled() {
    // Switches protocols for anything that asks.
    let rb = raw_backend(|head| {
        if head.to_ascii_lowercase().contains("upgrade:") {
            Some((
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec(),
                true,
            ))
        } else {
            Some((
                b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nplain\n".to_vec(),
                true,
            ))
        }
    })
    .await;
    let lb = PoolSpec::new(&[]).backend("raw", rb.addr).start().await;
    for proto in ["h2c", "foo/1"] {
        let request = format!(
            "GET / HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: {proto}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: internal\r\nConnection: close\r\n\r\n"
        );
        let (text, _) = raw_exchange(lb.addr, request.as_bytes()).await;
        assert!(
            text.starts_with("HTTP/1.1 200") && !text.contains(" 101 "),
            "{proto}: {text:?}\n{}",
            lb.log_text()
        );
    }
    let heads = rb.heads.lock().unwrap().clone();
    for h in &heads {
        let lower = h.to_ascii_lowercase();
        assert!(
            !lower.contains("upgrade") && !lower.contains("http2-settings"),
            "{h}"
        );
    }
    // The second request of each connection was routed like any other: its head has
    // limpet's forwarding headers.
    let smuggled: Vec<_> = heads.iter().filter(|h| h.contains("/smuggled")).collect();
    assert_eq!(smuggled.len(), 2, "{heads:?}");
    assert!(smuggled
        .iter()
        .all(|h| h.to_ascii_lowercase().contains("x-forwarded-for")));
}

/// Defect 7: a backend that refuses an upgrade and then dies mid-body does not make
/// the truncated response look complete, and passive health counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_response_to_a_refused_upgrade_is_not_completed() {
    let rb = raw_backend(|_| {
        Some((
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
            false,
        ))
    })
    .await;
    let lb = PoolSpec::new(&[])
        .backend("raw", rb.addr)
        .pool_key("passive_health: { max_fails: 1, window: 10s, cooldown: 30s }")
        .start()
        .await;
    let upgrade: &[u8] = b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (text, _) = raw_exchange(lb.addr, upgrade).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text:?}");
    assert!(text.contains("hello"), "{text:?}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the truncated body was given an end: {text:?}"
    );
    // Published by the health service's next tick.
    lb.wait_metric(r#"limpet_backend_up{backend="raw",pool="web"}"#, |v| v == 0.0)
        .await;
}

/// Point 6: a backend that closes a request's connection before sending a byte of its
/// response costs no idempotent request an error: it is retried on another backend and
/// counted. A request whose body reached the backend is not retried, nor is one whose
/// response had begun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_resets_before_answering_is_retried_elsewhere() {
    let dying = raw_backend(|_| None).await;
    let bs = backends("rt", 1).await;
    let lb = PoolSpec::new(&bs)
        .backend("dying", dying.addr)
        .pool_key("passive_health: { max_fails: 1000, window: 10s, cooldown: 1s }")
        .start()
        .await;
    let c = client();
    for _ in 0..8 {
        let r = c.get(lb.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", lb.log_text());
    }
    assert!(
        !dying.heads.lock().unwrap().is_empty(),
        "the dying backend was never tried"
    );
    let retried = lb
        .metric(r#"limpet_backend_retries_total{backend="dying",pool="web"}"#)
        .await;
    assert_eq!(
        retried as usize,
        dying.heads.lock().unwrap().len(),
        "{}",
        lb.log_text()
    );
    // A retry is counted, not a warning: a dying backend under load must not fill the
    // log.
    assert!(!lb.log_text().contains("retry: true"), "{}", lb.log_text());
    // A POST whose body was sent is not replayed: it may have been acted on.
    let mut failed = 0;
    for _ in 0..4 {
        let r = c.post(lb.url("/upload")).body("data").send().await.unwrap();
        if r.status() == 502 {
            failed += 1;
        } else {
            assert_eq!(r.status(), 200);
        }
    }
    assert!(failed > 0, "no POST reached the dying backend");

    // A response that had begun is never retried.
    let half = raw_backend(|_| Some((b"HTTP/1.1 200 OK\r\nContent-Le".to_vec(), false))).await;
    let bs2 = backends("rh", 1).await;
    let lb = PoolSpec::new(&bs2).backend("half", half.addr).start().await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(c.get(lb.url("/")).send().await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&502), "{statuses:?}");
    assert_eq!(
        lb.metric(r#"limpet_backend_retries_total{backend="half",pool="web"}"#)
            .await,
        0.0
    );
}

/// Every `Cache-Control` line of a response that gets a cookie is read, not only the
/// first: a `no-store` on a second line stays, and a `max-age` is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cache_control_line_is_read_before_a_cookie_is_added() {
    let rb = raw_backend(|head| {
        let lines = if head.contains("/nostore") {
            "Cache-Control: public\r\nCache-Control: no-store\r\n"
        } else {
            "Cache-Control: public\r\nCache-Control: max-age=60\r\n"
        };
        Some((
            format!("HTTP/1.1 200 OK\r\n{lines}Content-Length: 3\r\n\r\nok\n").into_bytes(),
            true,
        ))
    })
    .await;
    let lb = PoolSpec::new(&[]).backend("raw", rb.addr).cookie().start().await;
    let c = client();
    let r = c.get(lb.url("/nostore")).send().await.unwrap();
    assert!(r.headers().get("set-cookie").is_some());
    let cc: Vec<_> = r
        .headers()
        .get_all("cache-control")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(cc.iter().any(|v| v.contains("no-store")), "{cc:?}");
    let r = c.get(lb.url("/maxage")).send().await.unwrap();
    assert!(r.headers().get("set-cookie").is_some());
    let cc: Vec<_> = r
        .headers()
        .get_all("cache-control")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cc, ["private, max-age=60"], "{cc:?}");
}

/// Point 6, as users meet it: a backend killed under load, with requests in flight on
/// it, costs no GET a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_load_costs_no_get_an_error() {
    let mut bs = backends("kl", 3).await;
    let lb = PoolSpec::new(&bs).start().await;
    let url = lb.url("/slow?ms=300");
    let users: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let c = client();
                let mut statuses = Vec::new();
                for _ in 0..6 {
                    statuses.push(c.get(&url).send().await.map_or(0, |r| r.status().as_u16()));
                }
                statuses
            })
        })
        .collect();
    // Kill one backend once requests are in flight on it.
    let in_flight = format!(r#"limpet_backend_in_flight{{backend="{}",pool="web"}}"#, bs[0].id);
    lb.wait_metric(&in_flight, |v| v >= 1.0).await;
    bs.remove(0).kill().await;
    for u in users {
        let statuses = u.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "{statuses:?}\n{}",
            lb.log_text()
        );
    }
}

/// A client that stops sending its request body is the client's fault: it gets a 408
/// once the backend's wait runs out, and the backend is neither blamed nor taken out
/// by passive health (outside review: two such clients emptied a pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_its_body_does_not_eject_the_backend() {
    let bs = backends("cs", 1).await;
    let lb = PoolSpec::new(&bs)
        .server_key("upstream_read_timeout: 1s")
        .pool_key("passive_health: { max_fails: 2, window: 30s, cooldown: 30s }")
        .start()
        .await;
    for _ in 0..2 {
        let mut s = TcpStream::connect(lb.addr).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nab")
            .await
            .unwrap();
        let answer = read_until(&mut s, "\r\n\r\n").await;
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "{answer:?}\n{}",
            lb.log_text()
        );
    }
    let r = client().get(lb.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", lb.log_text());
    assert!(
        !lb.log_text().contains("taken out of rotation"),
        "{}",
        lb.log_text()
    );
    assert_eq!(
        lb.metric(r#"limpet_responses_total{code="408",pool="web",reason="request_timeout"}"#)
            .await,
        2.0
    );
}

/// Retries on a reused backend connection (one the backend may have closed while idle)
/// are bounded by `retries` and counted like any other: a backend that takes requests
/// and drops them does not get the same GET once per pooled connection (outside review:
/// 11 sends with `retries: 0`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_reused_connections_are_bounded() {
    let rb = raw_backend(|head| {
        if head.starts_with("GET /drop") {
            None
        } else {
            Some((b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n".to_vec(), true))
        }
    })
    .await;
    let lb = PoolSpec::new(&[])
        .backend("raw", rb.addr)
        .pool_key("retries: 0")
        .start()
        .await;
    // Four concurrent requests leave four pooled connections to the backend.
    let c = client();
    let warm: Vec<_> = (0..4)
        .map(|_| {
            let (c, url) = (c.clone(), lb.url("/wait"));
            tokio::spawn(async move { c.get(url).send().await.unwrap().status() })
        })
        .collect();
    for w in warm {
        assert_eq!(w.await.unwrap(), 200);
    }
    let r = c.get(lb.url("/drop")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let sent = rb
        .heads
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.starts_with("GET /drop"))
        .count();
    assert_eq!(
        sent, 1,
        "retries: 0, yet the backend got the request {sent} times"
    );
}

/// A backend that switches protocols for a request that asked for no upgrade (h2c's
/// `Upgrade` was taken out, or there was none) answered wrongly: the client gets a
/// 502, never a 101 followed by nothing (outside review: a 101, then a 504 on the same
/// connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_switch_of_protocols_is_a_502() {
    let rb = raw_backend(|_| {
        Some((
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n".to_vec(),
            false,
        ))
    })
    .await;
    let lb = PoolSpec::new(&[]).backend("raw", rb.addr).start().await;
    for extra in [
        "",
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n",
    ] {
        let (text, took) = raw_exchange(
            lb.addr,
            format!("GET / HTTP/1.1\r\nHost: app\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            text.starts_with("HTTP/1.1 502") && !text.contains(" 101 ") && took < Duration::from_secs(5),
            "{text:?} after {took:?}\n{}",
            lb.log_text()
        );
    }
}

/// A response body with a `Content-Length` that the backend sends slowly streams to the
/// client as it comes, head first, as a chunked one does (outside review: nothing
/// reached the client until about 1.4 KB had gathered or the body ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_content_length_body_streams() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 800\r\n\r\n")
                    .await;
                for _ in 0..8 {
                    if s.write_all(&[b'x'; 100]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
        }
    });
    let lb = PoolSpec::new(&[]).backend("slow", addr).start().await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let first = read_until(&mut s, "xxxxx").await;
    let took = started.elapsed();
    assert!(
        first.starts_with("HTTP/1.1 200") && took < Duration::from_millis(1200),
        "first body bytes after {took:?}: {first:?}"
    );
    let (rest, _) = until_closed(&mut s).await;
    assert_eq!((first + &rest).matches('x').count(), 800);
    backend.abort();
}

/// No interim response reaches an HTTP/1.0 client, which would take a `103 Early Hints`
/// for the answer (RFC 9110 §15.2; outside review). limpet's HTTP/1 engine passes on no
/// `103` at all (as Envoy by default): only the final response, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_interim_response_reaches_an_http10_client() {
    let rb = raw_backend(|_| {
        Some((
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
                .to_vec(),
            false,
        ))
    })
    .await;
    let lb = PoolSpec::new(&[]).backend("raw", rb.addr).start().await;
    for (version, interim) in [("1.0", false), ("1.1", false)] {
        let (text, _) = raw_exchange(
            lb.addr,
            format!("GET / HTTP/{version}\r\nHost: app\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(text.contains(" 103 "), interim, "HTTP/{version}: {text:?}");
        assert!(
            text.contains(" 200 ") && text.ends_with("ok\n"),
            "HTTP/{version}: {text:?}"
        );
    }
}

/// An interim response is a byte of the backend's answer: a backend that sends a `103`
/// and then closes is not retried elsewhere, since the client already saw its hints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_after_an_interim_response() {
    let rb = raw_backend(|_| {
        Some((
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n".to_vec(),
            false,
        ))
    })
    .await;
    let bs = backends("ir", 1).await;
    let lb = PoolSpec::new(&bs).backend("hints", rb.addr).start().await;
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(c.get(lb.url("/")).send().await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&502), "{statuses:?}\n{}", lb.log_text());
    assert_eq!(
        lb.metric(r#"limpet_backend_retries_total{backend="hints",pool="web"}"#)
            .await,
        0.0
    );
}

/// Requests pipelined before the client's FIN are all answered, in order, and the
/// connection closes after the last (outside review: only the first was answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_before_a_half_close_are_all_answered() {
    let bs = backends("ph", 1).await;
    let lb = PoolSpec::new(&bs).start().await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET /slow?ms=200 HTTP/1.1\r\nHost: app\r\n\r\nGET /slow?ms=201 HTTP/1.1\r\nHost: app\r\n\r\nGET /slow?ms=202 HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let (text, took) = until_closed(&mut s).await;
    assert_eq!(
        text.matches("HTTP/1.1 200").count(),
        3,
        "{text:?}\n{}",
        lb.log_text()
    );
    let order: Vec<_> = ["slow 200", "slow 201", "slow 202"]
        .iter()
        .map(|w| text.find(w).unwrap_or(usize::MAX))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text:?}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
}
