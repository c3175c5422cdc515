//! The admin listener: `/healthz`, `/metrics` (our own registry) and `/status` (JSON view
//! of the current snapshot). Everything else is 404.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde::Serialize;

use crate::clock::{now_ms, unix_now, unix_secs};
use crate::shared::Shared;

pub struct Admin {
    shared: Arc<Shared>,
}

impl Admin {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[derive(Serialize)]
struct Status<'a> {
    generation: u64,
    loaded_at_unix: u64,
    last_reload_error: Option<String>,
    pools: Vec<PoolStatus<'a>>,
}

#[derive(Serialize)]
struct PoolStatus<'a> {
    id: &'a str,
    balance: &'static str,
    persistence: Vec<&'static str>,
    backends: Vec<BackendStatus<'a>>,
}

#[derive(Serialize)]
struct BackendStatus<'a> {
    id: &'a str,
    address: String,
    state: &'static str,
    /// `up` while it passes its health checks (active and passive), else `down`.
    health: &'static str,
    weight: u32,
    /// The weight new sessions see now: `weight` ramped by slow start.
    effective_weight: f64,
    in_flight: i64,
    /// Live sessions: exact for tables, estimated for cookies; absent for pools
    /// without persistence that keeps sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    sessions: Option<u64>,
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = r.body().len();
    r.headers_mut().insert(http::header::CONTENT_LENGTH, len.into());
    r
}

impl Admin {
    fn status(&self) -> Vec<u8> {
        let snap = self.shared.current.load_full();
        let now_unix = unix_now();
        let status = Status {
            generation: snap.generation,
            loaded_at_unix: unix_secs(snap.loaded_at),
            last_reload_error: self.shared.last_reload_error.load_full().map(|e| e.to_string()),
            pools: snap
                .pools
                .iter()
                .map(|p| PoolStatus {
                    id: p.id.as_str(),
                    balance: p.balance.as_str(),
                    persistence: p.methods.iter().map(|m| m.method()).collect(),
                    backends: p
                        .backends
                        .iter()
                        .map(|b| BackendStatus {
                            id: b.id.as_str(),
                            address: b.address.to_string(),
                            state: b.state.as_str(),
                            health: if b.live.health.usable(now_ms()) {
                                "up"
                            } else {
                                "down"
                            },
                            weight: b.weight,
                            effective_weight: f64::from(b.weight)
                                * b.live.health.ramp(p.slow_start, now_ms()),
                            in_flight: b.metrics.in_flight.get(),
                            sessions: p.sessions(b, self.shared.store.as_ref(), now_unix),
                        })
                        .collect(),
                })
                .collect(),
        };
        serde_json::to_vec_pretty(&status).unwrap_or_default()
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/healthz" => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/metrics" => {
                self.shared.refresh_store_metrics();
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.shared.metrics.render(),
                )
            }
            "/status" => respond(StatusCode::OK, "application/json", self.status()),
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found: try /metrics, /healthz or /status\n".to_vec(),
            ),
        }
    }
}
