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

fn promtool(args: &[&str], file: &str) {
    let out = Command::new("promtool")
        .args(args)
        .arg(deploy(file))
        .output()
        .expect("promtool (Debian package prometheus; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?} {file}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
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
