//! Several limpet instances sharing one real `redis-server` (and one key set): every
//! pin made through one is honoured by the others, races agree on one backend, and an
//! outage of Redis costs no request.

use std::time::{Duration, Instant};

use limpet_e2e::*;

const CHAIN: &str = "      - cookie: { name: LIMPET, ttl: 15m }\n      - header: { name: X-Session-Id, ttl: 3s }\n      - source_ip: { ttl: 3s }\n";

async fn instance(bs: &[Backend], redis: &Redis, persistence: &str) -> Limpet {
    let (addr, admin) = (free_addr(), free_addr());
    let yaml = format!(
        "{}session_store: {{ kind: redis, redis_url: \"{}\", key_prefix: \"e2e:\", timeout: 50ms, pool_size: 2 }}\n",
        pool_config((addr, admin), &backend_list(bs), persistence, "", "  trusted_proxies: [127.0.0.1]\n"),
        redis.url()
    );
    Limpet::start_with(&yaml, addr, admin).await
}

/// GET / through `lb` with optional session id, forwarded client and cookie.
async fn via(
    c: &reqwest::Client,
    lb: &Limpet,
    id: Option<&str>,
    client_ip: Option<&str>,
    cookie: Option<&str>,
) -> Reply {
    let mut req = c.get(lb.url("/"));
    if let Some(id) = id {
        req = req.header("x-session-id", id);
    }
    if let Some(ip) = client_ip {
        req = req.header("x-forwarded-for", ip);
    }
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    reply(req.send().await.unwrap(), "LIMPET").await
}

