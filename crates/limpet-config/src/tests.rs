use super::*;
use std::time::Duration;

const GOOD: &str = r#"
server:
  threads: 2
  client_idle_timeout: 30s
listeners:
  - address: 127.0.0.1:8080
admin:
  address: 127.0.0.1:9090
cookie_keys:
  - id: k1
    secret_env: LIMPET_COOKIE_KEY
routes:
  - host: "*"
    path_prefix: /
    pool: web
pools:
  web:
    balance: round_robin
    persistence:
      - cookie: { name: LIMPET, ttl: 15m, max_ttl: 4h }
    backends:
      - { id: web-1, address: "127.0.0.1:8081", weight: 2 }
      - { id: web-2, address: "127.0.0.1:8082", state: draining }
"#;

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.0,
    }
}

fn has(errs: &[ConfigError], path: &str, needle: &str) -> bool {
    errs.iter()
        .any(|e| e.path == path && e.to_string().contains(needle))
}

#[test]
fn good_file_parses_to_typed_config() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.server.upstream_connect_timeout, Duration::from_secs(2));
    let web = &c.pools[&PoolId::new("web")];
    assert_eq!(web.backends.len(), 2);
    assert_eq!(web.backends[0].weight, 2);
    assert_eq!(web.backends[1].state, BackendState::Draining);
    let Persistence::Cookie(ck) = &web.persistence[0] else {
        panic!("not a cookie: {:?}", web.persistence[0]);
    };
    assert_eq!(ck.ttl, Duration::from_secs(900));
    assert_eq!(ck.max_ttl, Duration::from_secs(4 * 3600));
    assert_eq!(ck.same_site, SameSite::Lax);
    assert!(ck.http_only);
    assert_eq!(
        c.cookie_keys[0].source,
        SecretSource::Env("LIMPET_COOKIE_KEY".into())
    );
    assert_eq!(c.routes[0].host, HostMatch::Any);
}

#[test]
fn every_error_is_reported_with_path_location_and_hint() {
    let text = GOOD
        .replace("client_idle_timeout: 30s", "client_idle_timeout: 30 parsecs")
        .replace("balance: round_robin", "balanse: round_robin")
        .replace("id: web-2", "id: web-1")
        .replace("\"127.0.0.1:8081\"", "\"localhost\"")
        .replace("pool: web", "pool: wbe")
        .replace("ttl: 15m, max_ttl: 4h", "ttl: 5h, max_ttl: 4h");
    let errs = errors(&text);
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let msg = all.join("\n");
    assert!(has(&errs, "server.client_idle_timeout", "unit"), "{msg}");
    assert!(has(&errs, "pools.web.balanse", "did you mean `balance`"), "{msg}");
    assert!(has(&errs, "pools.web.backends[1].id", "used twice"), "{msg}");
    assert!(has(&errs, "pools.web.backends[0].address", "IP:PORT"), "{msg}");
    assert!(has(&errs, "routes[0].pool", "did you mean `web`"), "{msg}");
    assert!(
        has(&errs, "pools.web.persistence[0].cookie.ttl", "above max_ttl"),
        "{msg}"
    );
    assert!(errs.iter().all(|e| e.location.is_some()), "{msg}");
    let ttl = errs
        .iter()
        .find(|e| e.path == "server.client_idle_timeout")
        .unwrap();
    assert_eq!(ttl.location, Some((4, 3)), "{msg}");
}

#[test]
fn empty_pool_and_missing_pieces() {
    let errs = errors("routes: [{pool: web}]\npools:\n  web:\n    backends: []\n");
    assert!(has(&errs, "pools.web.backends", "empty"));
    let errs = errors("pools: {}\n");
    assert!(has(&errs, "routes", "required"));
    assert!(has(&errs, "pools", "empty"));
}

#[test]
fn type_errors_do_not_hide_other_errors() {
    let text = GOOD
        .replace("threads: 2", "threads: many")
        .replace("weight: 2", "weight: heavy");
    let errs = errors(&text);
    assert!(has(&errs, "server.threads", "whole number"), "{errs:?}");
    assert!(
        has(&errs, "pools.web.backends[0].weight", "whole number"),
        "{errs:?}"
    );
}

