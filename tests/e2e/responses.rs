//! Responses limpet makes itself (no route, a pinned backend gone in a strict pool, no
//! backend reachable, a backend too slow): one shape for all of them (plain text that
//! starts with `limpet:`, `Cache-Control: no-store`, `Retry-After` on 503), each counted
//! in `limpet_responses_total{pool, code, reason}`, whose series exist from startup.

use limpet_e2e::*;

async fn counted(lb: &Limpet, pool: &str, code: u16, reason: &str) -> f64 {
    lb.metric(&format!(
        r#"limpet_responses_total{{code="{code}",pool="{pool}",reason="{reason}"}}"#
    ))
    .await
}

/// Sends `path` to `lb` as host `host` with an optional cookie; asserts limpet's shape.
async fn own(c: &reqwest::Client, lb: &Limpet, host: &str, path: &str, cookie: Option<&str>) -> u16 {
    let mut req = c.get(lb.url(path)).header("host", host);
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let h = r.headers().clone();
    let body = r.text().await.unwrap();
    assert!(body.starts_with("limpet: "), "{status} {body:?}");
    assert_eq!(h["content-type"], "text/plain; charset=utf-8", "{status}");
    assert_eq!(h["cache-control"], "no-store", "{status}");
    assert_eq!(h.contains_key("retry-after"), status == 503, "{status}: {h:?}");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_limpet_makes_has_one_shape_and_is_counted() {
    let strict = backends("st", 1).await;
    let open = backends("op", 1).await;
    let (addr, admin) = (free_addr(), free_addr());
    let yaml = format!(
        r#"server:
  upstream_connect_timeout: 1s
  upstream_read_timeout: 300ms
listeners:
  - address: "{addr}"
admin:
  address: "{admin}"
cookie_keys:
  - {{ id: k1, secret_env: LIMPET_TEST_KEY }}
routes:
  - {{ host: app.test, path_prefix: /strict, pool: strict }}
  - {{ host: app.test, path_prefix: /, pool: open }}
pools:
  strict:
    on_backend_down: strict
    persistence:
      - cookie: {{ name: LIMPET, ttl: 15m }}
    backends:
{}  open:
    backends:
{}"#,
        backend_list(&strict),
        backend_list(&open)
    );
    let lb = Limpet::start_with(&yaml, addr, admin).await;
    let c = client();
    // Every series an alert may use is there before anything happened.
    for (pool, code, reason) in [
        ("", 404, "no_route"),
        ("open", 503, "no_backend"),
        ("strict", 503, "session_backend_down"),
        ("open", 502, "connect_failed"),
        ("open", 504, "upstream_timeout"),
    ] {
        let series = format!(r#"limpet_responses_total{{code="{code}",pool="{pool}",reason="{reason}"}}"#);
        assert!(lb.has_series(&series).await, "{series} missing at startup");
    }

    assert_eq!(own(&c, &lb, "other.test", "/", None).await, 404);
    assert_eq!(counted(&lb, "", 404, "no_route").await, 1.0);

    assert_eq!(own(&c, &lb, "app.test", "/slow?ms=2000", None).await, 504);
    assert_eq!(counted(&lb, "open", 504, "upstream_timeout").await, 1.0);

    // A strict pool whose pinned backend died (no health check has noticed): the
    // failed connect becomes a 503 that tells the client to retry.
    let r = c
        .get(lb.url("/strict"))
        .header("host", "app.test")
        .send()
        .await
        .unwrap();
    let pin = reply(r, "LIMPET").await.set_cookie.unwrap();
    for b in strict {
        b.kill().await;
    }
    assert_eq!(own(&c, &lb, "app.test", "/strict", Some(&pin)).await, 503);
    assert_eq!(counted(&lb, "strict", 503, "session_backend_down").await, 1.0);

    for b in open {
        b.kill().await;
    }
    assert_eq!(own(&c, &lb, "app.test", "/", None).await, 502);
    assert_eq!(counted(&lb, "open", 502, "connect_failed").await, 1.0);
}

/// Series that alert rules read exist at 0 from startup, so `increase(...) > 0` fires
/// on the first event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertable_series_exist_from_startup() {
    let bs = backends("al", 1).await;
    let lb = Limpet::start(&bs, "name: LIMPET, ttl: 15m", "").await;
    for series in [
        r#"limpet_config_reloads_total{result="error"}"#,
        r#"limpet_config_reloads_total{result="ok"}"#,
        r#"limpet_session_store_errors_total{kind="timeout"}"#,
        r#"limpet_session_store_errors_total{kind="connection"}"#,
        r#"limpet_session_store_errors_total{kind="evicted"}"#,
        r#"limpet_backend_connect_errors_total{backend="al-1",pool="web"}"#,
        r#"limpet_health_check_total{backend="al-1",pool="web",result="fail"}"#,
        r#"limpet_persistence_decisions_total{method="cookie",outcome="backend_down",pool="web"}"#,
    ] {
        assert!(lb.has_series(series).await, "{series} missing at startup");
    }
    assert_eq!(
        lb.metric(r#"limpet_config_reloads_total{result="error"}"#).await,
        0.0
    );
}