/// Table entries of pool `web` as `lb` reads them from Redis.
async fn table_entries(lb: &Limpet) -> f64 {
    lb.metric(r#"limpet_session_store_entries{pool="web"}"#).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_every_pin_and_expire_together() {
    let redis = Redis::start().await;
    let bs = backends("rs", 4).await;
    let a = instance(&bs, &redis, CHAIN).await;
    let b = instance(&bs, &redis, CHAIN).await;
    let c = client();

    // Sessions created through A: one per header id (each from its own client), one
    // per client address alone, and A's cookies.
    let created = Instant::now();
    let mut by_id = Vec::new();
    for i in 0..8 {
        let r = via(
            &c,
            &a,
            Some(&format!("user-{i}")),
            Some(&format!("10.0.0.{i}")),
            None,
        )
        .await;
        by_id.push((i, r.backend, r.set_cookie.unwrap()));
    }
    let mut by_ip = Vec::new();
    for i in 0..4 {
        by_ip.push((
            i,
            via(&c, &a, None, Some(&format!("10.1.0.{i}")), None)
                .await
                .backend,
        ));
    }
    // B honours each of them.
    for (i, home, cookie) in &by_id {
        assert_eq!(
            &via(&c, &b, Some(&format!("user-{i}")), Some("10.2.0.1"), None)
                .await
                .backend,
            home
        );
        assert_eq!(
            &via(&c, &b, None, Some("10.2.0.2"), Some(cookie)).await.backend,
            home,
            "cookie"
        );
    }
    for (i, home) in &by_ip {
        assert_eq!(
            &via(&c, &b, None, Some(&format!("10.1.0.{i}")), None)
                .await
                .backend,
            home
        );
    }
    assert!(
        created.elapsed() < Duration::from_secs(2),
        "too slow to test a 3 s TTL"
    );
    assert_eq!(b.web_decisions("header", "hit").await, 8.0);
    assert_eq!(b.web_decisions("source_ip", "hit").await, 4.0);
    assert_eq!(b.web_decisions("cookie", "hit").await, 8.0);
    // B's gauges count what A created, from Redis: 8 header and 8 + 4 source_ip
    // entries (B itself created none: each of its requests hit).
    let deadline = Instant::now() + Duration::from_secs(5);
    while table_entries(&b).await != 20.0 {
        assert!(Instant::now() < deadline, "B counts {}", table_entries(&b).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Expiry is Redis's: after the static TTL both instances start anew.
    // (Whole seconds: a 3 s session lasts at least 3 s and less than 4 s.)
    tokio::time::sleep(Duration::from_millis(5500).saturating_sub(created.elapsed())).await;
    let (a_before, b_before) = (
        a.web_sessions_started("header").await,
        b.web_sessions_started("header").await,
    );
    via(&c, &a, Some("user-0"), Some("10.3.0.1"), None).await;
    via(&c, &b, Some("user-1"), Some("10.3.0.2"), None).await;
    assert_eq!(a.web_sessions_started("header").await, a_before + 1.0);
    assert_eq!(b.web_sessions_started("header").await, b_before + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creators_agree_on_one_backend() {
    let redis = Redis::start().await;
    let bs = backends("rr", 4).await;
    let persistence = "      - header: { name: X-Session-Id, ttl: 15m }\n";
    let a = instance(&bs, &redis, persistence).await;
    let b = instance(&bs, &redis, persistence).await;
    let c = client();
    for i in 0..20 {
        let id = format!("race-{i}");
        tokio::join!(
            via(&c, &a, Some(&id), None, None),
            via(&c, &b, Some(&id), None, None)
        );
    }
    for i in 0..20 {
        let id = format!("race-{i}");
        let winner = via(&c, &a, Some(&id), None, None).await.backend;
        for _ in 0..3 {
            assert_eq!(
                via(&c, &a, Some(&id), None, None).await.backend,
                winner,
                "{id} on A"
            );
            assert_eq!(
                via(&c, &b, Some(&id), None, None).await.backend,
                winner,
                "{id} on B"
            );
        }
    }
    // 20 sessions and one index per backend that holds some.
    let keys: u64 = redis.command("DBSIZE").await.unwrap()[1..].parse().unwrap();
    assert!((21..=24).contains(&keys), "{keys} keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_costs_no_request_and_tables_resume() {
    let mut redis = Redis::start().await;
    let bs = backends("ro", 3).await;
    let lb = instance(&bs, &redis, "      - header: { name: X-Session-Id, ttl: 15m }\n").await;
    let c = client();
    let load = |from: usize, n: usize| {
        let c = c.clone();
        let url = lb.url("/");
        tokio::spawn(async move {
            let mut failed = Vec::new();
            let mut slowest = Duration::ZERO;
            for i in from..from + n {
                let id = format!("load-{}", i % 50);
                let t = Instant::now();
                match c.get(&url).header("x-session-id", id).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
                slowest = slowest.max(t.elapsed());
            }
            (failed, slowest)
        })
    };
    let (failed, _) = load(0, 200).await.unwrap();
    assert_eq!(failed, Vec::<String>::new());
    // Slow: Redis stops answering for a while. Calls time out after 50 ms, and while
    // it keeps failing only one call in 200 ms waits for it.
    let during = load(200, 400);
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.freeze(true);
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.freeze(false);
    let (failed, slowest) = during.await.unwrap();
    assert!(
        failed.is_empty(),
        "requests failed while Redis was slow: {failed:?}"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "a request waited {slowest:?}"
    );
    assert!(
        lb.metric(r#"limpet_session_store_errors_total{kind="timeout"}"#)
            .await
            > 0.0
    );
    // Down: the process is gone.
    let during = load(600, 600);
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.kill();
    let (failed, _) = during.await.unwrap();
    assert!(
        failed.is_empty(),
        "requests failed while Redis was down: {failed:?}"
    );
    assert!(
        lb.metric(r#"limpet_session_store_errors_total{kind="connection"}"#)
            .await
            > 0.0
    );
    // Back up (empty): a new session is created and then honoured again.
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let hits = lb.web_decisions("header", "hit").await;
        let first = via(&c, &lb, Some("after"), None, None).await;
        let again = via(&c, &lb, Some("after"), None, None).await;
        if lb.web_decisions("header", "hit").await > hits && again.backend == first.backend {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tables never resumed: {}",
            lb.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Logged once per transition (slow, back, down, back), not once per request.
    let log = lb.log_text();
    let down = log.matches("session store unavailable").count();
    assert!((1..=2).contains(&down), "{log}");
    assert!(log.contains("session store reachable again"), "{log}");
}

/// Runs a command, failing the test with its output when it fails.
fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_password() {
    // A private CA and a certificate for 127.0.0.1, made with openssl.
    let dir = scratch();
    let at = |f: &str| dir.join(f).display().to_string();
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=limpet-test-ca",
            "-keyout",
            &at("ca.key"),
            "-out",
            &at("ca.pem"),
        ]));
    run(std::process::Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"])
        .args(["-keyout", &at("srv.key"), "-out", &at("srv.csr")]));
    run(std::process::Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-CAcreateserial"])
        .args([
            "-in",
            &at("srv.csr"),
            "-CA",
            &at("ca.pem"),
            "-CAkey",
            &at("ca.key"),
            "-extfile",
            &at("ext.cnf"),
            "-out",
            &at("srv.pem"),
        ]));
    let port = free_addr().port();
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            &at("srv.pem"),
            "--tls-key-file",
            &at("srv.key"),
        ])
        .args(["--tls-ca-cert-file", &at("ca.pem"), "--tls-auth-clients", "no"])
        .args(["--requirepass", "s3cret-pw", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "redis-server (TLS) did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bs = backends("tls", 3).await;
    // The URL (and its password) never sits in the YAML: the right one comes from the
    // environment (`redis_url_env`), the wrong one from a file (`redis_url_file`).
    let start = |store: String, url: String| {
        let (addr, admin) = (free_addr(), free_addr());
        let yaml = format!(
            "{}session_store: {{ kind: redis, {store}, timeout: 500ms }}\n",
            pool_config(
                (addr, admin),
                &backend_list(&bs),
                "      - header: { name: X-Session-Id, ttl: 15m }\n",
                "",
                ""
            )
        );
        let ca = at("ca.pem");
        async move {
            let env = [
                ("SSL_CERT_FILE", ca.as_str()),
                ("LIMPET_TEST_REDIS_URL", url.as_str()),
            ];
            let lb = Limpet::start_with_env(&yaml, addr, admin, &env).await;
            assert!(!std::fs::read_to_string(&lb.config).unwrap().contains("s3cret-pw"));
            lb
        }
    };
    let c = client();
    // The right password over TLS: sessions are stored and honoured.
    let url = |password: &str| format!("rediss://:{password}@127.0.0.1:{port}");
    let lb = start("redis_url_env: LIMPET_TEST_REDIS_URL".into(), url("s3cret-pw")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let first = via(&c, &lb, Some("tls-user"), None, None).await;
        let again = via(&c, &lb, Some("tls-user"), None, None).await;
        if lb.web_decisions("header", "hit").await >= 1.0 {
            assert_eq!(first.backend, again.backend);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no session over TLS: {}",
            lb.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!lb.log_text().contains("s3cret-pw"));
    // A wrong password: every request still served, the failures counted and logged
    // without the password.
    let url_file = at("redis-url");
    std::fs::write(&url_file, format!("{}\n", url("not-the-password"))).unwrap();
    let wrong = start(format!("redis_url_file: {url_file}"), String::new()).await;
    for _ in 0..5 {
        assert_eq!(via(&c, &wrong, Some("tls-user"), None, None).await.status, 200);
    }
    assert!(
        wrong
            .metric(r#"limpet_session_store_errors_total{kind="connection"}"#)
            .await
            > 0.0
    );
    let log = wrong.log_text();
    assert!(
        log.contains("session store unavailable") && !log.contains("not-the-password"),
        "{log}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// A WebSocket starts its table session with one store write, as a plain request does
/// (the upgrade path once recorded every session twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_records_its_session_once() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let bs = backends("rw", 2).await;
    let redis = Redis::start().await;
    let lb = instance(&bs, &redis, "      - header: { name: X-Session-Id, ttl: 1m }\n").await;
    let c = client();
    // `SET` runs once per create (inside limpet's create script) and nowhere else.
    let before = redis.calls("set").await;
    let r = via(&c, &lb, Some("plain-1"), None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(redis.calls("set").await - before, 1, "a plain request");

    let before = redis.calls("set").await;
    let mut req = format!("ws://{}/chat", lb.addr).into_client_request().unwrap();
    req.headers_mut().insert("x-session-id", "ws-1".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    drop(ws);
    assert_eq!(redis.calls("set").await - before, 1, "a WebSocket");
}
