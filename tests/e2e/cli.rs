//! The command line and signals: `--check`, `--version`, SIGHUP at any time, graceful
//! SIGTERM that lets in-flight requests finish, rejected reloads that change nothing.

use std::process::Command;
use std::time::{Duration, Instant};

use limpet_e2e::*;

fn good() -> String {
    config(
        "127.0.0.1:18080".parse().unwrap(),
        "127.0.0.1:19090".parse().unwrap(),
        "      - { id: a, address: 127.0.0.1:1 }\n",
        "name: LIMPET, ttl: 15m",
        "",
    )
}

#[test]
fn check_accepts_the_repo_config_and_reports_every_error() {
    let repo_config =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config.yaml")).unwrap();
    let (code, out, _) = check_config(&repo_config);
    assert_eq!((code, out.trim()), (0, "configuration OK"));
    let (code, out, _) = check_config(&good());
    assert_eq!((code, out.trim()), (0, "configuration OK"));

    let broken = good()
        .replace("grace_period: 5s", "grace_period: 5 seconds")
        .replace("pool: web", "pool: wbe")
        .replace("threads: 2", "threads: 2\n  debug_header: true")
        .replace(
            "      - { id: a, address: 127.0.0.1:1 }\n",
            "      - { id: a, address: 127.0.0.1:1 }\n      - { id: a, address: nowhere }\n",
        )
        .replace("ttl: 15m", "ttl: 15m, max_ttl: 10m");
    let (code, _, err) = check_config(&broken);
    assert_eq!(code, 1, "{err}");
    for needle in [
        "server.grace_period",
        "server.debug_header: unknown key (hint: did you mean `debug_headers`?)",
        "routes[0].pool: unknown pool `wbe` (hint: did you mean `web`?)",
        "pools.web.backends[1].id: backend id `a` is used twice",
        "pools.web.backends[1].address: `nowhere` is not an IP address with a port",
        "pools.web.persistence[0].cookie.ttl: 15m is above max_ttl 10m",
        "line ",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
    // A missing secret is an error of --check too, named by its key path.
    let out = Command::new(bin("limpet"))
        .args([
            "--check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config.yaml"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let no_env = good().replace("LIMPET_TEST_KEY", "LIMPET_KEY_THAT_IS_NOT_SET");
    let (code, _, err) = check_config(&no_env);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "cookie_keys[0].secret_env: environment variable `LIMPET_KEY_THAT_IS_NOT_SET` is not set"
        ),
        "{err}"
    );
    let (code, _, err) = check_config("pools: [\n");
    assert_eq!(code, 1);
    assert!(err.contains("line "), "{err}");
}

/// `limpet --version` names the commit, and `/metrics` says the same build in
/// `limpet_build_info`, beside the process metrics (memory, CPU, descriptors).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_build_info_name_the_commit() {
    let out = Command::new(bin("limpet")).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (version, commit) = text
        .strip_prefix("limpet ")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|rest| rest.split_once(" (commit "))
        .unwrap_or_else(|| panic!("not `limpet VERSION (commit HASH)`: {text}"));
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    // The tests run from a git checkout: the hash is known.
    assert!(commit.len() >= 12 && commit != "unknown", "{text}");
    let bs = backends("bi", 1).await;
    let lb = PoolSpec::new(&bs).cookie().start().await;
    let series = format!(r#"limpet_build_info{{commit="{commit}",version="{version}"}}"#);
    assert_eq!(lb.metric(&series).await, 1.0);
    assert!(lb.metric("process_resident_memory_bytes").await > 1e6);
    assert!(lb.metric("process_open_fds").await >= 3.0);
    assert!(lb.metric("process_start_time_seconds").await > 1.7e9);
}

