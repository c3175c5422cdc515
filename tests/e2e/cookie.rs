//! The duration-based cookie: the triad, Set-Cookie attributes, static TTL, weights,
//! key rotation.

use std::collections::HashMap;
use std::time::Duration;

use limpet_e2e::*;

const COOKIE: &str = "name: LIMPET, ttl: 15m";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triad_new_pin_then_hit_then_forged_repins() {
    let bs = backends("app", 3).await;
    let lb = Limpet::start(&bs, COOKIE, "").await;
    let c = client();

    // No cookie → a new pin with a well-formed cookie.
    let first = get(&c, &lb.url("/"), &[], "LIMPET").await;
    assert_eq!(first.status, 200);
    let header = first
        .set_cookie_header
        .clone()
        .expect("a new session sets the cookie");
    for attr in ["Max-Age=900", "Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(header.contains(attr), "{header} lacks {attr}");
    }
    assert!(!header.contains("Secure"), "plain listener: {header}");
    assert!(
        !header.contains("127.0.0.1"),
        "the cookie must not carry an address: {header}"
    );
    assert_eq!(first.cache_control.as_deref(), Some("private"));
    let cookie = first.set_cookie.unwrap();

    // Valid cookie → same backend, 100 times, and never a new Set-Cookie.
    for _ in 0..100 {
        let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
        assert_eq!((r.status, r.backend.as_str()), (200, first.backend.as_str()));
        assert!(r.set_cookie.is_none(), "Set-Cookie on a hit");
    }

    // Forged: flip a character of the signed value → re-pinned with a fresh cookie.
    let (name, value) = cookie.split_once('=').unwrap();
    let mut forged: Vec<u8> = value.bytes().collect();
    let mid = forged.len() / 2;
    forged[mid] = if forged[mid] == b'A' { b'B' } else { b'A' };
    let forged = format!("{name}={}", String::from_utf8(forged).unwrap());
    let r = get(&c, &lb.url("/"), &[forged.as_bytes()], "LIMPET").await;
    assert_eq!(r.status, 200);
    assert!(r.set_cookie.is_some(), "a forged cookie is replaced");
    assert_ne!(r.set_cookie.as_deref(), Some(cookie.as_str()));

    assert_eq!(lb.web_cookie_decisions("new").await, 1.0);
    assert_eq!(lb.web_cookie_decisions("hit").await, 100.0);
    assert_eq!(lb.web_cookie_decisions("invalid").await, 1.0);
    let status = lb.admin_get("/status").await;
    assert!(
        status.contains("\"generation\": 1") && status.contains("app-2"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sessions_follow_weights_and_round_robin() {
    let bs = backends("w", 3).await;
    let list: String = bs
        .iter()
        .zip([1, 2, 3])
        .map(|(b, w)| {
            format!(
                "      - {{ id: {}, address: \"{}\", weight: {w} }}\n",
                b.id, b.addr
            )
        })
        .collect();
    let (addr, admin) = (free_addr(), free_addr());
    let lb = Limpet::start_with(&config(addr, admin, &list, COOKIE, ""), addr, admin).await;
    let c = client();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..600 {
        let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
        assert!(r.set_cookie.is_some());
        *counts.entry(r.backend).or_default() += 1;
    }
    assert_eq!(
        (counts["w-1"], counts["w-2"], counts["w-3"]),
        (100, 200, 300),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_is_absolute_and_enforced_by_limpet() {
    let bs = backends("t", 2).await;
    let lb = Limpet::start(&bs, "name: LIMPET, ttl: 2s, max_ttl: 4h", "").await;
    let c = client();
    let first = get(&c, &lb.url("/"), &[], "LIMPET").await;
    assert!(first.set_cookie_header.as_deref().unwrap().contains("Max-Age=2"));
    let cookie = first.set_cookie.unwrap();
    // Requests during the TTL hit and never extend it: no Set-Cookie is sent.
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
        assert_eq!(r.backend, first.backend);
        assert!(r.set_cookie.is_none());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past the TTL the browser would drop it; limpet refuses it even if it is replayed.
    // Issue times are whole seconds: a session lasts at least its TTL, less than 1 s more.
    tokio::time::sleep(Duration::from_millis(3100).saturating_sub(start.elapsed())).await;
    let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
    assert_eq!(r.status, 200);
    assert!(r.set_cookie.is_some(), "an expired session gets a new cookie");
    assert_eq!(lb.web_cookie_decisions("expired").await, 1.0);
}

/// Decodes the key id out of a cookie value (layout: version, key-id length, key id, …).
fn key_id(cookie: &str) -> String {
    use base64::Engine;
    let value = cookie.split_once('=').unwrap().1;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .unwrap();
    String::from_utf8(raw[2..2 + raw[1] as usize].to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_sessions_while_the_old_key_is_listed() {
    let bs = backends("k", 3).await;
    let (addr, admin) = (free_addr(), free_addr());
    let base = config(addr, admin, &backend_list(&bs), COOKIE, "");
    let lb = Limpet::start_with(&base, addr, admin).await;
    let c = client();
    let old = get(&c, &lb.url("/"), &[], "LIMPET").await;
    let old_cookie = old.set_cookie.unwrap();
    assert_eq!(key_id(&old_cookie), "k1");

    // Add k2 in front: it signs new cookies, k1 still verifies.
    let k2 = "  - id: k2\n    secret: \"second-secret-0123456789abcdef0123456789\"\n";
    let rotated = base.replace("cookie_keys:\n", &format!("cookie_keys:\n{k2}"));
    assert!(lb.reload(&rotated).await, "{}", lb.log_text());
    let r = get(&c, &lb.url("/"), &[old_cookie.as_bytes()], "LIMPET").await;
    assert_eq!(r.backend, old.backend);
    assert!(r.set_cookie.is_none());
    let fresh = get(&c, &lb.url("/"), &[], "LIMPET").await.set_cookie.unwrap();
    assert_eq!(key_id(&fresh), "k2");

    // Remove k1: its cookies no longer verify and their users are re-pinned.
    let only_k2 = base.replace(
        "cookie_keys:\n  - id: k1\n    secret_env: LIMPET_TEST_KEY\n",
        &format!("cookie_keys:\n{k2}"),
    );
    assert!(lb.reload(&only_k2).await, "{}", lb.log_text());
    let r = get(&c, &lb.url("/"), &[old_cookie.as_bytes()], "LIMPET").await;
    assert!(r.set_cookie.is_some());
    let r = get(&c, &lb.url("/"), &[fresh.as_bytes()], "LIMPET").await;
    assert!(r.set_cookie.is_none(), "k2 cookies keep working");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_attributes_follow_config() {
    let bs = backends("a", 1).await;
    let lb = Limpet::start(&bs, "name: SRV, ttl: 10m, path: /app, domain: example.com, secure: true, http_only: false, same_site: strict", "").await;
    let r = get(&client(), &lb.url("/app/x"), &[], "SRV").await;
    let h = r.set_cookie_header.unwrap();
    assert_eq!(
        h.split_once(';').unwrap().1.trim(),
        "Max-Age=600; Path=/app; Domain=example.com; Secure; SameSite=Strict"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_route_is_404_from_limpet() {
    let bs = backends("r", 1).await;
    let lb = PoolSpec::new(&bs).cookie().host("*.example.com").start().await;
    let c = client();
    let r = c
        .get(lb.url("/"))
        .header("host", "other.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(lb.url("/"))
        .header("host", "www.Example.com:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_added() {
    let bs = backends("f", 1).await;
    let lb = Limpet::start(&bs, COOKIE, "").await;
    let body = client()
        .get(lb.url("/headers"))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("x-forwarded-for: 203.0.113.7, 127.0.0.1\n"),
        "{body}"
    );
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
}