#[test]
fn syntax_errors_have_a_location() {
    let errs = errors("pools:\n  web: [\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].location.is_some(), "{:?}", errs[0]);
    let errs = errors("");
    assert!(has(&errs, "pools", "required"), "{errs:?}");
}

#[test]
fn unknown_top_level_key_and_not_yet_supported() {
    let text = format!("{GOOD}\nlisteners2: []\n");
    let errs = errors(&text);
    assert!(has(&errs, "listeners2", "did you mean `listeners`"));
    let text = GOOD.replace("balance: round_robin", "balance: round_robim");
    assert!(has(
        &errors(&text),
        "pools.web.balance",
        "did you mean `round_robin`"
    ));
}

#[test]
fn redis_session_store() {
    let text = format!(
        "{GOOD}session_store: {{ kind: redis, redis_url: \"rediss://app:s3cret@redis.internal:6380/2\", key_prefix: \"limpet:prod:\", timeout: 20ms, pool_size: 8 }}\n"
    );
    let store = parse(&text).unwrap().session_store;
    let redis = store.redis.unwrap();
    assert_eq!(redis.key_prefix, "limpet:prod:");
    assert_eq!(redis.timeout, Duration::from_millis(20));
    assert_eq!(redis.pool_size, 8);
    // The password never reaches a log line.
    assert!(!format!("{redis:?}").contains("s3cret"));
    assert_eq!(redact_url(&redis.url), "rediss://app:***@redis.internal:6380/2");
    // Defaults.
    let text = format!("{GOOD}session_store: {{ kind: redis, redis_url: \"redis://127.0.0.1\" }}\n");
    let redis = parse(&text).unwrap().session_store.redis.unwrap();
    assert_eq!((redis.key_prefix.as_str(), redis.pool_size), ("limpet:", 4));
    assert_eq!(redis.timeout, Duration::from_millis(50));
    // Every mistake at once.
    let text = format!(
        "{GOOD}session_store: {{ kind: redis, redis_url: \"http://x:pw@h\", key_prefix: \"a b\", timeout: 1m, pool_size: 0, max_entries: 5 }}\n"
    );
    let errs = errors(&text);
    assert!(
        has(&errs, "session_store.redis_url", "not a Redis URL"),
        "{errs:?}"
    );
    assert!(!format!("{errs:?}").contains("pw@"), "{errs:?}");
    assert!(has(&errs, "session_store.key_prefix", "without spaces"));
    assert!(has(&errs, "session_store.timeout", "out of range"));
    assert!(has(&errs, "session_store.pool_size", "out of range"));
    assert!(has(
        &errs,
        "session_store.max_entries",
        "only applies to kind: memory"
    ));
    let text = format!("{GOOD}session_store: {{ kind: redis }}\n");
    assert!(has(&errors(&text), "session_store.redis_url", "needs redis_url"));
}

#[test]
fn every_persistence_method_and_hash_settings() {
    let text = GOOD
        .replace("balance: round_robin", "balance: consistent_hash\n    hash: { key: \"header:X-User\", balance_factor: 1.25 }")
        .replace(
            "      - cookie: { name: LIMPET, ttl: 15m, max_ttl: 4h }\n",
            "      - cookie: { name: LIMPET }\n      - source_ip: { ttl: 10m, ipv4_prefix: 24 }\n      - header: { name: X-Session-Id, ttl: 5m, ttl_header: X-Session-TTL, max_ttl: 1h }\n      - hash: {}\n",
        );
    let text = format!("{text}session_store: {{ kind: memory, max_entries: 5000 }}\n");
    let c = parse(&text).unwrap();
    assert_eq!(c.session_store.max_entries, 5000);
    let web = &c.pools[&PoolId::new("web")];
    assert_eq!(web.balance, Balance::ConsistentHash);
    assert_eq!(web.hash.key, HashKey::Header("x-user".into()));
    assert_eq!(web.hash.balance_factor, Some(1.25));
    let methods: Vec<&str> = web.persistence.iter().map(Persistence::method).collect();
    assert_eq!(methods, ["cookie", "source_ip", "header", "hash"]);
    // Application-controlled: the app cookie's lifetime is the session's, so a ttl of
    // limpet's own is refused.
    let follow = text.replace(
        "name: LIMPET }",
        "name: LIMPET, follow: JSESSIONID, max_ttl: 8h }",
    );
    let Persistence::Cookie(c) = &parse(&follow).unwrap().pools[&PoolId::new("web")].persistence[0] else {
        unreachable!("the first method is a cookie")
    };
    assert_eq!(c.follow.as_deref(), Some("JSESSIONID"));
    assert_eq!(c.max_ttl, Duration::from_secs(8 * 3600));
    let with_ttl = text.replace("name: LIMPET }", "name: LIMPET, follow: JSESSIONID, ttl: 5m }");
    assert!(has(
        &errors(&with_ttl),
        "pools.web.persistence[0].cookie.ttl",
        "takes its lifetime from it"
    ));
    assert_eq!(
        web.persistence[1],
        Persistence::SourceIp(SourceIpPersistence {
            ttl: Duration::from_secs(600),
            ipv4_prefix: 24,
            ipv6_prefix: 64
        })
    );
    assert_eq!(
        web.persistence[2],
        Persistence::Header(HeaderPersistence {
            name: "x-session-id".into(),
            ttl: Duration::from_secs(300),
            ttl_header: Some("x-session-ttl".into()),
            max_ttl: Duration::from_secs(3600),
        })
    );
}

#[test]
fn bad_method_settings_are_all_reported() {
    let text = GOOD.replace("balance: round_robin", "balance: round_robin\n    hash: { key: \"body\", balance_factor: 0.5 }")
        .replace(
            "      - cookie: { name: LIMPET, ttl: 15m, max_ttl: 4h }\n",
            "      - cookie: { name: LIMPET, follow: LIMPET }\n      - source_ip: { ipv4_prefix: 33, ipv6_prefix: 0 }\n      - header: { ttl: 5h, max_ttl: 1h }\n      - source_ip: {}\n      - hash: { key: path }\n",
        );
    let text = format!("{text}session_store: {{ kind: memory, redis_url: \"redis://x\" }}\n");
    let errs = errors(&text);
    let m = "pools.web.persistence";
    assert!(has(&errs, "pools.web.hash.key", "not a hash key"), "{errs:?}");
    assert!(has(&errs, "pools.web.hash.balance_factor", "out of range"));
    assert!(has(
        &errs,
        &format!("{m}[0].cookie.follow"),
        "names limpet's own cookie"
    ));
    assert!(has(
        &errs,
        &format!("{m}[1].source_ip.ipv4_prefix"),
        "out of range"
    ));
    assert!(has(
        &errs,
        &format!("{m}[1].source_ip.ipv6_prefix"),
        "out of range"
    ));
    assert!(has(&errs, &format!("{m}[2].header.name"), "is required"));
    assert!(has(&errs, m, "source_ip is listed twice"));
    assert!(has(&errs, &format!("{m}[4].hash"), "takes no keys"));
    assert!(has(
        &errs,
        "session_store.redis_url",
        "only applies to kind: redis"
    ));
}

#[test]
fn cookie_persistence_needs_a_key() {
    let text = GOOD.replace(
        "cookie_keys:\n  - id: k1\n    secret_env: LIMPET_COOKIE_KEY\n",
        "",
    );
    assert!(has(&errors(&text), "cookie_keys", "no signing key"));
}

#[test]
fn host_patterns() {
    let text = GOOD.replace("host: \"*\"", "host: \"*.Example.com\"");
    let c = parse(&text).unwrap();
    assert_eq!(c.routes[0].host, HostMatch::Suffix(".example.com".into()));
}

#[test]
fn config_example_in_repo_is_valid() {
    let text = include_str!("../../../config.yaml");
    if let Err(e) = parse(text) {
        panic!("config.yaml is invalid:\n{e}");
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever bytes arrive, parse returns errors rather than panicking.
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        /// Mutating a good file by cutting it anywhere never panics and every error has a path or location.
        #[test]
        fn truncated_files_report_errors(cut in 0usize..GOOD.len()) {
            if let Err(e) = parse(&GOOD[..cut]) {
                prop_assert!(!e.is_empty());
                for err in e.iter() {
                    prop_assert!(!err.message.is_empty());
                }
            }
        }
    }
}

#[test]
fn health_checks_and_slow_start() {
    let text = GOOD.replace(
        "balance: round_robin",
        "balance: round_robin\n    slow_start: 30s\n    health_check: { kind: http, path: /ready, interval: 500ms, timeout: 200ms, rise: 1, fall: 2, expect_status: 200-299, host: app.internal }\n    passive_health: { max_fails: 5, window: 20s, cooldown: 15s }",
    );
    let web = &parse(&text).unwrap().pools[&PoolId::new("web")];
    assert_eq!(web.slow_start, Some(Duration::from_secs(30)));
    let hc = web.health_check.clone().unwrap();
    assert_eq!((hc.kind, hc.path.as_str()), (CheckKind::Http, "/ready"));
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_millis(500), Duration::from_millis(200))
    );
    assert_eq!((hc.rise, hc.fall, hc.expect_status), (1, 2, (200, 299)));
    assert_eq!(hc.host.as_deref(), Some("app.internal"));
    assert_eq!(
        web.passive_health,
        Some(PassiveHealth {
            max_fails: 5,
            window: Duration::from_secs(20),
            cooldown: Duration::from_secs(15)
        })
    );
    // Defaults, and a bare status.
    let text = GOOD.replace(
        "balance: round_robin",
        "balance: round_robin\n    health_check: { expect_status: 204 }\n    passive_health: {}",
    );
    let web = &parse(&text).unwrap().pools[&PoolId::new("web")];
    let hc = web.health_check.clone().unwrap();
    assert_eq!(
        (hc.kind, hc.path.as_str(), hc.rise, hc.fall),
        (CheckKind::Http, "/healthz", 2, 3)
    );
    assert_eq!(
        (hc.interval, hc.timeout, hc.expect_status),
        (Duration::from_secs(2), Duration::from_secs(1), (204, 204))
    );
    assert_eq!(web.passive_health.unwrap().max_fails, 3);
    assert_eq!(web.slow_start, None);
    // Every mistake at once.
    let text = GOOD.replace(
        "balance: round_robin",
        "balance: round_robin\n    slow_start: 2h\n    health_check: { kind: icmp, path: healthz, interval: 10ms, timeout: 5ms, rise: 0, expect_status: 600, hots: x }\n    passive_health: { max_fails: 0, window: 1ms }",
    );
    let errs = errors(&text);
    let hc = "pools.web.health_check";
    assert!(has(&errs, "pools.web.slow_start", "out of range"), "{errs:?}");
    assert!(has(&errs, &format!("{hc}.kind"), "not one of"));
    assert!(has(&errs, &format!("{hc}.path"), "not a request path"));
    assert!(has(&errs, &format!("{hc}.interval"), "out of range"));
    assert!(has(&errs, &format!("{hc}.timeout"), "out of range"));
    assert!(has(&errs, &format!("{hc}.rise"), "out of range"));
    assert!(has(&errs, &format!("{hc}.expect_status"), "not a status"));
    assert!(has(&errs, &format!("{hc}.hots"), "did you mean `host`"));
    assert!(has(&errs, "pools.web.passive_health.max_fails", "out of range"));
    assert!(has(&errs, "pools.web.passive_health.window", "out of range"));
}

