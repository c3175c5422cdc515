//! The measured gate of the HTTP/1 engine question (issue 21): limpet's real decision
//! path served by hyper instead of Pingora's HTTP/1 proxy, inside Pingora's server.
//! Pingora keeps the listeners, TLS, HTTP/2, graceful restart and the upstream
//! connector; hyper serves the client's HTTP/1 connection and speaks HTTP/1 to the
//! backend over a stream from Pingora's connector, kept in a small pool.
//!
//! Per request it runs what the Pingora driver runs, through the same engine-neutral
//! functions: the decision on the head (`decide`: limits, client, request id, routing,
//! the persistence chain, `redirect_https`), the picker and in-flight slot ([`Attempt`]),
//! forwarding headers and `X-Request-Id`, the session tables, the affinity cookie and
//! `Cache-Control: private` (`exchange::decorate_response`), and limpet's own answers
//! (`exchange::refusal_fields`). It does not (yet) run failover and retries, passive
//! health, status and latency metrics, the access log, upgrades, TLS listeners or the
//! PROXY header: it exists to be measured against the Pingora path in one run
//! (`LIMPET_ENGINE=hyper`, see docs/performance.md), never in production.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use limpet_affinity::Scheme;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::Stream;

use crate::access::AccessLog;
use crate::attempt::{peer_for, Attempt};
use crate::clock::unix_now;
use crate::decide::{decide, Verdict};
use crate::exchange::{self, Refusal, Via};
use crate::finish::{finish, Ended};
use crate::persist;
use crate::shared::Shared;
use crate::snapshot::Snapshot;

type Body = BoxBody<Bytes, hyper::Error>;

/// Whether `LIMPET_ENGINE=hyper` asks for this path on plain HTTP/1 listeners.
pub fn wanted() -> bool {
    std::env::var("LIMPET_ENGINE").is_ok_and(|v| v == "hyper")
}

/// What a request's exchange learned, for its record at the end.
#[derive(Default)]
struct Seen {
    head: Option<http::request::Parts>,
    client: Option<IpAddr>,
    request_id: Option<http::HeaderValue>,
    upstream_status: Option<u16>,
    upstream_failure: Option<&'static str>,
    responded: Option<Instant>,
}

/// The hyper driver of one listener.
pub struct HyperH1 {
    shared: Arc<Shared>,
    /// Index of this listener in the configuration.
    listener: usize,
    connector: TransportConnector,
    /// Idle upstream connections by backend address.
    idle: Mutex<HashMap<SocketAddr, Vec<SendRequest<Incoming>>>>,
}

impl HyperH1 {
    pub fn new(shared: Arc<Shared>, listener: usize) -> Self {
        Self {
            shared,
            listener,
            connector: TransportConnector::new(None),
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Serves one client connection to its end.
    pub async fn serve(self: &Arc<Self>, stream: Stream, peer: Option<IpAddr>, tls: bool) {
        let snap = self.shared.current.load();
        let server = &snap.config.server;
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(server.request_header_timeout)
            .max_buf_size(server.max_request_header_bytes.max(8192))
            .keep_alive(true);
        drop(snap);
        let this = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let this = this.clone();
            async move { Ok::<_, Infallible>(this.handle(req, peer, tls).await) }
        });
        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
    }

    /// One request, recorded at its end (here: when the response head is ready, so
    /// the access log has no body sizes and the in-flight slot is released before the
    /// body streams; a full hyper driver records when the body ends).
    async fn handle(&self, req: Request<Incoming>, peer: Option<IpAddr>, tls: bool) -> Response<Body> {
        let arrived = Instant::now();
        let snap = self.shared.current.load_full();
        let mut via = Via {
            listener: self.listener,
            tls,
            h2: false,
            scheme: if tls { Scheme::Https } else { Scheme::Http },
        };
        let mut attempt = Attempt::default();
        let mut seen = Seen::default();
        let resp = self
            .exchange(&snap, req, peer, &mut via, &mut attempt, &mut seen)
            .await;
        let ended = Ended {
            head: seen.head.as_ref(),
            status: resp.status().as_u16(),
            upstream_status: seen.upstream_status,
            upstream_failure: seen.upstream_failure,
            error: seen.upstream_failure,
            bytes_in: 0,
            bytes_out: 0,
            client: seen.client,
            request_id: seen.request_id.as_ref(),
            via,
            arrived,
            connected: None,
            responded: seen.responded,
        };
        finish(&self.shared, &snap, &mut attempt, &ended);
        resp
    }

