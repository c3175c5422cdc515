//! Request smuggling: a request whose framing two HTTP parsers could read differently is
//! refused, or framed as exactly one request and forwarded so that the backend reads it
//! the same way. Each case sends a second request hidden where a parser that disagrees
//! would find it; the backend (which reads `Content-Length` only, as a naive one does)
//! must never see it as a request of its own.

use limpet_e2e::*;

/// Answers the request it reads with a small 200 and closes: the naive backend never
/// reads a chunked body, so a kept connection would hold its leftovers for the next
/// case.
fn ok(_: &str) -> Option<(Vec<u8>, bool)> {
    Some((
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n".to_vec(),
        false,
    ))
}

const HIDDEN: &str = "GET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_or_read_one_way() {
    let rb = raw_backend(ok).await;
    let lb = PoolSpec::new(&[]).backend("raw", rb.addr).start().await;
    let cases: Vec<(&str, String)> = vec![
        (
            "Content-Length and Transfer-Encoding",
            format!(
                "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{HIDDEN}",
                5 + HIDDEN.len()
            ),
        ),
        (
            "Transfer-Encoding then Content-Length",
            format!(
                "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n0\r\n\r\n{HIDDEN}",
                5 + HIDDEN.len()
            ),
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{HIDDEN}",
                HIDDEN.len()
            ),
        ),
        (
            "Transfer-Encoding not ending in chunked",
            format!("POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{HIDDEN}"),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!("POST / HTTP/1.0\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{HIDDEN}"),
        ),
        (
            "obs-fold",
            format!(
                "POST / HTTP/1.1\r\nHost: app\r\nX-A: a\r\n Content-Length: {}\r\n\r\n{HIDDEN}",
                HIDDEN.len()
            ),
        ),
        (
            "a NUL in a header value",
            format!(
                "POST / HTTP/1.1\r\nHost: app\r\nX-A: a\0b\r\nContent-Length: {}\r\n\r\n{HIDDEN}",
                HIDDEN.len()
            ),
        ),
        (
            "a space before the colon",
            format!(
                "POST / HTTP/1.1\r\nHost: app\r\nContent-Length : {}\r\n\r\n{HIDDEN}",
                HIDDEN.len()
            ),
        ),
        (
            "a bad chunk size",
            format!("POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n{HIDDEN}"),
        ),
    ];
    let mut refusals = 0.0;
    for (name, request) in cases {
        rb.heads.lock().unwrap().clear();
        let (text, _) = raw_exchange(lb.addr, request.as_bytes()).await;
        let statuses: Vec<&str> = text
            .match_indices("HTTP/1.1 ")
            .map(|(at, _)| &text[at + 9..at + 12])
            .collect();
        // What the backend took for request heads (it reads a chunked body as more heads).
        let heads: Vec<String> = rb
            .heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.contains(" HTTP/1."))
            .cloned()
            .collect();
        assert!(
            heads.iter().all(|h| !h.contains("/smuggled")),
            "{name}: the backend read a hidden request: {heads:?}"
        );
        // Refused (400) or one request answered; never two answers to one request.
        let refused = statuses == ["400"];
        if refused {
            refusals += 1.0;
        }
        let once = heads.len() == 1 && statuses.first() == Some(&"200");
        assert!(
            refused || once,
            "{name}: answered {statuses:?}, backend saw {heads:?}\n{text:?}\n{}",
            lb.log_text()
        );
        // A forwarded request carries one framing, never both.
        for h in &heads {
            let lower = h.to_ascii_lowercase();
            assert!(
                !(lower.contains("content-length:") && lower.contains("transfer-encoding:")),
                "{name}: forwarded with two framings: {h:?}"
            );
        }
    }
    // Every refusal is counted, the parser's own among them.
    let counted = lb
        .metric(r#"limpet_responses_total{code="400",pool="",reason="bad_request"}"#)
        .await
        + lb.metric(r#"limpet_responses_total{code="400",pool="web",reason="bad_request"}"#)
            .await;
    assert_eq!(counted, refusals, "{}", lb.log_text());
}