/// A check may take longer than its interval (a slow backend on a short interval): the
/// next one starts `interval` after it ends, as Envoy and HAProxy do, so none overlap.
#[test]
fn health_check_timeout_may_exceed_interval() {
    let text = GOOD.replace(
        "balance: round_robin",
        "balance: round_robin\n    health_check: { interval: 200ms, timeout: 3s }",
    );
    let c = parse(&text).unwrap();
    let hc = c.pools[&PoolId::new("web")].health_check.clone().unwrap();
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_millis(200), Duration::from_secs(3))
    );
}

#[test]
fn rebalance_settings() {
    let text = GOOD.replace(
        "balance: round_robin",
        "balance: round_robin\n    rebalance: { max_share_per_minute: 5%, min_age: 2m }",
    );
    let r = parse(&text).unwrap().pools[&PoolId::new("web")]
        .rebalance
        .unwrap();
    assert!((r.max_share_per_minute - 0.05).abs() < 1e-9);
    assert_eq!(r.min_age, Duration::from_secs(120));
    let text = GOOD.replace(
        "balance: round_robin",
        "balance: round_robin\n    rebalance: { max_share_per_minute: 0.2 }",
    );
    let r = parse(&text).unwrap().pools[&PoolId::new("web")]
        .rebalance
        .unwrap();
    assert_eq!(
        (r.max_share_per_minute, r.min_age),
        (0.2, Duration::from_secs(300))
    );
    for bad in ["0%", "150%", "lots", "-1"] {
        let text = GOOD.replace(
            "balance: round_robin",
            &format!("balance: round_robin\n    rebalance: {{ max_share_per_minute: \"{bad}\" }}"),
        );
        assert!(
            has(
                &errors(&text),
                "pools.web.rebalance.max_share_per_minute",
                "not a share"
            ),
            "{bad}"
        );
    }
    let text = GOOD.replace(
        "balance: round_robin",
        "balance: round_robin\n    rebalance: { min_age: 1m }",
    );
    assert!(has(
        &errors(&text),
        "pools.web.rebalance.max_share_per_minute",
        "is required"
    ));
}

