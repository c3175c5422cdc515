//! Backend health end to end: active checks take a dead backend out and bring it back
//! under slow start without moving anyone back; passive checks trip on 5xx and on
//! timeouts; a pool with nothing usable answers 503 with Retry-After; a draining
//! backend's table sessions drain away; `/metrics` passes `promtool check metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use limpet_e2e::*;

const COOKIE: &str = "      - cookie: { name: LIMPET, ttl: 15m }\n";

async fn up(lb: &Limpet, backend: &str) -> f64 {
    lb.metric(&format!(r#"limpet_backend_up{{backend="{backend}",pool="web"}}"#))
        .await
}

/// Waits (bounded) until `limpet_backend_up` of `backend` is `want`.
async fn wait_up(lb: &Limpet, backend: &str, want: f64) {
    let series = format!(r#"limpet_backend_up{{backend="{backend}",pool="web"}}"#);
    lb.wait_metric(&series, |v| v == want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_leaves_and_returns_under_slow_start() {
    let mut bs = backends("hc", 3).await;
    let pool = "    slow_start: 3s\n    health_check: { kind: http, path: /healthz, interval: 200ms, timeout: 150ms, rise: 2, fall: 2 }\n";
    let lb = Limpet::start_pool(&bs, COOKIE, pool, "").await;
    let c = client();
    let mut users: Vec<(String, String)> = Vec::new();
    for _ in 0..30 {
        let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
        users.push((r.set_cookie.unwrap(), r.backend));
    }
    assert!(
        lb.metric(r#"limpet_health_check_total{backend="hc-2",pool="web",result="ok"}"#)
            .await
            > 0.0
    );

    // hc-2 dies under steady traffic: no request fails, only its users move.
    let victim = bs.remove(1);
    let addr = victim.addr;
    victim.kill().await;
    let killed = Instant::now();
    let mut moved: HashMap<usize, String> = HashMap::new();
    while killed.elapsed() < Duration::from_millis(1200) {
        for (i, (cookie, home)) in users.iter_mut().enumerate() {
            let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
            assert_eq!(r.status, 200, "user {i}");
            if *home == "hc-2" {
                assert_ne!(r.backend, "hc-2");
                *cookie = r.set_cookie.expect("a re-pinned user gets a new cookie");
                moved.insert(i, r.backend.clone());
                *home = format!("moved:{}", r.backend);
            } else if let Some(to) = home.strip_prefix("moved:") {
                assert_eq!(r.backend, to, "user {i} moved twice");
            } else {
                assert_eq!(&r.backend, home, "user {i} moved though its backend is up");
            }
        }
    }
    assert!(!moved.is_empty());
    wait_up(&lb, "hc-2", 0.0).await;
    assert!(lb.admin_get("/status").await.contains("\"health\": \"down\""));
    assert!(
        lb.metric(r#"limpet_health_check_total{backend="hc-2",pool="web",result="fail"}"#)
            .await
            >= 2.0
    );
    assert!(lb.log_text().contains("backend is down"));

    // It comes back on the same address: up after `rise` passes, then only new
    // sessions go to it, ramping up; nobody is moved back.
    let back = Backend::start("hc-2", addr).await.unwrap();
    wait_up(&lb, "hc-2", 1.0).await;
    lb.wait_log("ramping up with slow start").await;
    let recovered = Instant::now();
    let mut early = 0;
    let mut early_total = 0;
    while recovered.elapsed() < Duration::from_millis(600) {
        early_total += 1;
        if get(&c, &lb.url("/"), &[], "LIMPET").await.backend == "hc-2" {
            early += 1;
        }
    }
    let weight = lb
        .metric(r#"limpet_backend_weight{backend="hc-2",pool="web"}"#)
        .await;
    assert!(weight < 1.0, "effective weight {weight} during slow start");
    for (i, (cookie, home)) in users.iter().enumerate() {
        let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
        let expected = home.strip_prefix("moved:").unwrap_or(home);
        assert_eq!(r.backend, expected, "user {i} was moved back");
    }
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(recovered.elapsed())).await;
    let mut late = 0;
    for _ in 0..early_total.max(60) {
        if get(&c, &lb.url("/"), &[], "LIMPET").await.backend == "hc-2" {
            late += 1;
        }
    }
    let late_share = late as f64 / early_total.max(60) as f64;
    let early_share = early as f64 / early_total as f64;
    // Ramp at most 0.2 in the first 600 ms: about a fifteenth of new sessions or
    // fewer, against a third once the ramp is done.
    assert!(
        early_share < 0.15,
        "{early} of {early_total} new sessions while ramping"
    );
    assert!(late_share > 0.2, "{late_share} of new sessions after the ramp");
    drop(back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_checks_trip_on_errors_and_timeouts() {
    let bs = backends("pv", 3).await;
    let spec = PoolSpec::new(&bs)
        .cookie()
        .pool_key("passive_health: { max_fails: 3, window: 10s, cooldown: 2s }")
        .server_key("upstream_read_timeout: 300ms");
    let lb = spec.start().await;
    let c = client();
    let first = get(&c, &lb.url("/"), &[], "LIMPET").await;
    let (cookie, home) = (first.set_cookie.unwrap(), first.backend);
    // Three 500s from its backend: taken out for the cooldown; the user moves.
    for _ in 0..3 {
        let r = get(&c, &lb.url("/status/500"), &[cookie.as_bytes()], "LIMPET").await;
        assert_eq!((r.status, r.backend.as_str()), (500, home.as_str()));
    }
    wait_up(&lb, &home, 0.0).await;
    // A reload keeps the trip (health state belongs to the backend's id).
    assert!(
        lb.reload_spec(&spec.clone().server_key("client_idle_timeout: 31s"))
            .await
    );
    assert_eq!(up(&lb, &home).await, 0.0);
    let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
    assert_ne!(r.backend, home);
    assert_eq!(lb.web_cookie_decisions("backend_down").await, 1.0);
    assert!(lb
        .log_text()
        .contains("passive health check: backend taken out of rotation"));
    // After the cooldown it is back, and takes new sessions again although it was
    // out when the reload happened.
    wait_up(&lb, &home, 1.0).await;
    let mut on_home = 0;
    for _ in 0..12 {
        on_home += usize::from(get(&c, &lb.url("/"), &[], "LIMPET").await.backend == home);
    }
    assert_eq!(on_home, 4, "new sessions on the recovered {home}, of 12");

    // A backend too slow for upstream_read_timeout trips it too.
    let second = loop {
        let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
        if r.backend != home {
            break r;
        }
    };
    let slow_cookie = second.set_cookie.unwrap();
    for _ in 0..3 {
        let r = get(&c, &lb.url("/slow?ms=1500"), &[slow_cookie.as_bytes()], "LIMPET").await;
        assert!(r.status >= 500, "{}", r.status);
    }
    wait_up(&lb, &second.backend, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_with_nothing_usable_answers_503_with_retry_after() {
    let bs = backends("ad", 2).await;
    let pool = "    health_check: { kind: tcp, interval: 100ms, timeout: 100ms, rise: 1, fall: 1 }\n";
    let lb = Limpet::start_pool(&bs, COOKIE, pool, "").await;
    let c = client();
    assert_eq!(get(&c, &lb.url("/"), &[], "LIMPET").await.status, 200);
    for b in bs {
        b.kill().await;
    }
    wait_up(&lb, "ad-1", 0.0).await;
    wait_up(&lb, "ad-2", 0.0).await;
    for _ in 0..5 {
        let r = c.get(lb.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        assert!(r.text().await.unwrap().starts_with("limpet: no backend"));
    }
    let log = lb.log_text();
    assert_eq!(
        log.matches("no backend of this pool can take requests").count(),
        1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_backend_table_sessions_fall_to_zero() {
    let bs = backends("dr", 2).await;
    let spec = PoolSpec::new(&bs).method("header: { name: X-Session-Id, ttl: 2s }");
    let lb = spec.start().await;
    let c = client();
    let send = |id: String| {
        let c = c.clone();
        let url = lb.url("/");
        async move {
            let r = c.get(url).header("x-session-id", id).send().await.unwrap();
            r.headers()["x-backend-id"].to_str().unwrap().to_string()
        }
    };
    let mut on_drained = Vec::new();
    for u in 0..10 {
        if send(format!("u{u}")).await == "dr-1" {
            on_drained.push(u);
        }
    }
    assert!(lb.reload_spec(&spec.clone().state("dr-1", "draining")).await);
    let sessions = r#"limpet_backend_sessions{backend="dr-1",pool="web"}"#;
    assert_eq!(lb.metric(sessions).await, on_drained.len() as f64);
    // Its sessions keep reaching it; new ones never do.
    for u in &on_drained {
        assert_eq!(send(format!("u{u}")).await, "dr-1");
    }
    for u in 100..110 {
        assert_eq!(send(format!("u{u}")).await, "dr-2");
    }
    // Their static TTL runs out: the count falls to zero.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lb.metric(sessions).await > 0.0 {
        assert!(Instant::now() < deadline, "sessions never drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let bs = backends("pt", 2).await;
    let persistence = format!("{COOKIE}      - header: {{ name: X-Session-Id, ttl: 15m }}\n");
    let pool = "    health_check: { interval: 200ms }\n    passive_health: {}\n    slow_start: 10s\n";
    let lb = Limpet::start_pool(&bs, &persistence, pool, "").await;
    let c = client();
    for i in 0..5 {
        c.get(lb.url("/"))
            .header("x-session-id", format!("p{i}"))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = lb.admin_get("/metrics").await;
    for name in [
        "limpet_backend_up",
        "limpet_health_check_total",
        "limpet_backend_weight",
        "limpet_backend_sessions",
        "limpet_persistence_decisions_total",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; .ci/run installs it)");
    use std::io::Write;
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_sessions_are_counted_per_backend_until_they_expire() {
    let bs = backends("cs", 2).await;
    // 8 s: long enough that no session expires while a busy machine runs the first part.
    let lb = Limpet::start_pool(&bs, "      - cookie: { name: LIMPET, ttl: 8s }\n", "", "").await;
    let began = Instant::now();
    let c = client();
    let mut cookies = Vec::new();
    for _ in 0..40 {
        cookies.push(get(&c, &lb.url("/"), &[], "LIMPET").await.set_cookie.unwrap());
    }
    // Every session seen again: still 40, not 120.
    for cookie in &cookies {
        for _ in 0..2 {
            get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
        }
    }
    let count = |text: &str, b: &str| {
        parse_metric(
            text,
            &format!(r#"limpet_backend_sessions{{backend="{b}",pool="web"}}"#),
        )
    };
    let text = lb.admin_get("/metrics").await;
    assert!(
        began.elapsed() < Duration::from_secs(7),
        "too slow to count before expiry"
    );
    let (one, two) = (count(&text, "cs-1"), count(&text, "cs-2"));
    assert!(
        (17.0..=21.0).contains(&one) && (17.0..=21.0).contains(&two),
        "{one} + {two}"
    );
    assert!(lb.admin_get("/status").await.contains("\"sessions\": "));
    // Their TTL passes: the count falls to zero.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = lb.admin_get("/metrics").await;
        if count(&text, "cs-1") + count(&text, "cs-2") == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "cookie sessions never left the count");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalancing_fills_a_new_backend_within_its_share_and_age() {
    let bs = backends("rb", 3).await;
    let (addr, admin) = (free_addr(), free_addr());
    let pool = "    rebalance: { max_share_per_minute: 10%, min_age: 2s }\n";
    let conf = |list: &str| pool_config((addr, admin), list, COOKIE, pool, "");
    let lb = Limpet::start_with(&conf(&backend_list(&bs[..2])), addr, admin).await;
    let c = client();
    let mut old = Vec::new();
    for _ in 0..60 {
        let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
        old.push((r.set_cookie.unwrap(), r.backend));
    }
    // A third backend joins; the old sessions age past min_age meanwhile.
    assert!(lb.reload(&conf(&backend_list(&bs))).await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Fresh sessions, younger than min_age: they never move.
    let mut fresh = Vec::new();
    for _ in 0..10 {
        let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
        fresh.push((r.set_cookie.unwrap(), r.backend));
    }
    for (cookie, home) in &fresh {
        let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
        assert_eq!(&r.backend, home, "a session younger than min_age moved");
    }
    // Old sessions come back: some move to the new backend, no more than 10% of the
    // live sessions in this minute.
    let mut moved = 0;
    for _ in 0..2 {
        for (cookie, home) in old.iter_mut() {
            let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
            if r.backend != *home {
                assert_eq!(r.backend, "rb-3", "moved elsewhere than the under-loaded backend");
                *cookie = r.set_cookie.expect("a moved session gets a new cookie");
                *home = r.backend;
                moved += 1;
            }
        }
    }
    eprintln!("{moved} sessions moved");
    assert!((1..=7).contains(&moved), "{moved} sessions moved");
    assert_eq!(lb.web_cookie_decisions("repinned").await, moved as f64);
}

/// Balancing is built from the configured weights; health acts at pick time. A backend
/// that is down when a reload happens takes new sessions as soon as it recovers, and a
/// pool whose every backend was down at a reload serves again once one is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_at_a_reload_takes_new_sessions_once_it_recovers() {
    let mut bs = backends("fr", 2).await;
    let spec = PoolSpec::new(&bs)
        .cookie()
        .pool_key("health_check: { kind: tcp, interval: 100ms, timeout: 100ms, rise: 1, fall: 1 }");
    let lb = spec.start().await;
    let c = client();
    // The same configuration with one harmless change, so that a reload happens.
    let changed = |idle: &str| spec.clone().server_key(&format!("client_idle_timeout: {idle}"));

    let a = bs.remove(0);
    let a_addr = a.addr;
    a.kill().await;
    wait_up(&lb, "fr-1", 0.0).await;
    assert!(lb.reload_spec(&changed("31s")).await);
    let a = Backend::start("fr-1", a_addr).await.unwrap();
    wait_up(&lb, "fr-1", 1.0).await;
    let mut on_a = 0;
    for _ in 0..20 {
        let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
        assert_eq!(r.status, 200);
        on_a += usize::from(r.backend == "fr-1");
    }
    assert_eq!(
        on_a, 10,
        "new sessions on the recovered backend, of 20 (round robin)"
    );

    // Every backend down at a reload.
    bs.insert(0, a);
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    for b in bs.drain(..) {
        b.kill().await;
    }
    wait_up(&lb, "fr-1", 0.0).await;
    wait_up(&lb, "fr-2", 0.0).await;
    assert!(lb.reload_spec(&changed("32s")).await);
    let _b = Backend::start("fr-2", addrs[1]).await.unwrap();
    wait_up(&lb, "fr-2", 1.0).await;
    for _ in 0..4 {
        let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
        assert_eq!((r.status, r.backend.as_str()), (200, "fr-2"));
    }
}

/// A health check slower than its interval: the next one starts `interval` after the
/// previous one ended, so checks of one backend never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_slower_than_their_interval_never_overlap() {
    use std::sync::{Arc, Mutex};
    // A backend that accepts and never answers: every check runs to its timeout.
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = mute.local_addr().unwrap();
    let accepted: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = accepted.clone();
    let acceptor = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = mute.accept().await {
            seen.lock().unwrap().push(Instant::now());
            held.push(s);
        }
    });
    let bs = backends("ov", 1).await;
    let lb = PoolSpec::new(&bs)
        .backend("mute", addr)
        .cookie()
        .pool_key(
            "health_check: { kind: http, path: /healthz, interval: 100ms, timeout: 600ms, rise: 1, fall: 1 }",
        )
        .start()
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while accepted.lock().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "{}", lb.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let times = accepted.lock().unwrap().clone();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        // 600 ms of timeout plus 100 ms of interval between two starts (less a little
        // for timer granularity); overlapping checks would start every 100 ms.
        assert!(gap >= Duration::from_millis(650), "checks {gap:?} apart");
    }
    assert_eq!(up(&lb, "mute").await, 0.0);
    acceptor.abort();
}

/// An HTTP check passes on a status in `expect_status` and fails on any other, over
/// the same connector as proxied requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_follow_expect_status() {
    let bs = backends("es", 1).await;
    let check = |expect: &str| {
        format!("health_check: {{ kind: http, path: /status/503, interval: 100ms, timeout: 500ms, rise: 1, fall: 1, expect_status: {expect} }}")
    };
    let spec = PoolSpec::new(&bs).cookie();
    let lb = spec.clone().pool_key(&check("200-399")).start().await;
    wait_up(&lb, "es-1", 0.0).await;
    assert!(
        lb.metric(r#"limpet_health_check_total{backend="es-1",pool="web",result="fail"}"#)
            .await
            >= 1.0
    );
    assert!(lb.reload_spec(&spec.pool_key(&check("503"))).await);
    wait_up(&lb, "es-1", 1.0).await;
    assert_eq!(get(&client(), &lb.url("/"), &[], "LIMPET").await.status, 200);
}

/// Pool `web` over two cookie backends `{prefix}-1` and `{prefix}-2` under fast TCP
/// checks; `{prefix}-1` is killed and seen down. Returns limpet, the pool without its
/// checks, the live backends (kept running) and the dead one's address.
async fn first_of_two_checked_down(prefix: &str) -> (Limpet, PoolSpec, Vec<Backend>, SocketAddr) {
    let mut bs = backends(prefix, 2).await;
    let spec = PoolSpec::new(&bs).cookie();
    let lb = spec
        .clone()
        .pool_key("health_check: { kind: tcp, interval: 100ms, timeout: 100ms, rise: 1, fall: 1 }")
        .start()
        .await;
    let dead = bs.remove(0);
    let addr = dead.addr;
    dead.kill().await;
    wait_up(&lb, &format!("{prefix}-1"), 0.0).await;
    (lb, spec, bs, addr)
}

/// A reload that removes a pool's active checks lifts the down verdict they gave:
/// nothing would ever test the backend again. It takes new sessions once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_active_checks_lifts_their_down_verdict() {
    let (lb, spec, _live, addr) = first_of_two_checked_down("rc").await;
    // The same configuration without health_check, while rc-1 is still dead.
    assert!(lb.reload_spec(&spec).await);
    wait_up(&lb, "rc-1", 1.0).await;
    let _back = Backend::start("rc-1", addr).await.unwrap();
    let c = client();
    let mut on_it = 0;
    for _ in 0..20 {
        let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
        assert_eq!(r.status, 200);
        on_it += usize::from(r.backend == "rc-1");
    }
    assert_eq!(on_it, 10, "new sessions on rc-1, of 20 (round robin)");
}

/// A reload that shortens the check interval: the next check comes by the new
/// interval, not `interval` of the old one after the last check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_check_interval_applies_at_the_reload() {
    let bs = backends("iv", 1).await;
    let check =
        |interval: &str| format!("health_check: {{ kind: tcp, interval: {interval}, timeout: 500ms }}");
    let spec = PoolSpec::new(&bs).cookie();
    let lb = spec.clone().pool_key(&check("1h")).start().await;
    let ok = r#"limpet_health_check_total{backend="iv-1",pool="web",result="ok"}"#;
    lb.wait_metric(ok, |v| v >= 1.0).await;
    assert!(lb.reload_spec(&spec.pool_key(&check("100ms"))).await);
    // An hour after the first check under the old schedule; a few tenths of a second
    // under the new one.
    lb.wait_metric(ok, |v| v >= 3.0).await;
}

/// A check in flight when a reload moves its backend to another address tested an
/// address that is no longer the backend's: its result counts for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_flight_at_an_address_change_counts_for_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;
    // The old address accepts and never answers: its check fails at its timeout.
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mute_addr = mute.local_addr().unwrap();
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, z) = (accepted.clone(), closed.clone());
    let acceptor = tokio::spawn(async move {
        while let Ok((mut s, _)) = mute.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let z = z.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                z.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let live = backends("ac", 1).await;
    let base = PoolSpec::new(&[]).cookie().pool_key(
        "health_check: { kind: http, path: /healthz, interval: 200ms, timeout: 3s, rise: 3, fall: 1 }",
    );
    let lb = base.clone().backend("ac-1", mute_addr).start().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no check reached the old address");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(lb.reload_spec(&base.backend("ac-1", live[0].addr)).await);
    assert_eq!(
        closed.load(Ordering::SeqCst),
        0,
        "the reload came after the check's timeout: nothing was in flight"
    );
    // The old check ends (limpet closes its connection at the timeout), then a check
    // of the new address ends after it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the old address's check never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ok = r#"limpet_health_check_total{backend="ac-1",pool="web",result="ok"}"#;
    let passed = lb.metric(ok).await;
    lb.wait_metric(ok, |v| v >= passed + 1.0).await;
    let log = lb.log_text();
    assert!(!log.contains("backend is down"), "{log}");
    assert_eq!(up(&lb, "ac-1").await, 1.0);
    acceptor.abort();
}

/// A backend's recovery is logged without a word of slow start in a pool that does
/// not ramp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_without_slow_start_logs_no_ramp() {
    let (lb, _spec, _live, addr) = first_of_two_checked_down("nr").await;
    let _back = Backend::start("nr-1", addr).await.unwrap();
    wait_up(&lb, "nr-1", 1.0).await;
    lb.wait_log("backend is up again").await;
    let log = lb.log_text();
    assert!(!log.contains("slow start"), "{log}");
}
