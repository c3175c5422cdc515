//! The limpet process under test: starting the real binary on ephemeral ports, its
//! signals, reloads, admin endpoints and metrics.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{backend_list, config, pool_config, Backend, PoolSpec, TEST_SECRET};

/// Path of a workspace binary built next to this test executable.
pub fn bin(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("{}_BIN", name.to_uppercase().replace('-', "_"))) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace` first (make test does)",
        p.display()
    );
    p
}

/// A free loopback port (bound then released; the kernel will not hand it out again soon).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "limpet-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts the limpet binary `program` on `config` with the test signing key, its
/// upgrade socket in `dir`, `LIMPET_LOG=log_filter`, stderr to `stderr` and `env`.
pub fn launch(
    program: &Path,
    config: &Path,
    dir: &Path,
    log_filter: &str,
    stderr: Stdio,
    env: &[(&str, &str)],
) -> Child {
    // The caller's variables come last, so a test can override these.
    Command::new(program)
        .arg("--config")
        .arg(config)
        .arg("--upgrade-sock")
        .arg(dir.join("upgrade.sock"))
        .env("LIMPET_TEST_KEY", TEST_SECRET)
        .env("LIMPET_LOG", log_filter)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (build it first)", program.display()))
}

/// The binary benchmarks run: `LIMPET_BIN`, or the release build.
pub fn release_bin() -> PathBuf {
    std::env::var("LIMPET_BIN").map_or_else(|_| PathBuf::from("target/release/limpet"), PathBuf::from)
}

/// Waits up to 30 s for limpet's admin listener to answer.
pub async fn wait_admin(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://{admin}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "limpet did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh scratch directory for one test.
pub fn scratch() -> PathBuf {
    scratch_dir()
}

/// `limpet --check` on `yaml` (written to a scratch file), with the test cookie key in
/// the environment: exit code, standard output, standard error.
pub fn check_config(yaml: &str) -> (i32, String, String) {
    let path = scratch_dir().join("checked.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(bin("limpet"))
        .args(["--check", "--config"])
        .arg(&path)
        .env("LIMPET_TEST_KEY", TEST_SECRET)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running limpet process. Killed on drop.
pub struct Limpet {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Limpet {
    /// Writes `yaml` (with `{listen}`/`{admin}` already substituted by the caller, see
    /// [`config`]) and starts limpet; waits until both listeners answer.
    pub async fn start_with(yaml: &str, addr: SocketAddr, admin: SocketAddr) -> Limpet {
        Self::start_with_env(yaml, addr, admin, &[]).await
    }

    /// [`Limpet::start_with`] with extra environment variables.
    pub async fn start_with_env(
        yaml: &str,
        addr: SocketAddr,
        admin: SocketAddr,
        env: &[(&str, &str)],
    ) -> Limpet {
        let dir = scratch_dir();
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        Self::spawn(config, addr, admin, &dir, env).await
    }

    /// A [`pool_config`] around `backends` on fresh ports.
    pub async fn start_pool(backends: &[Backend], persistence: &str, pool: &str, server: &str) -> Limpet {
        let (addr, admin) = (free_addr(), free_addr());
        let yaml = pool_config((addr, admin), &backend_list(backends), persistence, pool, server);
        Self::start_with(&yaml, addr, admin).await
    }

    /// Standard config around `backends`.
    pub async fn start(backends: &[Backend], cookie: &str, extra_pool: &str) -> Limpet {
        let (addr, admin) = (free_addr(), free_addr());
        Self::start_with(
            &config(addr, admin, &backend_list(backends), cookie, extra_pool),
            addr,
            admin,
        )
        .await
    }

    async fn spawn(
        config: PathBuf,
        addr: SocketAddr,
        admin: SocketAddr,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Limpet {
        let log = dir.join("limpet.log");
        let stderr = Stdio::from(std::fs::File::create(&log).unwrap());
        let child = launch(&bin("limpet"), &config, dir, "info", stderr, env);
        let l = Limpet {
            child,
            addr,
            admin,
            config,
            log,
        };
        l.wait_ready().await;
        l
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            let ok = client
                .get(format!("http://{}/healthz", self.admin))
                .send()
                .await
                .is_ok()
                && tokio::net::TcpStream::connect(self.addr).await.is_ok();
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "limpet did not start; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: kill(2) through libc with a pid we own.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Rewrites the config file and sends SIGHUP; waits until the generation moves on
    /// (or returns false if the reload was rejected).
    pub async fn reload(&self, yaml: &str) -> bool {
        let before = self.metric("limpet_config_reloads_total{result=\"ok\"}").await;
        let errors_before = self.metric("limpet_config_reloads_total{result=\"error\"}").await;
        std::fs::write(&self.config, yaml).unwrap();
        self.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.metric("limpet_config_reloads_total{result=\"ok\"}").await > before {
                return true;
            }
            if self.metric("limpet_config_reloads_total{result=\"error\"}").await > errors_before {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "reload never finished; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`Limpet::reload`] with `spec` rendered.
    pub async fn reload_spec(&self, spec: &PoolSpec) -> bool {
        self.reload(&spec.yaml()).await
    }

    pub async fn admin_get(&self, path: &str) -> String {
        reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Value of one exact series line (name with labels as printed), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.admin_get("/metrics").await;
        parse_metric(&text, series)
    }

    /// Whether `/metrics` has the exact series line `series` (name with labels as
    /// printed), whatever its value.
    pub async fn has_series(&self, series: &str) -> bool {
        let text = self.admin_get("/metrics").await;
        text.lines()
            .any(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
    }

    /// Waits (bounded, 10 s) until the series `series` of `/metrics` has a value
    /// `ok` accepts; fails with limpet's log otherwise.
    pub async fn wait_metric(&self, series: &str, ok: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.metric(series).await;
            if ok(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{series} stayed at {value}: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded, 10 s) until limpet's log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never said {needle:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `limpet_persistence_decisions_total` of the cookie method in pool `web`.
    pub async fn web_cookie_decisions(&self, outcome: &str) -> f64 {
        self.web_decisions("cookie", outcome).await
    }

    /// `limpet_persistence_decisions_total` of `method` in pool `web`.
    pub async fn web_decisions(&self, method: &str, outcome: &str) -> f64 {
        self.metric(&format!(
            r#"limpet_persistence_decisions_total{{method="{method}",outcome="{outcome}",pool="web"}}"#
        ))
        .await
    }

    /// Sessions of `method` that began anew: `new` plus `expired` decisions. A session
    /// that expired is `expired` when a request finds it, or `new` when the store's
    /// sweep removed it first.
    pub async fn web_sessions_started(&self, method: &str) -> f64 {
        self.web_decisions(method, "new").await + self.web_decisions(method, "expired").await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Finds `series` (labels in Prometheus' sorted order) in exposition text.
pub fn parse_metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

impl Drop for Limpet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