#[test]
fn edge_listeners() {
    let text = GOOD.replace(
        "listeners:\n  - address: 127.0.0.1:8080\n",
        "listeners:\n  - address: 127.0.0.1:8080\n    redirect_https: true\n  - address: 127.0.0.1:8443\n    tls: { certificates: [{ cert: a.pem, key: a.key }, { cert: b.pem, key: b.key }], hsts: 365d }\n  - address: 127.0.0.1:8081\n    h2c: true\n",
    );
    let c = parse(&text).unwrap();
    assert!(c.listeners[0].redirect_https && c.listeners[0].tls.is_none());
    let tls = c.listeners[1].tls.clone().unwrap();
    assert_eq!(tls.certificates.len(), 2);
    assert_eq!(tls.hsts, Some(Duration::from_secs(365 * 86_400)));
    assert_eq!(tls.min_version, TlsVersion::V1_2);
    assert!(c.listeners[2].h2c);

    let bad = GOOD.replace(
        "listeners:\n  - address: 127.0.0.1:8080\n",
        "listeners:\n  - address: 127.0.0.1:8080\n    proxy_protocol: true\n  - address: 127.0.0.1:8443\n    h2c: true\n    tls: { cert: a.pem, key: a.key, certificates: [{ cert: b.pem, key: b.key }], min_version: \"1.3\", hsts: soon }\n  - address: 127.0.0.1:8444\n    tls: { cert: a.pem }\n",
    );
    let errs = errors(&bad);
    assert!(
        has(&errs, "listeners[0].proxy_protocol", "trusted_proxies"),
        "{errs:?}"
    );
    assert!(has(&errs, "listeners[1].h2c", "without TLS"));
    assert!(has(&errs, "listeners[1].tls", "both cert/key and certificates"));
    assert!(has(&errs, "listeners[1].tls.min_version", "cannot be enforced"));
    assert!(has(&errs, "listeners[1].tls.hsts", "soon"));
    assert!(has(&errs, "listeners[2].tls.key", "is required"));
}

