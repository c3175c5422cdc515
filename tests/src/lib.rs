//! Harness for limpet's end-to-end tests: starts the real `limpet` binary on ephemeral
//! loopback ports with a generated config, real demo backends, and offers a small HTTP
//! client that handles the affinity cookie explicitly, so tests can assert on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use limpet_demo::Backend;

/// The signing secret tests hand to limpet through `LIMPET_TEST_KEY`.
pub const TEST_SECRET: &str = "e2e-secret-0123456789abcdef0123456789";

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
    Command::new(program)
        .envs(env.iter().copied())
        .arg("--config")
        .arg(config)
        .arg("--upgrade-sock")
        .arg(dir.join("upgrade.sock"))
        .env("LIMPET_TEST_KEY", TEST_SECRET)
        .env("LIMPET_LOG", log_filter)
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

/// Starts `count` demo backends named `{prefix}-1`… on ephemeral ports.
pub async fn backends(prefix: &str, count: usize) -> Vec<Backend> {
    let mut out = Vec::new();
    for i in 1..=count {
        out.push(
            Backend::start(&format!("{prefix}-{i}"), "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
    }
    out
}

/// YAML list of backends (all active, weight 1).
pub fn backend_list(bs: &[Backend]) -> String {
    bs.iter()
        .map(|b| format!("      - {{ id: {}, address: \"{}\" }}\n", b.id, b.addr))
        .collect()
}

/// One backend of a [`PoolSpec`].
#[derive(Clone, Debug)]
struct BackendSpec {
    id: String,
    address: SocketAddr,
    state: Option<String>,
    weight: Option<u32>,
}

/// A test configuration with one pool `web` behind one route, built in code and
/// rendered to YAML, so that tests change a key by name instead of editing text.
///
/// ```text
/// let spec = PoolSpec::new(&bs).cookie().pool_key("slow_start: 3s");
/// let lb = spec.start().await;
/// assert!(lb.reload_spec(&spec.clone().state("web-1", "draining")).await);
/// ```
#[derive(Clone, Debug)]
pub struct PoolSpec {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    backends: Vec<BackendSpec>,
    methods: Vec<String>,
    pool_keys: Vec<String>,
    server_keys: Vec<String>,
    host: String,
}

impl PoolSpec {
    /// Pool `web` over `bs` (all active, weight 1), no persistence yet, on fresh ports.
    pub fn new(bs: &[Backend]) -> Self {
        Self {
            listen: free_addr(),
            admin: free_addr(),
            backends: bs
                .iter()
                .map(|b| BackendSpec {
                    id: b.id.clone(),
                    address: b.addr,
                    state: None,
                    weight: None,
                })
                .collect(),
            methods: Vec::new(),
            pool_keys: Vec::new(),
            server_keys: Vec::new(),
            host: "*".into(),
        }
    }

    /// Adds a persistence method, as one YAML flow item (`header: { name: X-Id }`).
    pub fn method(mut self, item: &str) -> Self {
        self.methods.push(item.into());
        self
    }

    /// Adds the standard cookie method: `LIMPET`, 15 minutes.
    pub fn cookie(self) -> Self {
        self.method("cookie: { name: LIMPET, ttl: 15m }")
    }

    /// Sets a key of the pool (`slow_start: 3s`).
    pub fn pool_key(mut self, line: &str) -> Self {
        self.pool_keys.push(line.into());
        self
    }

    /// Sets a key of `server:` (`upstream_read_timeout: 300ms`).
    pub fn server_key(mut self, line: &str) -> Self {
        self.server_keys.push(line.into());
        self
    }

    /// The route's host pattern (`*` by default).
    pub fn host(mut self, host: &str) -> Self {
        self.host = host.into();
        self
    }

    /// Adds a backend.
    pub fn backend(mut self, id: &str, address: SocketAddr) -> Self {
        self.backends.push(BackendSpec {
            id: id.into(),
            address,
            state: None,
            weight: None,
        });
        self
    }

    fn backend_mut(&mut self, id: &str) -> &mut BackendSpec {
        self.backends
            .iter_mut()
            .find(|b| b.id == id)
            .unwrap_or_else(|| panic!("no backend {id} in this spec"))
    }

    /// Sets backend `id`'s state (`active`, `draining`, `disabled`).
    pub fn state(mut self, id: &str, state: &str) -> Self {
        self.backend_mut(id).state = Some(state.into());
        self
    }

    /// Sets backend `id`'s weight.
    pub fn weight(mut self, id: &str, weight: u32) -> Self {
        self.backend_mut(id).weight = Some(weight);
        self
    }

    pub fn yaml(&self) -> String {
        let mut y =
            String::from("server:\n  threads: 2\n  grace_period: 5s\n  upstream_connect_timeout: 1s\n");
        for k in &self.server_keys {
            y += &format!("  {k}\n");
        }
        y += &format!(
            "listeners:\n  - address: \"{}\"\nadmin:\n  address: \"{}\"\n",
            self.listen, self.admin
        );
        y += "cookie_keys:\n  - { id: k1, secret_env: LIMPET_TEST_KEY }\n";
        y += &format!(
            "routes:\n  - {{ host: \"{}\", path_prefix: /, pool: web }}\npools:\n  web:\n",
            self.host
        );
        for k in &self.pool_keys {
            y += &format!("    {k}\n");
        }
        if !self.methods.is_empty() {
            y += "    persistence:\n";
            for m in &self.methods {
                y += &format!("      - {m}\n");
            }
        }
        y += "    backends:\n";
        for b in &self.backends {
            y += &format!("      - {{ id: {}, address: \"{}\"", b.id, b.address);
            if let Some(s) = &b.state {
                y += &format!(", state: {s}");
            }
            if let Some(w) = b.weight {
                y += &format!(", weight: {w}");
            }
            y += " }\n";
        }
        y
    }

    /// Starts limpet on this configuration.
    pub async fn start(&self) -> Limpet {
        Limpet::start_with(&self.yaml(), self.listen, self.admin).await
    }
}

/// A running limpet process. Killed on drop.
pub struct Limpet {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// The standard test config: one pool `web` with a cookie method. `{listen}`, `{admin}`
/// and `{backends}` are filled in; `extra_pool` lines go inside the pool.
pub fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    backends: &str,
    cookie: &str,
    extra_pool: &str,
) -> String {
    pool_config(
        (listen, admin),
        backends,
        &format!("      - cookie: {{ {cookie} }}\n"),
        extra_pool,
        "",
    )
}

/// A test config whose pool `web` uses `persistence` (YAML list items, 6-space
/// indented); `extra_pool` lines go inside the pool, `extra_server` under `server:`.
pub fn pool_config(
    (listen, admin): (SocketAddr, SocketAddr),
    backends: &str,
    persistence: &str,
    extra_pool: &str,
    extra_server: &str,
) -> String {
    format!(
        r#"server:
  threads: 2
  grace_period: 5s
  upstream_connect_timeout: 1s
{extra_server}listeners:
  - address: "{listen}"
admin:
  address: "{admin}"
cookie_keys:
  - id: k1
    secret_env: LIMPET_TEST_KEY
routes:
  - host: "*"
    path_prefix: /
    pool: web
pools:
  web:
{extra_pool}    persistence:
{persistence}    backends:
{backends}"#
    )
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

/// One response as a test sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub backend: String,
    /// `NAME=VALUE` of our affinity cookie if the response set one.
    pub set_cookie: Option<String>,
    /// The whole Set-Cookie header of our cookie.
    pub set_cookie_header: Option<String>,
    pub cache_control: Option<String>,
    pub body: String,
}

/// GET `url` with optional `Cookie` header values (each sent as its own header line).
pub async fn get(client: &reqwest::Client, url: &str, cookies: &[&[u8]], cookie_name: &str) -> Reply {
    let mut req = client.get(url);
    for c in cookies {
        req = req.header("cookie", reqwest::header::HeaderValue::from_bytes(c).unwrap());
    }
    let resp = req.send().await.unwrap();
    reply(resp, cookie_name).await
}

pub async fn reply(resp: reqwest::Response, cookie_name: &str) -> Reply {
    let status = resp.status().as_u16();
    let h = resp.headers();
    let backend = h
        .get("x-backend-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let prefix = format!("{cookie_name}=");
    let set_cookie_header = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(&prefix));
    let set_cookie = set_cookie_header
        .as_ref()
        .map(|v| v.split(';').next().unwrap().to_string());
    let cache_control = h.get("cache-control").map(|v| v.to_str().unwrap().to_string());
    let body = resp.text().await.unwrap_or_default();
    Reply {
        status,
        backend,
        set_cookie,
        set_cookie_header,
        cache_control,
        body,
    }
}

/// A keep-alive client without redirects or proxies.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Sends raw bytes on a fresh connection and returns the status code of the reply.
pub async fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < 12 && Instant::now() < deadline {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf[got..]))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    let text = String::from_utf8_lossy(&buf[..got]);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Peak resident memory of a process in KiB (VmHWM).
pub fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A real `redis-server` on a free loopback port, without persistence. Killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub async fn start() -> Redis {
        let port = free_addr().port();
        let mut r = Redis { port, child: None };
        r.restart().await;
        r
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: connections stay open and
    /// nothing answers, as with an overloaded or partitioned Redis.
    pub fn freeze(&self, frozen: bool) {
        if let Some(c) = &self.child {
            let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Starts the server (again) on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; .ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command("PING").await.as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The body of `INFO section`, as `field:value` lines.
    pub async fn info(&self, section: &str) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        s.write_all(format!("INFO {section}\r\n").as_bytes())
            .await
            .unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        r.read_line(&mut head).await.unwrap();
        // A bulk string: `$LEN` then LEN bytes.
        let len: usize = head.trim_end().trim_start_matches('$').parse().unwrap();
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await.unwrap();
        String::from_utf8(body).unwrap()
    }

    /// Calls of `command` so far (`INFO commandstats`, which counts commands run by
    /// scripts too).
    pub async fn calls(&self, command: &str) -> u64 {
        let info = self.info("commandstats").await;
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    /// Sends one inline command and returns the first line of the reply.
    pub async fn command(&self, cmd: &str) -> Option<String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).await.ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.ok()?;
        Some(line.trim_end().to_string())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `q` quantile (0–1) of sorted latencies.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

/// User + system CPU time a process has used so far, from /proc (Linux).
pub fn process_cpu(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) closed by ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY-free: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}
