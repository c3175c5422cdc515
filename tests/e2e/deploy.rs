//! The files under deploy/ are checked by the tools that read them: Prometheus's alert
//! rules by `promtool check rules` and their unit tests (`promtool test rules`), the
//! scrape configuration by `promtool check config`.

use std::path::PathBuf;
use std::process::Command;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// Runs a checking tool (`install` says where it comes from) and asserts it passed,
/// with its output.
fn passes(cmd: &mut Command, install: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} ({install})"));
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn promtool(args: &[&str], file: &str) {
    passes(
        Command::new("promtool").args(args).arg(deploy(file)),
        "Debian package prometheus; scripts/setup.sh installs it",
    );
}

#[test]
fn alert_rules_are_valid_and_pass_their_unit_tests() {
    promtool(&["check", "rules"], "prometheus/limpet.rules.yml");
    promtool(&["test", "rules"], "prometheus/limpet.rules.test.yml");
}

#[test]
fn the_scrape_configuration_is_valid() {
    promtool(&["check", "config", "--syntax-only"], "prometheus/prometheus.yml");
}

/// Every limpet series the alert rules read is one a running limpet exports (from
/// startup), so no rule silently matches nothing after a rename.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_read_series_limpet_exports() {
    let rules = std::fs::read_to_string(deploy("prometheus/limpet.rules.yml")).unwrap();
    let mut names: Vec<&str> = rules
        .match_indices("limpet_")
        .map(|(i, _)| {
            let rest = &rules[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|n| n.len() > "limpet_".len())
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 8, "{names:?}");
    let bs = limpet_e2e::backends("dp", 1).await;
    let lb = limpet_e2e::PoolSpec::new(&bs)
        .cookie()
        .pool_key("health_check: { interval: 1s }")
        .start()
        .await;
    let text = lb.admin_get("/metrics").await;
    for name in names {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "the rules read {name}, which /metrics does not have"
        );
    }
}

/// The systemd unit: `Type=notify` (limpet says READY=1, tested in
/// `cli::the_service_manager_hears_ready_and_reloading`), a reload that checks first,
/// and hardening that `systemd-analyze security` rates 3.0 or lower (where
/// systemd-analyze is installed; elsewhere only the unit's keys are checked).
#[test]
fn the_systemd_unit_is_hardened_and_notifies() {
    let unit = deploy("limpet.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/usr/local/bin/limpet --check --config /etc/limpet/config.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=limpet",
        "EnvironmentFile=-/etc/limpet/env",
    ] {
        assert!(text.lines().any(|l| l == line), "the unit lacks `{line}`");
    }
    let Ok(out) = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
    else {
        eprintln!("systemd-analyze not installed: exposure not rated");
        return;
    };
    let report = String::from_utf8_lossy(&out.stdout);
    let level: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for limpet.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level:\n{report}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(level <= 3.0, "exposure {level}:\n{report}");
}

/// The image's configuration passes `limpet --check` with its secret from the
/// environment, and fails without it (the secret is never in the file).
#[test]
fn the_production_example_configuration_checks() {
    let check = |key: Option<&str>| {
        let mut cmd = Command::new(limpet_e2e::bin("limpet"));
        cmd.args(["--check", "--config"])
            .arg(deploy("config.production.yaml"));
        cmd.env_remove("LIMPET_COOKIE_KEY");
        if let Some(k) = key {
            cmd.env("LIMPET_COOKIE_KEY", k);
        }
        cmd.output().unwrap()
    };
    let ok = check(Some("an-example-secret-of-32-bytes-or-more-0123"));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let missing = check(None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("LIMPET_COOKIE_KEY"));
}