#[test]
fn upstream_protocol_and_tls() {
    let text = GOOD.replace(
        "balance: round_robin",
        "balance: round_robin\n    protocol: h2\n    tls: { sni: api.internal, ca: /etc/ca.pem }",
    );
    let web = &parse(&text).unwrap().pools[&PoolId::new("web")];
    assert_eq!(web.protocol, UpstreamProtocol::H2);
    let tls = web.tls.clone().unwrap();
    assert!(tls.verify);
    assert_eq!(tls.sni.as_deref(), Some("api.internal"));

    for (pool, path, message) in [
        ("protocol: h2", "pools.web.protocol", "h2 needs tls"),
        (
            "protocol: h2c\n    tls: { sni: a.b }",
            "pools.web.protocol",
            "h2c is cleartext",
        ),
        (
            "tls: { ca: /etc/ca.pem }",
            "pools.web.tls.sni",
            "required while verify is on",
        ),
        (
            "tls: { verify: false, client_cert: c.pem }",
            "pools.web.tls.client_key",
            "is required",
        ),
        ("protocol: h3", "pools.web.protocol", "not one of"),
    ] {
        let text = GOOD.replace(
            "balance: round_robin",
            &format!("balance: round_robin\n    {pool}"),
        );
        let errs = errors(&text);
        assert!(has(&errs, path, message), "{pool}: {errs:?}");
    }
    let off = GOOD.replace(
        "balance: round_robin",
        "balance: round_robin\n    tls: { verify: false }",
    );
    assert!(
        !parse(&off).unwrap().pools[&PoolId::new("web")]
            .tls
            .clone()
            .unwrap()
            .verify
    );
}