    async fn exchange(
        &self,
        snap: &Snapshot,
        req: Request<Incoming>,
        peer: Option<IpAddr>,
        via: &mut Via,
        attempt: &mut Attempt,
        seen: &mut Seen,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let decided = decide(&self.shared, snap, &parts, peer, via, attempt).await;
        let via = *via;
        seen.client = decided.client;
        seen.request_id = decided.request_id.clone();
        if AccessLog::enabled() {
            // The head goes to the backend; the log line needs it after.
            let mut copy = Request::new(()).into_parts().0;
            copy.method = parts.method.clone();
            copy.uri = parts.uri.clone();
            copy.version = parts.version;
            copy.headers = parts.headers.clone();
            seen.head = Some(copy);
        }
        match decided.verdict {
            Verdict::Proxy => {}
            Verdict::Refuse(refusal, pool) => return self.refuse(snap, pool, via, refusal, None),
            Verdict::RedirectHttps(host) => {
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let location = Some(format!("https://{host}{path}"));
                return self.refuse(snap, None, via, Refusal::HttpsRedirect, location);
            }
        }
        let (Some(pool_index), Some(request_id)) = (attempt.pool, decided.request_id) else {
            return self.refuse(snap, None, via, Refusal::Internal, None);
        };
        let pool = &snap.pools[pool_index];
        let Some(i) = attempt.next_attempt(pool) else {
            return self.refuse(snap, Some(pool_index), via, Refusal::NoBackend, None);
        };
        let address = pool.backends[i].address;
        if exchange::forwarding_headers(peer, via, &mut parts.headers).is_err() {
            return self.refuse(snap, Some(pool_index), via, Refusal::BadRequest, None);
        }
        parts.headers.insert("x-request-id", request_id);
        let up = Request::from_parts(parts, body);
        let Some(mut sender) = self.sender(snap, pool_index, i).await else {
            return self.refuse(snap, Some(pool_index), via, Refusal::ConnectFailed, None);
        };
        let resp = match sender.send_request(up).await {
            Ok(r) => r,
            Err(_) => {
                seen.upstream_failure = Some("upstream_error");
                return self.refuse(snap, Some(pool_index), via, Refusal::UpstreamError, None);
            }
        };
        seen.upstream_status = Some(resp.status().as_u16());
        seen.responded = Some(Instant::now());
        // Ready again once this response's body has been read; `sender` picks only
        // ready ones.
        if let Ok(mut idle) = self.idle.lock() {
            idle.entry(address).or_default().push(sender);
        }
        let (mut head, body) = resp.into_parts();
        persist::record_tables(
            self.shared.store.as_ref(),
            pool,
            &attempt.evals,
            i,
            attempt.served(),
            unix_now(),
        )
        .await;
        if exchange::decorate_response(snap, attempt, via, &mut head.headers).is_err() {
            return self.refuse(snap, Some(pool_index), via, Refusal::Internal, None);
        }
        Response::from_parts(head, body.boxed())
    }

    /// limpet's own answer, made and counted by the same function as the Pingora
    /// driver's.
    fn refuse(
        &self,
        snap: &Snapshot,
        pool: Option<usize>,
        via: Via,
        refusal: Refusal,
        location: Option<String>,
    ) -> Response<Body> {
        let hsts = snap.listeners.get(via.listener).and_then(|l| l.hsts.as_deref());
        let extra = exchange::Extra { location, hsts };
        let mut headers = http::HeaderMap::new();
        let body = exchange::refusal_fields(&self.shared, Some(snap), pool, refusal, &extra, &mut headers)
            .unwrap_or_default();
        let mut r = Response::new(
            Full::new(Bytes::from_static(body.as_bytes()))
                .map_err(|never| match never {})
                .boxed(),
        );
        *r.status_mut() = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        *r.headers_mut() = headers;
        r
    }

    /// A ready idle connection to backend `i`, or a new one.
    async fn sender(&self, snap: &Snapshot, pool: usize, i: usize) -> Option<SendRequest<Incoming>> {
        let p = &snap.pools[pool];
        let address = p.backends[i].address;
        if let Ok(mut idle) = self.idle.lock() {
            if let Some(list) = idle.get_mut(&address) {
                list.retain(|s| !s.is_closed());
                if let Some(at) = list.iter().position(SendRequest::is_ready) {
                    return Some(list.swap_remove(at));
                }
            }
        }
        let peer = peer_for(snap, p, i);
        let stream = self.connector.new_stream(&peer).await.ok()?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Some(sender)
    }
}