/// What the Containerfile must do to build as is with podman and docker and run
/// safely. (No image is built here: that needs a container engine and the network.)
#[test]
fn the_containerfile_is_portable_and_unprivileged() {
    let text = std::fs::read_to_string(deploy("Containerfile")).unwrap();
    for line in text.lines().filter(|l| l.starts_with("FROM ")) {
        let image = line.split_whitespace().nth(1).unwrap();
        // podman has no default registry: short names fail there.
        assert!(
            image.starts_with("docker.io/") || image.contains(".io/"),
            "{line}"
        );
    }
    for needed in [
        "USER limpet",
        "HEALTHCHECK ",
        "ca-certificates",
        "COPY deploy/config.production.yaml /etc/limpet/config.yaml",
        "--locked",
    ] {
        assert!(text.contains(needed), "the Containerfile lacks `{needed}`");
    }
    let ignore = std::fs::read_to_string(deploy("../.containerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l == "target/"),
        "target/ would be sent to the build"
    );
    let docker = std::fs::read_to_string(deploy("../.dockerignore")).unwrap();
    assert_eq!(ignore, docker);
}

/// Every query of the Grafana dashboard, run by a real Prometheus scraping a real
/// limpet: each must be valid and return data, so no panel is broken or empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/limpet.json")).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 14, "{exprs:?}");

    let bs = limpet_e2e::backends("gf", 2).await;
    let lb = limpet_e2e::PoolSpec::new(&bs)
        .cookie()
        .pool_key("health_check: { interval: 1s }")
        .start()
        .await;
    let dir = limpet_e2e::scratch();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{ scrape_interval: 1s }}\nscrape_configs:\n  - job_name: limpet\n    static_configs: [ {{ targets: [\"{}\"] }} ]\n",
            lb.admin
        ),
    )
    .unwrap();
    let web = limpet_e2e::free_addr();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .arg("--log.level=warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus; scripts/setup.sh installs it)");
    let c = limpet_e2e::client();
    let query = |expr: String| {
        let c = c.clone();
        async move {
            let encoded: String = expr
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        char::from(b).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let r = c
                .get(format!("http://{web}/api/v1/query?query={encoded}"))
                .send()
                .await
                .ok()?;
            serde_json::from_str::<serde_json::Value>(&r.text().await.ok()?).ok()
        }
    };
    // Traffic (new sessions and returning ones) while Prometheus takes a few scrapes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pinned = limpet_e2e::get(&c, &lb.url("/"), &[], "LIMPET").await;
        if let Some(cookie) = pinned.set_cookie {
            limpet_e2e::get(&c, &lb.url("/"), &[cookie.as_bytes()], "LIMPET").await;
        }
        let scrapes = query("count_over_time(up[1m])".into()).await;
        let n = scrapes
            .as_ref()
            .and_then(|v| v["data"]["result"][0]["value"][1].as_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        if n >= 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus did not scrape limpet"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut broken = Vec::new();
    for expr in &exprs {
        let concrete = expr.replace("$__rate_interval", "30s").replace("$job", ".*");
        let answer = query(concrete.clone()).await;
        let ok = answer.as_ref().is_some_and(|a| {
            a["status"] == "success" && a["data"]["result"].as_array().is_some_and(|r| !r.is_empty())
        });
        if !ok {
            broken.push(format!("{concrete}\n  -> {answer:?}"));
        }
    }
    let _ = prom.kill();
    let _ = prom.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(broken.is_empty(), "panels without data:\n{}", broken.join("\n"));
}

/// The Kubernetes manifests pass an offline schema validation (kubernetes-validate,
/// strict: no unknown fields) for Kubernetes 1.30, and the ConfigMap carries the
/// production configuration that `the_production_example_configuration_checks`
/// checks.
#[test]
fn the_kubernetes_manifests_are_valid() {
    let dir = deploy("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    passes(
        Command::new("kubernetes-validate")
            .args(["--strict", "--no-warn", "-k", "1.30.0"])
            .args(&files),
        "pip install kubernetes-validate; scripts/setup.sh installs it",
    );
    let map: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("configmap.yaml")).unwrap()).unwrap();
    let embedded = map["data"]["config.yaml"].as_str().unwrap();
    let production = std::fs::read_to_string(deploy("config.production.yaml")).unwrap();
    assert_eq!(
        embedded, production,
        "configmap.yaml and config.production.yaml differ"
    );
}
