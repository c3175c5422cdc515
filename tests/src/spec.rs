//! Test configurations: demo backends, the `PoolSpec` builder, and the older YAML
//! templates some tests still use.

use std::net::SocketAddr;

use crate::{free_addr, Backend, Limpet};

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
