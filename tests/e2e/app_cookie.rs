//! Application-controlled cookies (`cookie.follow`): limpet's cookie is born, changed
//! and deleted with the application's session cookie, and verifies only next to it.

use std::collections::HashSet;
use std::time::Duration;

use limpet_e2e::*;

const FOLLOW: &str = "name: LIMPET, follow: APPSESSION, max_ttl: 1h";

/// What a test needs from one response.
struct Seen {
    backend: String,
    /// limpet's `Set-Cookie` header, whole.
    limpet: Option<String>,
    /// The application's `Set-Cookie` header, whole.
    app: Option<String>,
    cache_control: Option<String>,
}

impl Seen {
    /// `NAME=VALUE` of a whole Set-Cookie header.
    fn pair(header: &Option<String>) -> String {
        let h = header.as_deref().expect("a Set-Cookie header");
        h.split(';').next().unwrap().trim().to_string()
    }
}

/// GET `path` sending `cookies` (`NAME=VALUE`), with the backend asked to set each of
/// `app_sets` as a Set-Cookie of its own.
async fn send(c: &reqwest::Client, lb: &Limpet, path: &str, cookies: &[&str], app_sets: &[&str]) -> Seen {
    let mut req = c.get(lb.url(path));
    if !cookies.is_empty() {
        req = req.header("cookie", cookies.join("; "));
    }
    for s in app_sets {
        req = req.header("x-set-cookie", *s);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    let find = |prefix: &str| {
        h.get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|v| v.starts_with(prefix))
    };
    Seen {
        backend: h["x-backend-id"].to_str().unwrap().to_string(),
        limpet: find("LIMPET="),
        app: find("APPSESSION="),
        cache_control: h.get("cache-control").map(|v| v.to_str().unwrap().to_string()),
    }
}

