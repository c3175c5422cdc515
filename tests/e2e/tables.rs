//! Table-based persistence (`header`, `source_ip`) and consistent hashing, end to end:
//! the triad per method, static TTLs that later requests never extend, bad input,
//! spoofed X-Forwarded-For, metrics, and sessions that survive a reload.

use std::time::{Duration, Instant};

use limpet_e2e::*;

async fn with_header(c: &reqwest::Client, lb: &Limpet, name: &str, value: &[u8]) -> Reply {
    let resp = c
        .get(lb.url("/"))
        .header(name, reqwest::header::HeaderValue::from_bytes(value).unwrap())
        .send()
        .await
        .unwrap();
    reply(resp, "LIMPET").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_table_triad_static_ttl_and_bad_input() {
    let bs = backends("h", 3).await;
    let lb = Limpet::start_pool(
        &bs,
        "      - header: { name: X-Session-Id, ttl: 2s, ttl_header: X-Session-TTL, max_ttl: 1h }\n",
        "",
        "",
    )
    .await;
    let c = client();
    // No session yet: a new pin. Same id: same backend, every time.
    let created = Instant::now();
    let first = with_header(&c, &lb, "x-session-id", b"alice").await;
    assert_eq!(first.status, 200);
    for _ in 0..20 {
        assert_eq!(
            with_header(&c, &lb, "x-session-id", b"alice").await.backend,
            first.backend
        );
    }
    // Another id lands on the next backend (round robin).
    let bob = with_header(&c, &lb, "x-session-id", b"bob").await;
    assert_ne!(bob.backend, first.backend);
    assert_eq!(lb.web_decisions("header", "new").await, 2.0);
    assert_eq!(lb.web_decisions("header", "hit").await, 20.0);
    // Requests during the session never extend it: keep asking until it expires.
    // (A session extended by each request would never end.)
    let mut expired_after = None;
    while created.elapsed() < Duration::from_secs(15) {
        with_header(&c, &lb, "x-session-id", b"alice").await;
        if lb.web_sessions_started("header").await == 3.0 {
            expired_after = Some(created.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = expired_after.expect("the session never expired despite its static 2s TTL");
    assert!(after >= Duration::from_secs(2), "{after:?}");
    // Bad input: empty, oversized, malformed TTL, non-UTF-8 — never a 5xx.
    let empty = with_header(&c, &lb, "x-session-id", b"").await;
    assert_eq!(empty.status, 200);
    let huge = with_header(&c, &lb, "x-session-id", &[b'x'; 4000]).await;
    assert_eq!(huge.status, 200);
    assert_eq!(lb.web_decisions("header", "invalid").await, 2.0);
    let raw = with_header(&c, &lb, "x-session-id", b"caf\xe9-\xff").await;
    assert_eq!(raw.status, 200);
    assert_eq!(
        with_header(&c, &lb, "x-session-id", b"caf\xe9-\xff")
            .await
            .backend,
        raw.backend
    );
    let resp = c
        .get(lb.url("/"))
        .header("x-session-id", "carol")
        .header("x-session-ttl", "forever")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Table gauges follow the live sessions.
    let entries = lb.metric(r#"limpet_session_store_entries{pool="web"}"#).await;
    let sessions: f64 = {
        let mut sum = 0.0;
        for b in &bs {
            sum += lb
                .metric(&format!(
                    r#"limpet_backend_sessions{{backend="{}",pool="web"}}"#,
                    b.id
                ))
                .await;
        }
        sum
    };
    assert!(entries >= 3.0, "entries {entries}");
    assert_eq!(entries, sessions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_uses_forwarded_for_only_from_trusted_peers() {
    let bs = backends("ip", 3).await;
    let persistence = "      - source_ip: { ttl: 15m, ipv4_prefix: 24 }\n";
    // Untrusted peer: X-Forwarded-For is ignored, every "client" is 127.0.0.1.
    let lb = Limpet::start_pool(&bs, persistence, "", "").await;
    let c = client();
    let home = with_header(&c, &lb, "x-forwarded-for", b"198.51.100.1")
        .await
        .backend;
    for i in 2..12 {
        let spoofed = format!("203.0.{i}.9");
        assert_eq!(
            with_header(&c, &lb, "x-forwarded-for", spoofed.as_bytes())
                .await
                .backend,
            home
        );
    }
    drop(lb);
    // Trusted peer: the forwarded client counts, masked to /24.
    let lb = Limpet::start_pool(&bs, persistence, "", "  trusted_proxies: [127.0.0.1]\n").await;
    let a1 = with_header(&c, &lb, "x-forwarded-for", b"10.1.1.1").await.backend;
    let a2 = with_header(&c, &lb, "x-forwarded-for", b"10.1.1.200")
        .await
        .backend;
    let b1 = with_header(&c, &lb, "x-forwarded-for", b"10.1.2.1").await.backend;
    assert_eq!(a1, a2, "same /24, same session");
    assert_ne!(a1, b1, "round robin gives the next /24 the next backend");
    for _ in 0..10 {
        assert_eq!(
            with_header(&c, &lb, "x-forwarded-for", b"10.1.2.77")
                .await
                .backend,
            b1
        );
    }
    assert_eq!(lb.web_decisions("source_ip", "new").await, 2.0);
    assert_eq!(lb.web_decisions("source_ip", "hit").await, 11.0);
    drop(lb);
    // Expiry: a 1 s static TTL ends while the client keeps coming, and the next
    // request is a new session.
    let lb = Limpet::start_pool(
        &bs,
        "      - source_ip: { ttl: 1s }
",
        "",
        "  trusted_proxies: [127.0.0.1]
",
    )
    .await;
    let created = Instant::now();
    with_header(&c, &lb, "x-forwarded-for", b"10.9.9.9").await;
    while lb.web_sessions_started("source_ip").await < 2.0 {
        assert!(created.elapsed() < Duration::from_secs(15), "never expired");
        with_header(&c, &lb, "x-forwarded-for", b"10.9.9.9").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created.elapsed() >= Duration::from_secs(1));
    assert!(lb.web_decisions("source_ip", "hit").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_sessions_survive_reload_and_leave_disabled_backends() {
    let bs = backends("r", 3).await;
    let spec = PoolSpec::new(&bs).method("header: { name: X-Session-Id, ttl: 15m }");
    let lb = spec.start().await;
    let c = client();
    let mut homes = Vec::new();
    for u in 0..9 {
        let id = format!("user-{u}");
        homes.push(with_header(&c, &lb, "x-session-id", id.as_bytes()).await.backend);
    }
    // Disable one backend by reload: only its users move, and they stay moved.
    let victim = homes[0].clone();
    assert!(lb.reload_spec(&spec.clone().state(&victim, "disabled")).await);
    for (u, home) in homes.iter().enumerate() {
        let id = format!("user-{u}");
        let now = with_header(&c, &lb, "x-session-id", id.as_bytes()).await.backend;
        if *home == victim {
            assert_ne!(now, victim);
            for _ in 0..3 {
                assert_eq!(
                    with_header(&c, &lb, "x-session-id", id.as_bytes()).await.backend,
                    now
                );
            }
        } else {
            assert_eq!(&now, home, "sessions of other backends survive the reload");
        }
    }
    assert_eq!(lb.web_decisions("header", "backend_down").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_agrees_across_instances_and_backend_order() {
    let bs = backends("ch", 5).await;
    let persistence = "      - hash: {}\n";
    let pool = "    balance: consistent_hash\n    hash: { key: \"header:X-User\", balance_factor: 1.25 }\n";
    let one = Limpet::start_pool(&bs, persistence, pool, "").await;
    let list: String = backend_list(&bs)
        .lines()
        .rev()
        .map(|l| format!("{l}\n"))
        .collect();
    let (addr, admin) = (free_addr(), free_addr());
    let two = Limpet::start_with(
        &pool_config((addr, admin), &list, persistence, pool, ""),
        addr,
        admin,
    )
    .await;
    let c = client();
    let mut used = std::collections::HashSet::new();
    for u in 0..60 {
        let user = format!("user-{u}");
        let a = with_header(&c, &one, "x-user", user.as_bytes()).await.backend;
        let b = with_header(&c, &two, "x-user", user.as_bytes()).await.backend;
        assert_eq!(a, b, "{user}");
        assert_eq!(with_header(&c, &one, "x-user", user.as_bytes()).await.backend, a);
        used.insert(a);
    }
    assert!(
        used.len() >= 4,
        "60 users spread over {} of 5 backends",
        used.len()
    );
    assert!(one.web_decisions("hash", "hit").await >= 120.0);
}

/// Sends `id` under `name` and returns (status, backend).
async fn status_of(c: &reqwest::Client, lb: &Limpet, name: &str, id: &str) -> (u16, String) {
    let r = with_header(c, lb, name, id.as_bytes()).await;
    (r.status, r.backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_keeps_and_strict_refuses_for_each_table_method() {
    let bs = backends("d", 3).await;
    // (method, request header carrying the session, the method)
    let methods = [
        (
            "header",
            "x-session-id",
            "header: { name: X-Session-Id, ttl: 15m }",
        ),
        ("source_ip", "x-forwarded-for", "source_ip: { ttl: 15m }"),
        ("hash", "x-user", "hash: {}"),
    ];
    let base = PoolSpec::new(&bs)
        .server_key("trusted_proxies: [127.0.0.1]")
        .pool_key("hash: { key: \"header:X-User\" }");
    let lb = base.clone().method(methods[0].2).start().await;
    let c = client();
    for (round, (method, header, item)) in methods.iter().enumerate() {
        let spec = base.clone().method(item);
        assert!(lb.reload_spec(&spec).await);
        let id = |u: usize| format!("10.{round}.{u}.1");
        let mut homes = Vec::new();
        for u in 0..6 {
            homes.push(status_of(&c, &lb, header, &id(u)).await.1);
        }
        let victim = homes[0].clone();
        // Draining: every session keeps its backend, and no new session lands on the
        // draining one. A hash key is no session: the draining owner's keys walk on
        // (tests/e2e/draining.rs has the rest), the others stay.
        assert!(lb.reload_spec(&spec.clone().state(&victim, "draining")).await);
        for (u, home) in homes.iter().enumerate() {
            let now = status_of(&c, &lb, header, &id(u)).await.1;
            if *method == "hash" && *home == victim {
                assert_ne!(now, victim, "hash: a key stayed on its draining owner");
            } else {
                assert_eq!(&now, home, "{method}");
            }
        }
        for u in 100..112 {
            let (_, b) = status_of(&c, &lb, header, &id(u)).await;
            assert_ne!(b, victim, "{method}: a new session on a draining backend");
        }
        // Strict: a disabled backend's sessions get 503 with Retry-After, the others
        // are served as before.
        let backend_down = lb.web_decisions(method, "backend_down").await;
        let strict = spec
            .clone()
            .state(&victim, "disabled")
            .pool_key("on_backend_down: strict");
        assert!(lb.reload_spec(&strict).await);
        for (u, home) in homes.iter().enumerate() {
            let resp = c.get(lb.url("/")).header(*header, id(u)).send().await.unwrap();
            if *home == victim {
                assert_eq!(
                    resp.status(),
                    503,
                    "{method} {u} {home} {:?}",
                    resp.headers().get("x-backend-id")
                );
                assert!(resp.headers().contains_key("retry-after"));
            } else {
                assert_eq!(resp.status(), 200);
                assert_eq!(resp.headers()["x-backend-id"], home.as_str(), "{method}");
            }
        }
        let victims = homes.iter().filter(|h| **h == victim).count() as f64;
        assert_eq!(
            lb.web_decisions(method, "backend_down").await,
            backend_down + victims,
            "{method}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ttl_header_is_capped_by_max_ttl() {
    let bs = backends("t", 2).await;
    let lb = Limpet::start_pool(
        &bs,
        "      - header: { name: X-Session-Id, ttl: 1s, ttl_header: X-Session-TTL, max_ttl: 2s }\n",
        "",
        "",
    )
    .await;
    let c = client();
    let ask = |id: &'static str, ttl: &'static str| {
        c.get(lb.url("/"))
            .header("x-session-id", id)
            .header("x-session-ttl", ttl)
            .send()
    };
    // 600 minutes asked, 2 s granted: the session is gone within a few seconds.
    let created = Instant::now();
    assert_eq!(ask("capped", "600").await.unwrap().status(), 200);
    let mut expired_after = None;
    while created.elapsed() < Duration::from_secs(15) {
        with_header(&c, &lb, "x-session-id", b"capped").await;
        if lb.web_sessions_started("header").await >= 2.0 {
            expired_after = Some(created.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = expired_after.expect("a TTL above max_ttl was not capped");
    assert!(after >= Duration::from_secs(2), "{after:?}");
    assert!(lb.log_text().contains("capped"), "{}", lb.log_text());
    // Zero, negative and garbage values fall back to the configured TTL, logged.
    for bad in ["0", "-5", "1e9", "ten", ""] {
        assert_eq!(ask("bad", bad).await.unwrap().status(), 200, "{bad}");
    }
    assert!(lb.log_text().contains("malformed session TTL header ignored"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_method_triad_and_bad_keys_from_every_source() {
    let bs = backends("k", 4).await;
    let base = PoolSpec::new(&bs).method("hash: {}");
    let keyed_by = |key: &str| base.clone().pool_key(&format!("hash: {{ key: \"{key}\" }}"));
    let lb = keyed_by("header:X-User").start().await;
    let c = client();
    // No key: not sticky through the method, not counted; balance spreads it.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..8 {
        seen.insert(client_get(&c, &lb, &[]).await.1);
    }
    assert!(seen.len() > 1);
    assert_eq!(lb.web_decisions("hash", "hit").await, 0.0);
    // A key: the same backend every time.
    let mut homes = Vec::new();
    for u in 0..40 {
        let user = format!("user-{u}");
        let home = status_of(&c, &lb, "x-user", &user).await.1;
        assert_eq!(status_of(&c, &lb, "x-user", &user).await.1, home);
        homes.push(home);
    }
    // Its backend disabled: only that backend's keys move, and they stay moved.
    let victim = homes[0].clone();
    assert!(
        lb.reload_spec(&keyed_by("header:X-User").state(&victim, "disabled"))
            .await
    );
    for (u, home) in homes.iter().enumerate() {
        let user = format!("user-{u}");
        let now = status_of(&c, &lb, "x-user", &user).await.1;
        if *home == victim {
            assert_ne!(now, victim);
            assert_eq!(status_of(&c, &lb, "x-user", &user).await.1, now);
        } else {
            assert_eq!(&now, home, "{user} moved though its backend is up");
        }
    }
    let moved = homes.iter().filter(|h| **h == victim).count() as f64;
    assert_eq!(lb.web_decisions("hash", "backend_down").await, 2.0 * moved);
    // Bad keys from every source: empty, huge, not UTF-8. Each is still a key (the
    // same bytes give the same backend) and never an error.
    let huge = "x".repeat(6000);
    for key in ["header:X-User", "cookie:uid", "query:u"] {
        assert!(lb.reload_spec(&keyed_by(key)).await);
        let values: [&[u8]; 4] = [b"", huge.as_bytes(), b"caf\xe9\xff", b"%zz%00"];
        for v in values {
            let once = keyed(&c, &lb, key, v).await;
            assert_eq!(
                once.0,
                200,
                "{key} {:?}",
                String::from_utf8_lossy(&v[..v.len().min(8)])
            );
            assert_eq!(keyed(&c, &lb, key, v).await, once, "{key}");
        }
    }
}

/// GET / with extra headers; (status, backend).
async fn client_get(c: &reqwest::Client, lb: &Limpet, headers: &[(&str, &[u8])]) -> (u16, String) {
    let mut req = c.get(lb.url("/"));
    for (n, v) in headers {
        req = req.header(*n, reqwest::header::HeaderValue::from_bytes(v).unwrap());
    }
    let r = reply(req.send().await.unwrap(), "LIMPET").await;
    (r.status, r.backend)
}

/// A request whose hash key under `key` is `value` (bytes a query cannot carry raw are
/// percent-encoded, as a client would send them).
async fn keyed(c: &reqwest::Client, lb: &Limpet, key: &str, value: &[u8]) -> (u16, String) {
    match key.split_once(':') {
        Some(("header", name)) => client_get(c, lb, &[(name, value)]).await,
        Some(("cookie", name)) => {
            let mut cookie = format!("{name}=").into_bytes();
            cookie.extend_from_slice(value);
            client_get(c, lb, &[("cookie", &cookie)]).await
        }
        _ => {
            let encoded: String = value
                .iter()
                .map(|b| match b {
                    b'a'..=b'z' | b'%' => (*b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let r = reply(
                c.get(lb.url(&format!("/?u={encoded}"))).send().await.unwrap(),
                "LIMPET",
            )
            .await;
            (r.status, r.backend)
        }
    }
}