fn sighup_ignored(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    // Ignored (SigIgn) at first, caught (SigCgt) once the reload service has its handler.
    ["SigIgn:", "SigCgt:"].iter().any(|field| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|mask| mask & 1 == 1)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_right_after_start_does_not_kill() {
    let bs = backends("h", 1).await;
    let (addr, admin) = (free_addr(), free_addr());
    let dir = scratch();
    let path = dir.join("c.yaml");
    std::fs::write(
        &path,
        config(addr, admin, &backend_list(&bs), "name: LIMPET, ttl: 15m", ""),
    )
    .unwrap();
    let mut child = Command::new(bin("limpet"))
        .arg("--config")
        .arg(&path)
        .arg("--upgrade-sock")
        .arg(dir.join("u.sock"))
        .env("LIMPET_TEST_KEY", TEST_SECRET)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Between fork and limpet's first line of `main` no program can protect itself; wait
    // until limpet has run that line (SIGHUP, signal 1, shows as ignored or caught), then signal it
    // throughout its start-up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sighup_ignored(pid) {
        assert!(Instant::now() < deadline, "limpet never ignored SIGHUP");
        std::thread::sleep(Duration::from_micros(200));
    }
    let start = Instant::now();
    #[allow(unsafe_code)]
    while start.elapsed() < Duration::from_millis(300) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP killed limpet");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("http://{addr}/")).await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let bs = backends("g", 1).await;
    let mut lb = Limpet::start(&bs, "name: LIMPET, ttl: 15m", "").await;
    let url = lb.url("/slow?ms=1500");
    let slow = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    lb.signal(libc::SIGTERM);
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the in-flight request completes"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = lb.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "limpet did not exit; log:\n{}",
            lb.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    // Idle after the slow request: exits well before the 5 s grace period.
    assert!(start.elapsed() < Duration::from_secs(4), "{:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_reloads_keep_the_running_config() {
    let bs = backends("v", 2).await;
    let (addr, admin) = (free_addr(), free_addr());
    let base = config(addr, admin, &backend_list(&bs), "name: LIMPET, ttl: 15m", "");
    let lb = Limpet::start_with(&base, addr, admin).await;
    let c = client();
    let pinned = get(&c, &lb.url("/"), &[], "LIMPET").await;
    let cookie = pinned.set_cookie.unwrap();
    let truncated = &base[..base.len() / 2];
    let restart_only = base.replace(&addr.to_string(), &free_addr().to_string());
    for (what, yaml) in [
        ("invalid", base.replace("ttl: 15m", "ttl: forever")),
        ("truncated", truncated.to_string()),
        ("restart-only", restart_only),
    ] {
        assert!(!lb.reload(&yaml).await, "{what} reload was accepted");
        let r = get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
        assert_eq!(
            (r.status, r.backend.as_str()),
            (200, pinned.backend.as_str()),
            "{what}"
        );
    }
    assert_eq!(lb.metric("limpet_config_generation").await, 1.0);
    assert_eq!(
        lb.metric(r#"limpet_config_reloads_total{result="error"}"#).await,
        3.0
    );
    let status = lb.admin_get("/status").await;
    assert!(status.contains("only takes effect on restart"), "{status}");
    assert!(lb.log_text().contains("reload rejected"));
    // A good reload afterwards clears the error and bumps the generation.
    assert!(lb.reload(&base).await);
    assert_eq!(lb.metric("limpet_config_generation").await, 2.0);
    assert!(lb
        .admin_get("/status")
        .await
        .contains("\"last_reload_error\": null"));
}

/// SIGUSR1 and SIGUSR2 (a logrotate script, an HAProxy habit) are logged and change
/// nothing; they never kill limpet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_and_sigusr2_are_logged_and_harmless() {
    let bs = backends("u", 1).await;
    let mut lb = Limpet::start(&bs, "name: LIMPET, ttl: 15m", "").await;
    for (sig, name) in [(libc::SIGUSR1, "SIGUSR1"), (libc::SIGUSR2, "SIGUSR2")] {
        lb.signal(sig);
        lb.wait_log(name).await;
        assert!(lb.child.try_wait().unwrap().is_none(), "{name} killed limpet");
        let r = get(&client(), &lb.url("/"), &[], "LIMPET").await;
        assert_eq!(r.status, 200);
    }
}

/// `server.pid_file`: written with limpet's pid at start (so operators signal this
/// instance, not every limpet on the host), and removed when limpet stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pid_file_names_this_instance_while_it_runs() {
    let bs = backends("pf", 1).await;
    let dir = scratch();
    let pid_file = dir.join("limpet.pid");
    let mut lb = PoolSpec::new(&bs)
        .cookie()
        .server_key(&format!("pid_file: {}", pid_file.display()))
        .start()
        .await;
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), lb.pid().to_string());
    lb.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while lb.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "limpet did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pid_file.exists(), "the pid file outlived limpet");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Redis URL from a missing variable or file is an error naming its key, and the