fn max_age(header: &str) -> Option<u64> {
    header
        .split(';')
        .find_map(|a| a.trim().strip_prefix("Max-Age="))
        .map(|v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_login_rotation_logout_and_failover() {
    let mut bs = backends("app", 3).await;
    let lb = Limpet::start(&bs, FOLLOW, "").await;
    let c = client();

    // No application session: nothing sticky, nothing issued, no decision counted.
    let anon = send(&c, &lb, "/", &[], &[]).await;
    assert!(anon.limpet.is_none());
    assert_eq!(lb.web_cookie_decisions("new").await, 0.0);

    // Login: the app sets a session cookie; limpet issues a session cookie of its own.
    let login = send(&c, &lb, "/login", &[], &[]).await;
    let app = Seen::pair(&login.app);
    let header = login.limpet.clone().expect("limpet follows the app's cookie");
    assert_eq!(
        max_age(&header),
        None,
        "a session cookie stays a session cookie: {header}"
    );
    assert_eq!(login.cache_control.as_deref(), Some("private"));
    let mine = Seen::pair(&login.limpet);
    for _ in 0..30 {
        let r = send(&c, &lb, "/", &[&app, &mine], &[]).await;
        assert_eq!(r.backend, login.backend);
        assert!(r.limpet.is_none(), "Set-Cookie on a hit");
    }
    assert_eq!(lb.web_cookie_decisions("hit").await, 30.0);

    // Without the app cookie limpet's own is not enough: not sticky.
    let mut seen = HashSet::new();
    for _ in 0..6 {
        let r = send(&c, &lb, "/", &[&mine], &[]).await;
        assert!(r.limpet.is_none());
        seen.insert(r.backend);
    }
    assert!(seen.len() > 1, "spread over {seen:?}");

    // Beside another app session (or a tampered value) it does not verify: re-pinned,
    // and the new pin is learned from the request.
    let other = format!("{app}x");
    let r = send(&c, &lb, "/", &[&other, &mine], &[]).await;
    assert_eq!(lb.web_cookie_decisions("invalid").await, 1.0);
    let learned = Seen::pair(&r.limpet);
    let again = send(&c, &lb, "/", &[&other, &learned], &[]).await;
    assert_eq!(again.backend, r.backend);
    let (name, value) = mine.split_once('=').unwrap();
    let mut forged: Vec<u8> = value.bytes().collect();
    forged[4] = if forged[4] == b'A' { b'B' } else { b'A' };
    let forged = format!("{name}={}", String::from_utf8(forged).unwrap());
    send(&c, &lb, "/", &[&app, &forged], &[]).await;
    assert_eq!(lb.web_cookie_decisions("invalid").await, 2.0);

    // Login rotation: the app issues a new session id; limpet re-issues for it, and
    // the old cookie does not carry over to the new session.
    let rotated = send(&c, &lb, "/login", &[&app, &mine], &[]).await;
    assert_eq!(rotated.backend, login.backend);
    let app2 = Seen::pair(&rotated.app);
    assert_ne!(app2, app);
    let mine2 = Seen::pair(&rotated.limpet);
    let hits = lb.web_cookie_decisions("hit").await;
    assert_eq!(
        send(&c, &lb, "/", &[&app2, &mine2], &[]).await.backend,
        login.backend
    );
    assert_eq!(lb.web_cookie_decisions("hit").await, hits + 1.0);
    let invalid = lb.web_cookie_decisions("invalid").await;
    send(&c, &lb, "/", &[&app2, &mine], &[]).await;
    assert_eq!(lb.web_cookie_decisions("invalid").await, invalid + 1.0);

    // Failover: the session's backend dies; the session moves, with a new cookie that
    // is still a session cookie, and stays where it moved.
    let dead = bs.iter().position(|b| b.id == login.backend).unwrap();
    bs.remove(dead).kill().await;
    let moved = send(&c, &lb, "/", &[&app2, &mine2], &[]).await;
    assert_ne!(moved.backend, login.backend);
    let header = moved.limpet.clone().expect("re-pinned");
    assert_eq!(max_age(&header), None, "{header}");
    let mine3 = Seen::pair(&moved.limpet);
    assert_eq!(
        send(&c, &lb, "/", &[&app2, &mine3], &[]).await.backend,
        moved.backend
    );

    // Logout: the app deletes its cookie, limpet deletes its own in the same response.
    let out = send(&c, &lb, "/logout", &[&app2, &mine3], &[]).await;
    let header = out.limpet.expect("limpet's cookie is deleted too");
    assert!(
        header.starts_with("LIMPET=;") && header.contains("Max-Age=0"),
        "{header}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_lifetimes_and_enforces_them_server_side() {
    let bs = backends("life", 2).await;
    let lb = Limpet::start(&bs, FOLLOW, "").await;
    let c = client();

    // Max-Age is copied; above max_ttl (1h) it is capped.
    let r = send(&c, &lb, "/", &[], &["APPSESSION=a1; Max-Age=120; Path=/"]).await;
    assert_eq!(max_age(r.limpet.as_deref().unwrap()), Some(120));
    let r = send(&c, &lb, "/", &[], &["APPSESSION=a2; max-age=86400"]).await;
    assert_eq!(max_age(r.limpet.as_deref().unwrap()), Some(3600));

    // Expires, in the RFC 850 form with a two-digit year, thirty minutes ahead.
    let at = std::time::SystemTime::now() + Duration::from_secs(1800);
    let rfc1123 = httpdate::fmt_http_date(at); // "Sun, 22 Nov 2026 04:30:00 GMT"
    let parts: Vec<&str> = rfc1123.split(' ').collect();
    let weekday = match parts[0] {
        "Mon," => "Monday",
        "Tue," => "Tuesday",
        "Wed," => "Wednesday",
        "Thu," => "Thursday",
        "Fri," => "Friday",
        "Sat," => "Saturday",
        _ => "Sunday",
    };
    let rfc850 = format!(
        "{weekday}, {}-{}-{} {} GMT",
        parts[1],
        parts[2],
        &parts[3][2..],
        parts[4]
    );
    let r = send(
        &c,
        &lb,
        "/",
        &[],
        &[&format!("APPSESSION=a3; Path=/; EXPIRES={rfc850}")],
    )
    .await;
    let age = max_age(r.limpet.as_deref().unwrap()).unwrap();
    assert!((1795..=1800).contains(&age), "{rfc850} gave Max-Age={age}");

    // Expires in the past deletes.
    let r = send(
        &c,
        &lb,
        "/",
        &[],
        &["APPSESSION=a4; Expires=Thu, 01 Jan 1970 00:00:00 GMT"],
    )
    .await;
    assert!(r.limpet.unwrap().contains("Max-Age=0"));

    // A quoted value: the browser sends it back quoted, and it still matches.
    let r = send(&c, &lb, "/", &[], &["APPSESSION=\"q 1\"; Max-Age=60"]).await;
    let mine = Seen::pair(&r.limpet);
    for _ in 0..4 {
        assert_eq!(
            send(&c, &lb, "/", &["APPSESSION=\"q 1\"", &mine], &[])
                .await
                .backend,
            r.backend
        );
    }

    // The lifetime is enforced by limpet, not only by the browser: a client that keeps
    // sending both cookies after Max-Age=2 is a new session.
    let r = send(&c, &lb, "/", &[], &["APPSESSION=short; Max-Age=2"]).await;
    let mine = Seen::pair(&r.limpet);
    assert_eq!(
        send(&c, &lb, "/", &["APPSESSION=short", &mine], &[])
            .await
            .backend,
        r.backend
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let expired = lb.web_cookie_decisions("expired").await;
    let late = send(&c, &lb, "/", &["APPSESSION=short", &mine], &[]).await;
    assert_eq!(lb.web_cookie_decisions("expired").await, expired + 1.0);
    assert!(late.limpet.is_some(), "the session is pinned anew");
}