#[test]
fn request_head_limits() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.server.max_request_header_bytes, 64 * 1024);
    assert_eq!(c.server.request_header_timeout, Duration::from_secs(10));
    for (value, bytes) in [("16KiB", 16 * 1024), ("8192", 8192), ("1MiB", 1024 * 1024)] {
        let text = GOOD.replace(
            "threads: 2",
            &format!("threads: 2\n  max_request_header_bytes: {value}"),
        );
        assert_eq!(
            parse(&text).unwrap().server.max_request_header_bytes,
            bytes,
            "{value}"
        );
    }
    let bad = GOOD.replace(
        "threads: 2",
        "threads: 2\n  max_request_header_bytes: 2MiB\n  request_header_timeout: 10m",
    );
    let errs = errors(&bad);
    assert!(
        has(&errs, "server.max_request_header_bytes", "out of range"),
        "{errs:?}"
    );
    assert!(has(&errs, "server.request_header_timeout", "out of range"));
    let words = GOOD.replace("threads: 2", "threads: 2\n  max_request_header_bytes: lots");
    assert!(has(
        &errors(&words),
        "server.max_request_header_bytes",
        "not a size"
    ));
}

#[test]
fn the_pid_file_is_optional_and_restart_only() {
    let none = parse(GOOD).unwrap();
    assert_eq!(none.server.pid_file, None);
    let with = parse(&GOOD.replace("  threads: 2\n", "  threads: 2\n  pid_file: /run/limpet.pid\n")).unwrap();
    assert_eq!(
        with.server.pid_file.as_deref(),
        Some(std::path::Path::new("/run/limpet.pid"))
    );
    let refused = restart_only(&none, &with).unwrap_err();
    assert!(has(&refused.0, "server.pid_file", "only takes effect on restart"));
    assert!(restart_only(&with, &with.clone()).is_ok());
}

#[test]
fn http2_limits_default_like_haproxy_and_warn_when_a_reload_cannot_reach_http2() {
    let plain = parse(GOOD).unwrap();
    assert_eq!(plain.server.h2_max_concurrent_streams, 100);
    let more = parse(&GOOD.replace(
        "  threads: 2\n",
        "  threads: 2\n  h2_max_concurrent_streams: 250\n",
    ))
    .unwrap();
    assert_eq!(more.server.h2_max_concurrent_streams, 250);
    let refused = restart_only(&plain, &more).unwrap_err();
    assert!(has(
        &refused.0,
        "server.h2_max_concurrent_streams",
        "only takes effect on restart"
    ));
    let zero = GOOD.replace("  threads: 2\n", "  threads: 2\n  h2_max_concurrent_streams: 0\n");
    assert!(has(
        &errors(&zero),
        "server.h2_max_concurrent_streams",
        "out of range"
    ));

    // A new idle timeout or header limit reaches HTTP/2 connections only at restart:
    // said when some listener speaks HTTP/2, not otherwise.
    let idle = |c: &str| c.replace("client_idle_timeout: 30s", "client_idle_timeout: 5s");
    let (old, new) = (parse(GOOD).unwrap(), parse(&idle(GOOD)).unwrap());
    assert!(
        http2_restart_warnings(&old, &new).is_empty(),
        "no HTTP/2 listener"
    );
    let h2c = GOOD.replace(
        "  - address: 127.0.0.1:8080\n",
        "  - address: 127.0.0.1:8080\n    h2c: true\n",
    );
    let (old, new) = (parse(&h2c).unwrap(), parse(&idle(&h2c)).unwrap());
    let warned = http2_restart_warnings(&old, &new);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].starts_with("server.client_idle_timeout: changed"),
        "{warned:?}"
    );
    assert!(http2_restart_warnings(&old, &old.clone()).is_empty());
}

#[test]
fn the_redis_url_comes_inline_from_the_environment_or_from_a_file_never_two() {
    let store = |keys: &str| format!("{GOOD}session_store: {{ kind: redis, {keys} }}\n");
    let env = parse(&store("redis_url_env: REDIS_URL")).unwrap();
    let redis = env.session_store.redis.unwrap();
    assert_eq!(redis.url_source, SecretSource::Env("REDIS_URL".into()));
    assert_eq!(redis.url, "", "read when loading, not by the parser");
    let file = parse(&store("redis_url_file: /run/secrets/redis")).unwrap();
    assert_eq!(
        file.session_store.redis.unwrap().url_source,
        SecretSource::File("/run/secrets/redis".into())
    );
    let both = errors(&store("redis_url: \"redis://h\", redis_url_env: REDIS_URL"));
    assert!(has(&both, "session_store", "takes one of"));
    let none = errors(&store("key_prefix: \"a:\""));
    assert!(has(&none, "session_store.redis_url", "needs redis_url"));
    let memory = errors(&format!(
        "{GOOD}session_store: {{ kind: memory, redis_url_file: /x }}\n"
    ));
    assert!(has(
        &memory,
        "session_store.redis_url_file",
        "only applies to kind: redis"
    ));
}