/// password of a URL that is not right is never printed.
#[test]
fn check_reports_a_redis_url_it_cannot_read_without_printing_it() {
    let store = |line: &str| format!("{}session_store: {{ kind: redis, {line} }}\n", good());
    let (code, _, err) = check_config(&store("redis_url_env: LIMPET_TEST_UNSET_REDIS_URL"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("session_store.redis_url_env") && err.contains("LIMPET_TEST_UNSET_REDIS_URL"),
        "{err}"
    );
    let (code, _, err) = check_config(&store("redis_url_file: /nonexistent/limpet-redis-url"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("session_store.redis_url_file") && err.contains("cannot read"),
        "{err}"
    );
    let (code, _, err) = check_config(&store(r#"redis_url: "http://user:hunter22@h""#));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not a Redis URL") && !err.contains("hunter22"),
        "{err}"
    );
}

/// Under systemd's `Type=notify`: `READY=1` once the listeners are up, and
/// `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1` around each reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_manager_hears_ready_and_reloading() {
    let dir = scratch();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
    let next = || async {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
            .await
            .expect("no message from limpet within 10 s")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let bs = backends("sd", 1).await;
    let (addr, admin) = (free_addr(), free_addr());
    let yaml = config(addr, admin, &backend_list(&bs), "name: LIMPET, ttl: 15m", "");
    let socket = path.display().to_string();
    let lb = Limpet::start_with_env(&yaml, addr, admin, &[("NOTIFY_SOCKET", &socket)]).await;
    let ready = next().await;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    lb.signal(libc::SIGHUP);
    let reloading = next().await;
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next().await, "READY=1");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `limpet --check --print`: the effective configuration on stdout, defaults filled
/// in, the demo's inline secret redacted; `--print` alone is refused.
#[test]
fn check_print_shows_the_effective_configuration_without_secrets() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config.yaml");
    let out = Command::new(bin("limpet"))
        .args(["--check", "--print", "--config", config])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8_lossy(&out.stdout);
    let printed: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(printed["server"]["request_header_timeout"], "10s", "a default");
    assert_eq!(printed["cookie_keys"][0]["secret"], "***");
    assert!(!yaml.contains("demo-only-secret"), "{yaml}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("configuration OK"));
    let alone = Command::new(bin("limpet"))
        .args(["--print", "--config", config])
        .output()
        .unwrap();
    assert!(!alone.status.success());
}

/// `limpet --check --print` on `yaml` with the secrets the examples read from the
/// environment set: the printed configuration, or standard error.
fn check_print(yaml: &str) -> Result<String, String> {
    let path = scratch().join("printed.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(bin("limpet"))
        .args(["--check", "--print", "--config"])
        .arg(&path)
        .env("LIMPET_TEST_KEY", TEST_SECRET)
        .env("LIMPET_COOKIE_KEY", TEST_SECRET)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && err.contains("configuration OK") {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(err)
    }
}

/// The limpet configurations in `text`: the file itself when it has `listeners` and
/// `pools`, or the values of a Kubernetes ConfigMap's `data` that have them. A file of
/// several documents is never a limpet configuration (limpet reads one).
fn limpet_configs(text: &str) -> Vec<String> {
    let is_config = |v: &serde_yaml::Value| v.get("pools").is_some() && v.get("listeners").is_some();
    let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return Vec::new();
    };
    if is_config(&v) {
        return vec![text.to_string()];
    }
    if v.get("kind").and_then(|k| k.as_str()) != Some("ConfigMap") {
        return Vec::new();
    }
    let data = v.get("data").and_then(|d| d.as_mapping()).into_iter().flatten();
    data.filter_map(|(_, d)| d.as_str())
        .filter(|inner| serde_yaml::from_str::<serde_yaml::Value>(inner).is_ok_and(|v| is_config(&v)))
        .map(str::to_string)
        .collect()
}

/// Every limpet configuration the repository ships as a file: config.yaml and the
/// YAML files under deploy/ and docs/ (whole, or inside a ConfigMap).
fn example_configs() -> Vec<(String, String)> {
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut files = vec![root.join("config.yaml")];
    let mut dirs = vec![root.join("deploy"), root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        out.extend(limpet_configs(&text).into_iter().map(|c| (name.clone(), c)));
    }
    out
}

/// `printed` with the inline secrets the printer hides (by design) taken back from
/// `original`, so that `--check` can load the keys.
fn with_inline_secrets(printed: &str, original: &str) -> String {
    let original: serde_yaml::Value = serde_yaml::from_str(original).unwrap();
    let mut printed: serde_yaml::Value = serde_yaml::from_str(printed).unwrap();
    if let Some(keys) = printed["cookie_keys"].as_sequence_mut() {
        for (i, key) in keys.iter_mut().enumerate() {
            if key.get("secret").is_some() {
                key["secret"] = original["cookie_keys"][i]["secret"].clone();
            }
        }
    }
    if printed["session_store"].get("redis_url").is_some() {
        printed["session_store"]["redis_url"] = original["session_store"]["redis_url"].clone();
    }
    serde_yaml::to_string(&printed).unwrap()
}

/// docs/operations.md: the configuration `limpet --check --print` writes is the same
/// configuration. Fed back to `--check` it passes and prints the same text again, for
/// every example configuration of the repository and the shapes the e2e tests build.
#[test]
fn the_printed_configuration_checks_and_prints_itself_again() {
    let a: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let base = || {
        PoolSpec::new(&[])
            .backend("a", a)
            .backend("b", "127.0.0.1:2".parse().unwrap())
    };
    let mut configs = example_configs();
    assert!(
        configs.iter().any(|(f, _)| f.starts_with("deploy")),
        "{configs:?}"
    );
    let specs = [
        ("cookie", base().cookie()),
        (
            "follow",
            base().method("cookie: { name: LIMPET, follow: APPSESSION, max_ttl: 1h }"),
        ),
        (
            "tables and hash",
            base()
                .method("header: { name: X-Session-Id, ttl: 2s, ttl_header: X-Ttl, max_ttl: 1h }")
                .method("source_ip: { ttl: 15m, ipv4_prefix: 24 }")
                .method("hash: {}")
                .pool_key("balance: consistent_hash")
                .pool_key("hash: { key: \"header:X-User\", balance_factor: 1.25 }"),
        ),
        (
            "health",
            base()
                .cookie()
                .pool_key("slow_start: 3s")
                .pool_key("health_check: { kind: http, path: /healthz, interval: 200ms, timeout: 150ms, rise: 2, fall: 2, expect_status: 503 }")
                .pool_key("passive_health: { max_fails: 3, window: 10s, cooldown: 2s }")
                .pool_key("rebalance: { max_share_per_minute: 10%, min_age: 2s }")
                .pool_key("on_backend_down: strict")
                .state("b", "draining")
                .weight("a", 3),
        ),
        (
            "server",
            base()
                .cookie()
                .server_key("trusted_proxies: [127.0.0.1/32, \"10.0.0.7\"]")
                .server_key("max_request_header_bytes: 16KiB")
                .server_key("request_header_timeout: 1500ms")
                .server_key("access_log_query: false")
                .server_key("log_format: json")
                .host("*.example.com"),
        ),
    ];
    configs.extend(
        specs
            .into_iter()
            .map(|(name, spec)| (name.to_string(), spec.yaml())),
    );
    let dir = scratch();
    let (cert, key) = self_signed(&dir, "edge", &["example.com"], Key::EcdsaP256, "limpet");
    configs.push((
        "tls listener".into(),
        format!(
            "listeners:\n  - {{ address: \"127.0.0.1:1\", tls: {{ certificates: [ {{ cert: \"{}\", key: \"{}\" }} ], hsts: 180d }} }}\n  \
             - {{ address: \"127.0.0.1:2\", h2c: true, redirect_https: true, max_connections: 10 }}\n\
             admin: {{ address: \"127.0.0.1:3\" }}\n\
             cookie_keys: [ {{ id: k1, secret_env: LIMPET_TEST_KEY }} ]\n\
             routes: [ {{ host: example.com, path_prefix: /, pool: web }} ]\n\
             pools:\n  web:\n    backends: [ {{ id: a, address: \"127.0.0.1:4\" }} ]\n",
            cert.display(),
            key.display()
        ),
    ));
    for (name, yaml) in &configs {
        let first = check_print(yaml).unwrap_or_else(|e| panic!("{name}: --check --print refused it: {e}"));
        let again = check_print(&with_inline_secrets(&first, yaml))
            .unwrap_or_else(|e| panic!("{name}: --check refused its own printout: {e}\n{first}"));
        assert_eq!(first, again, "{name}: printed differently the second time");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
