//! Hot reload under traffic: twenty SIGHUPs that add, remove, drain and re-weight
//! backends lose no request and move no session that did not have to move; requests
//! and WebSockets in flight finish where they started; a backend's address can change
//! under its sessions; signing keys rotate through reloads.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use limpet_e2e::*;
use tokio_tungstenite::tungstenite::Message;

/// One backend line: (backend, state, weight).
fn list(bs: &[Backend], entries: &[(usize, &str, u32)]) -> String {
    entries
        .iter()
        .map(|(i, state, weight)| {
            format!(
                "      - {{ id: {}, address: \"{}\", state: {state}, weight: {weight} }}\n",
                bs[*i].id, bs[*i].addr
            )
        })
        .collect()
}

/// What the clients saw: failures, and every session that changed backend.
#[derive(Default)]
struct Seen {
    requests: u64,
    failures: Vec<String>,
    /// (from, to) of each session that moved.
    moves: Vec<(String, String)>,
}

/// A keep-alive client playing `users` users, each with its own cookie jar, until
/// `stop`.
async fn user_loop(lb_url: String, users: usize, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let c = client();
    let mut jar: Vec<Option<(String, String)>> = vec![None; users];
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        for (u, slot) in jar.iter_mut().enumerate() {
            // Users come and go: every so often one starts a new session, so backends
            // added by a reload get sessions that a later reload may take away.
            if (round + u).is_multiple_of(12) {
                *slot = None;
            }
            let cookies: Vec<&[u8]> = slot.iter().map(|(c, _)| c.as_bytes()).collect();
            let mut req = c.get(&lb_url);
            for v in &cookies {
                req = req.header("cookie", *v);
            }
            let result = req.send().await;
            let failure = match &result {
                Ok(r) if r.status() == 200 => None,
                Ok(r) => Some(format!("status {}", r.status())),
                Err(e) => Some(e.to_string()),
            };
            {
                let mut s = seen.lock().unwrap();
                s.requests += 1;
                if let Some(f) = failure {
                    s.failures.push(f);
                    continue;
                }
            }
            let Ok(resp) = result else { continue };
            let r = reply(resp, "LIMPET").await;
            let moved = slot
                .as_ref()
                .filter(|(_, home)| *home != r.backend)
                .map(|(_, home)| home.clone());
            if let Some(home) = moved {
                seen.lock().unwrap().moves.push((home, r.backend.clone()));
                *slot = None;
            }
            if let (None, Some(cookie)) = (slot.as_ref(), r.set_cookie) {
                *slot = Some((cookie, r.backend));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_lose_no_request_and_move_no_session() {
    let bs = backends("z", 6).await;
    let (addr, admin) = (free_addr(), free_addr());
    let conf = |entries: &[(usize, &str, u32)], ttl: &str| {
        config(
            addr,
            admin,
            &list(&bs, entries),
            &format!("name: LIMPET, ttl: {ttl}"),
            "",
        )
    };
    let a = "active";
    let mut state: Vec<(usize, &str, u32)> = vec![(0, a, 1), (1, a, 1), (2, a, 1), (3, a, 1)];
    let lb = Limpet::start_with(&conf(&state, "15m"), addr, admin).await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(user_loop(lb.url("/"), 8, stop.clone(), seen.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Backends whose sessions may move: removed or disabled at some point.
    let mut may_move: HashSet<String> = HashSet::new();
    let set = |state: &mut Vec<(usize, &'static str, u32)>, i: usize, s: &'static str, w: u32| {
        state.retain(|e| e.0 != i);
        state.push((i, s, w));
        state.sort();
    };
    let steps: [(&str, usize, &str, u32); 20] = [
        ("add", 4, a, 1),
        ("add", 5, a, 1),
        ("weight", 1, a, 3),
        ("drain", 2, "draining", 1),
        ("undrain", 2, a, 1),
        ("remove", 4, a, 1),
        ("drain", 3, "draining", 1),
        ("weight", 1, a, 1),
        ("add", 4, a, 1),
        ("undrain", 3, a, 1),
        ("disable", 5, "disabled", 1),
        ("enable", 5, a, 1),
        ("weight", 2, a, 2),
        ("remove", 5, a, 1),
        ("ttl", 0, a, 1),
        ("add", 5, a, 1),
        ("weight", 0, a, 2),
        ("drain", 4, "draining", 1),
        ("disable", 4, "disabled", 1),
        ("remove", 4, a, 1),
    ];
    let mut ttl = "15m";
    for (what, i, s, w) in steps {
        match what {
            "remove" => {
                state.retain(|e| e.0 != i);
                may_move.insert(bs[i].id.clone());
            }
            "ttl" => ttl = "10m",
            _ => {
                set(&mut state, i, s, w);
                if s == "disabled" {
                    may_move.insert(bs[i].id.clone());
                }
            }
        }
        assert!(
            lb.reload(&conf(&state, ttl)).await,
            "{what} {i}: {}",
            lb.log_text()
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!("{} requests, {} sessions moved", seen.requests, seen.moves.len());
    assert!(seen.requests > 200, "only {} requests", seen.requests);
    assert!(seen.failures.is_empty(), "failed requests: {:?}", seen.failures);
    assert!(
        !seen.moves.is_empty(),
        "no session was ever on a removed or disabled backend"
    );
    for (from, to) in &seen.moves {
        assert!(may_move.contains(from), "a session moved from {from} to {to}");
    }
    assert_eq!(lb.metric("limpet_config_generation").await, 21.0);
    // The removed backend's series are gone; a kept one's remain.
    let metrics = lb.admin_get("/metrics").await;
    assert!(
        !metrics.contains(&format!("backend=\"{}\"", bs[4].id)),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("backend=\"{}\"", bs[0].id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_work_finishes_on_its_snapshot() {
    let bs = backends("f", 2).await;
    let (addr, admin) = (free_addr(), free_addr());
    let all = list(&bs, &[(0, "active", 1), (1, "active", 1)]);
    let lb = Limpet::start_with(
        &config(addr, admin, &all, "name: LIMPET, ttl: 15m", ""),
        addr,
        admin,
    )
    .await;
    let c = client();
    // Find a session on backend 0, then open a slow request and a WebSocket there.
    let cookie = loop {
        let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
        if r.backend == bs[0].id {
            break r.set_cookie.unwrap();
        }
    };
    // A 64 MiB download read slowly, so that it spans the reload.
    let download = {
        let c = c.clone();
        let url = lb.url(&format!("/download?bytes={}", 64 << 20));
        let cookie = cookie.clone();
        tokio::spawn(async move {
            let mut r = c.get(url).header("cookie", cookie).send().await.unwrap();
            let mut got = 0usize;
            while let Some(chunk) = r.chunk().await.unwrap() {
                got += chunk.len();
                if got % (4 << 20) < chunk.len() {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
            }
            got
        })
    };
    let slow = {
        let c = c.clone();
        let url = lb.url("/slow?ms=1500");
        let cookie = cookie.clone();
        tokio::spawn(async move {
            let r = c.get(url).header("cookie", cookie).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/chat",
        lb.addr
    ))
    .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["x-backend-id"], bs[0].id.as_str());
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Backend 0 leaves the configuration while both are open.
    let only_1 = list(&bs, &[(1, "active", 1)]);
    assert!(
        lb.reload(&config(addr, admin, &only_1, "name: LIMPET, ttl: 15m", ""))
            .await
    );
    for n in 0..3 {
        ws.send(Message::text(format!("m{n}"))).await.unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), format!("{}:m{n}", bs[0].id));
    }
    assert_eq!(download.await.unwrap(), 64 << 20, "the download was cut short");
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(&bs[0].id), "{body}");
    ws.close(None).await.unwrap();
    // A pool and a route added by reload serve at once.
    let api = list(&bs, &[(0, "active", 1)]);
    let with_api = format!(
        "{}  api:\n    persistence: []\n    backends:\n{api}",
        config(addr, admin, &only_1, "name: LIMPET, ttl: 15m", "")
    )
    .replace(
        "routes:\n",
        "routes:\n  - host: api.example\n    path_prefix: /\n    pool: api\n",
    );
    assert!(lb.reload(&with_api).await, "{}", lb.log_text());
    let r = c
        .get(lb.url("/"))
        .header("host", "api.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-backend-id"], bs[0].id.as_str());
    // New requests, the old session's included, go to what the new snapshot has.
    let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
    assert_eq!(r.backend, bs[1].id);
    assert!(
        r.set_cookie.is_some(),
        "the removed backend's session is re-pinned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_change_keeps_sessions_and_keys_rotate() {
    let mut bs = backends("m", 2).await;
    let (addr, admin) = (free_addr(), free_addr());
    let persistence =
        "      - cookie: { name: LIMPET, ttl: 15m }\n      - header: { name: X-Session-Id, ttl: 15m }\n";
    let keys = |extra: &str| format!("cookie_keys:\n{extra}");
    let k1 = "  - id: k1\n    secret_env: LIMPET_TEST_KEY\n";
    let k2 = "  - id: k2\n    secret: \"second-key-0123456789abcdef0123456789\"\n";
    let conf = |bs: &[Backend], keyset: &str| {
        pool_config((addr, admin), &backend_list(bs), persistence, "", "").replace(&keys(k1), &keys(keyset))
    };
    let lb = Limpet::start_with(&conf(&bs, k1), addr, admin).await;
    let c = client();
    let cookie = loop {
        let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
        if r.backend == bs[0].id {
            break r.set_cookie.unwrap();
        }
    };
    let mut table_users = Vec::new();
    for u in 0..6 {
        let r = c
            .get(lb.url("/"))
            .header("x-session-id", format!("u{u}"))
            .send()
            .await
            .unwrap();
        table_users.push((u, reply(r, "LIMPET").await.backend));
    }

    // Backend 0 moves to a new address (a new process with the same id); the old
    // process is gone.
    let moved = Backend::start(&bs[0].id, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let old = std::mem::replace(&mut bs[0], moved);
    assert!(lb.reload(&conf(&bs, k1)).await);
    old.kill().await;
    let hits = lb.web_cookie_decisions("hit").await;
    for _ in 0..5 {
        let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
        assert_eq!((r.status, r.backend.as_str()), (200, bs[0].id.as_str()));
        assert!(r.set_cookie.is_none(), "the session was re-pinned");
    }
    assert_eq!(lb.web_cookie_decisions("hit").await, hits + 5.0);
    for (u, home) in &table_users {
        let r = c
            .get(lb.url("/"))
            .header("x-session-id", format!("u{u}"))
            .send()
            .await
            .unwrap();
        assert_eq!(&reply(r, "LIMPET").await.backend, home);
    }

    // Rotation: k2 signs new cookies, k1 still verifies old ones while listed.
    assert!(lb.reload(&conf(&bs, &format!("{k2}{k1}"))).await);
    let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
    assert_eq!(r.backend, bs[0].id);
    assert!(r.set_cookie.is_none());
    let fresh = get(&c, &lb.url("/"), &[], "LIMPET").await;
    let fresh_cookie = fresh.set_cookie.unwrap();
    // k1 retired: its cookies are invalid, k2's still hit.
    assert!(lb.reload(&conf(&bs, k2)).await);
    let invalid = lb.web_cookie_decisions("invalid").await;
    let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
    assert!(r.set_cookie.is_some());
    assert_eq!(lb.web_cookie_decisions("invalid").await, invalid + 1.0);
    let r = get(&c, &lb.url("/"), &[fresh_cookie.as_bytes()], "LIMPET").await;
    assert_eq!(r.backend, fresh.backend);
    assert!(r.set_cookie.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_config_file_is_a_rejected_reload() {
    let bs = backends("x", 2).await;
    let lb = Limpet::start(&bs, "name: LIMPET, ttl: 15m", "").await;
    let c = client();
    let pinned = get(&c, &lb.url("/"), &[], "LIMPET").await;
    let cookie = pinned.set_cookie.unwrap();
    std::fs::remove_file(&lb.config).unwrap();
    lb.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lb.metric(r#"limpet_config_reloads_total{result="error"}"#).await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "{}", lb.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
    assert_eq!((r.status, r.backend.as_str()), (200, pinned.backend.as_str()));
    let status = lb.admin_get("/status").await;
    assert!(status.contains(&lb.config.display().to_string()), "{status}");
    assert!(lb.log_text().contains("reload rejected"));
    assert_eq!(lb.metric("limpet_config_generation").await, 1.0);
}
