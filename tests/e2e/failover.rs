//! Failover: a dead backend costs no request; its users are re-pinned with a cookie
//! naming the backend that really answered; everyone else stays put. Disabled backends
//! lose their sessions, draining ones keep them.

use std::collections::HashMap;

use limpet_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_costs_no_request_and_only_its_users_move() {
    let mut bs = backends("d", 3).await;
    let lb = Limpet::start(&bs, "name: LIMPET, ttl: 15m", "    retries: 2\n").await;
    let c = client();
    // 30 users, 10 per backend.
    let mut users: Vec<(String, String)> = Vec::new();
    for _ in 0..30 {
        let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
        users.push((r.set_cookie.unwrap(), r.backend));
    }
    // Kill d-2.
    let dead = bs.remove(1);
    assert_eq!(dead.id, "d-2");
    dead.kill().await;
    let mut moved: HashMap<usize, String> = HashMap::new();
    for round in 0..5 {
        for (i, (cookie, home)) in users.iter_mut().enumerate() {
            let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
            assert_eq!(r.status, 200, "round {round}, user {i}");
            assert_ne!(r.backend, "d-2");
            if *home == "d-2" {
                let new = r
                    .set_cookie
                    .expect("a re-pinned user gets a cookie naming the new backend");
                moved.insert(i, r.backend.clone());
                *cookie = new;
                *home = r.backend;
            } else {
                assert_eq!(&r.backend, home, "users of live backends never move");
                assert!(r.set_cookie.is_none());
            }
        }
    }
    assert_eq!(moved.len(), 10);
    assert_eq!(lb.web_cookie_decisions("repinned").await, 10.0);
    assert!(
        lb.metric(r#"limpet_backend_connect_errors_total{backend="d-2",pool="web"}"#)
            .await
            >= 10.0
    );
    assert_eq!(
        lb.metric(r#"limpet_backend_in_flight{backend="d-1",pool="web"}"#)
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_backend_repins_and_draining_keeps_sessions() {
    let bs = backends("s", 3).await;
    let spec = PoolSpec::new(&bs).cookie();
    let lb = spec.start().await;
    let c = client();
    let mut pinned: HashMap<String, String> = HashMap::new();
    while pinned.len() < 3 {
        let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
        pinned.insert(r.backend, r.set_cookie.unwrap());
    }
    let states = spec.clone().state("s-1", "draining").state("s-2", "disabled");
    assert!(lb.reload_spec(&states).await, "{}", lb.log_text());
    // Draining s-1 keeps its user, disabled s-2 loses it.
    let r = get(&c, &lb.url("/"), &[pinned["s-1"].as_bytes()], "LIMPET").await;
    assert_eq!((r.backend.as_str(), r.set_cookie.is_none()), ("s-1", true));
    let r = get(&c, &lb.url("/"), &[pinned["s-2"].as_bytes()], "LIMPET").await;
    assert_eq!(r.backend, "s-3", "the only backend taking new sessions");
    assert!(r.set_cookie.is_some());
    // New sessions only go to the active one.
    for _ in 0..10 {
        assert_eq!(get(&c, &lb.url("/"), &[], "LIMPET").await.backend, "s-3");
    }
    assert_eq!(lb.web_cookie_decisions("backend_down").await, 1.0);
    let m = lb.admin_get("/metrics").await;
    assert!(
        m.contains(r#"limpet_backend_state{backend="s-2",pool="web",state="disabled"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_pool_answers_503_instead_of_moving_a_session() {
    let bs = backends("x", 2).await;
    let spec = PoolSpec::new(&bs).cookie().pool_key("on_backend_down: strict");
    let lb = spec.start().await;
    let c = client();
    let r = get(&c, &lb.url("/"), &[], "LIMPET").await;
    assert!(lb.reload_spec(&spec.clone().state(&r.backend, "disabled")).await);
    let again = get(&c, &lb.url("/"), &[r.set_cookie.unwrap().as_bytes()], "LIMPET").await;
    assert_eq!(again.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_down_is_a_clean_error() {
    let bs = backends("z", 2).await;
    let lb = Limpet::start(&bs, "name: LIMPET, ttl: 15m", "").await;
    for b in bs {
        b.kill().await;
    }
    let r = get(&client(), &lb.url("/"), &[], "LIMPET").await;
    assert!(r.status == 502 || r.status == 503, "{}", r.status);
    assert!(r.set_cookie.is_none());
}