/// `limpet --check --print`: the effective configuration, parsed again, is the same
/// configuration, with every default written out and no secret in the text.
#[test]
fn the_printed_configuration_parses_back_to_itself() {
    let rich = r#"
server:
  threads: 3
  h2_max_concurrent_streams: 250
  request_header_timeout: 2500ms
  max_request_header_bytes: 32KiB
  trusted_proxies: [10.0.0.0/8, "192.0.2.7"]
  pid_file: /run/limpet.pid
  access_log_file: /var/log/limpet/access.log
  access_log_query: false
  log_level: debug
listeners:
  - address: 127.0.0.1:8080
    h2c: true
    max_connections: 500
  - address: 127.0.0.1:8443
    tls: { certificates: [ { cert: /etc/a.pem, key: /etc/a.key } ], hsts: 365d }
admin: { address: 127.0.0.1:9090 }
cookie_keys:
  - { id: k1, secret_env: LIMPET_COOKIE_KEY }
  - { id: k0, secret_file: /etc/limpet/old.key }
session_store: { kind: redis, redis_url_env: REDIS_URL, key_prefix: "app:", timeout: 20ms }
routes:
  - { host: "*.example.com", path_prefix: /api, pool: api }
  - { host: "*", path_prefix: /app, pool: app }
  - { host: "*", path_prefix: /, pool: web }
pools:
  app:
    persistence:
      - cookie: { name: LIMPET_APP, follow: APPSESSION, max_ttl: 2h }
    backends:
      - { id: app-1, address: "127.0.0.1:7001" }
  web:
    balance: least_requests
    persistence:
      - cookie: { name: LIMPET, ttl: 15m, max_ttl: 4h, secure: true, same_site: strict, domain: example.com }
      - source_ip: { ttl: 1h, ipv4_prefix: 24 }
    on_backend_down: strict
    retries: 1
    slow_start: 30s
    rebalance: { max_share_per_minute: 0.05, min_age: 5m }
    health_check: { path: /healthz, interval: 2s, timeout: 500ms, expect_status: 200-299, host: app.internal }
    passive_health: { max_fails: 5, window: 10s, cooldown: 30s }
    backends:
      - { id: web-1, address: "127.0.0.1:8081", weight: 3 }
      - { id: web-2, address: "127.0.0.1:8082", state: draining }
  api:
    protocol: h2
    tls: { verify: true, sni: api.internal, ca: /etc/ca.pem }
    balance: consistent_hash
    hash: { key: "header:x-user", balance_factor: 1.25 }
    persistence:
      - header: { name: X-Session, ttl: 30m, ttl_header: X-Session-Ttl, max_ttl: 8h }
      - hash: {}
    backends:
      - { id: api-1, address: "127.0.0.1:9001" }
"#;
    let first = parse(rich).unwrap();
    let printed = effective_yaml(&first);
    let again = parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(first, again, "{printed}");
    // Defaults appear; the Redis URL's source is named, not read.
    assert!(printed.contains("client_idle_timeout: 30s"), "{printed}");
    assert!(printed.contains("redis_url_env: REDIS_URL"), "{printed}");
    let good = parse(GOOD).unwrap();
    assert_eq!(parse(&effective_yaml(&good)).unwrap(), good);
}

#[test]
fn printing_never_shows_a_secret() {
    let inline = GOOD.replace(
        "secret_env: LIMPET_COOKIE_KEY",
        "secret: \"hunter2-hunter2-hunter2-hunter2\"",
    );
    let text = format!(
        "{inline}session_store: {{ kind: redis, redis_url: \"redis://app:pa55word@redis:6379/0\" }}\n"
    );
    let printed = effective_yaml(&parse(&text).unwrap());
    assert!(
        !printed.contains("hunter2") && !printed.contains("pa55word"),
        "{printed}"
    );
    assert!(
        printed.contains("secret: '***'") || printed.contains("secret: \"***\""),
        "{printed}"
    );
}
