//! limpet's HTTP/1 engine: hyper serves the client's HTTP/1 connection (plain, or after
//! TLS chose HTTP/1.1), limpet's engine-neutral request logic decides and decorates,
//! and hyper's client speaks to the backend over a stream from Pingora's connector.
//! Pingora keeps the listeners, TLS, HTTP/2 (its `ProxyHttp` driver in `proxy.rs`),
//! graceful restart and the upstream connector.
//!
//! What hyper's connection does here and limpet no longer hand-keeps: request framing,
//! keep-alive and pipelining in order, half-close, `Expect: 100-continue`, the head size
//! bound of its buffer, and upgrades handed over after a `101`. The idle and head
//! deadlines stay with [`Guarded`], which hyper reads through and tells ([`Phase`])
//! where each head ends and each response is over: hyper's own header timeout also
//! runs while a kept-alive connection idles, and closes without a `408`.
//!
//! Per request ([`H1::handle`]): [`decide`], then [`relay::proxy`] (backend choice,
//! failover and retries, the response's session and cookie), and the request's
//! [`body::Record`] written when its response body ends.

mod body;
mod relay;
mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pingora_core::server::ShutdownWatch;

use crate::access::AccessLog;
use crate::attempt::Attempt;
use crate::deadline::{Guarded, Phase};
use crate::decide::{decide, Verdict};
use crate::exchange::{self, Refusal, Via};
use crate::finish::LoggedHead;
use crate::request;
use crate::shared::{Active, Shared};
use body::{DownBody, Record};
use upstream::Upstreams;

/// The HTTP/1 engine of one listener.
pub struct H1 {
    shared: Arc<Shared>,
    /// The listener, and what it alone says of how requests come (TLS or not).
    via: Via,
    upstreams: Arc<Upstreams>,
}

impl H1 {
    pub fn new(shared: Arc<Shared>, listener: usize) -> Self {
        Self {
            via: Via::of_listener(&shared, listener),
            shared,
            upstreams: Arc::new(Upstreams::new()),
        }
    }

    /// Serves one client connection to its end. `guarded` has the first bytes of the
    /// first request already (`Guarded::next_request`).
    pub async fn serve(
        self: &Arc<Self>,
        guarded: Box<Guarded>,
        peer: Option<IpAddr>,
        shutdown: &ShutdownWatch,
    ) {
        let phase = guarded.phase();
        let snap = self.shared.current.load();
        let max_head = snap.config.server.max_request_header_bytes;
        drop(snap);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .half_close(true)
            .keep_alive(true)
            // A backstop only: the guard answers a head above the limit (431) as it
            // reads, before hyper's buffer is full. (hyper's default of 100 header
            // fields stands, HAProxy's is 101: any other number makes hyper fill an
            // array of that many entries for every head it parses.)
            .max_buf_size(max_head.saturating_mul(2).max(16 * 1024));
        let this = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let this = this.clone();
            let phase = phase.clone();
            // Boxed: hyper keeps a slot the size of this future for the connection's
            // whole life, idle or not; boxed, the request's state exists only while
            // the request does.
            let handled: Pin<Box<dyn Future<Output = Result<Response<DownBody>, Infallible>> + Send>> =
                Box::pin(async move { Ok::<_, Infallible>(this.handle(req, peer, phase).await) });
            handled
        });
        let conn = builder
            .serve_connection(TokioIo::new(guarded), service)
            .with_upgrades();
        tokio::pin!(conn);
        let mut down = shutdown.clone();
        let stopping = *down.borrow();
        if stopping {
            conn.as_mut().graceful_shutdown();
        }
        let ended = tokio::select! {
            ended = conn.as_mut() => Some(ended),
            _ = down.changed(), if !stopping => None,
        };
        let ended = match ended {
            Some(ended) => ended,
            None => {
                // Stopping: the request in flight finishes, an idle connection closes
                // now.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        // A head the parser could not read got the parser's own answer (a bare 400 or
        // 431, without limpet's body): counted like limpet's.
        if let Err(e) = ended {
            if e.is_parse_too_large() {
                exchange::count_parser_answer(&self.shared, Refusal::HeaderTooLarge);
            } else if e.is_parse() {
                exchange::count_parser_answer(&self.shared, Refusal::BadRequest);
            }
        }
    }

    /// One request. The response's body carries the request's record.
    async fn handle(&self, req: Request<Incoming>, peer: Option<IpAddr>, phase: Phase) -> Response<DownBody> {
        phase.head_parsed();
        let snap = self.shared.current.load_full();
        let record = Box::new(Record {
            shared: self.shared.clone(),
            _active: Active::new(&self.shared.active),
            snap,
            attempt: Attempt::default(),
            via: self.via,
            client: None,
            request_id: None,
            head: None,
            arrived: Instant::now(),
            connected: None,
            responded: None,
            status: 0,
            upstream_status: None,
            upstream_failure: None,
            error: None,
            body: None,
            bytes_out: 0,
            phase: Some(phase),
        });
        self.request(req, peer, record).await
    }

    async fn request(
        &self,
        req: Request<Incoming>,
        peer: Option<IpAddr>,
        mut record: Box<Record>,
    ) -> Response<DownBody> {
        let snap = record.snap.clone();
        let (mut parts, body) = req.into_parts();
        let decided = decide(
            &self.shared,
            &snap,
            &parts,
            peer,
            &mut record.via,
            &mut record.attempt,
        )
        .await;
        record.client = decided.client;
        record.request_id = decided.request_id;
        if AccessLog::enabled() {
            record.head = Some(LoggedHead::of(&parts));
        }
        match decided.verdict {
            Verdict::Proxy => {}
            Verdict::Refuse(refusal, pool) => return self.refuse(record, pool, refusal, None),
            Verdict::RedirectHttps(host) => {
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let location = Some(format!("https://{host}{path}"));
                return self.refuse(record, None, Refusal::HttpsRedirect, location);
            }
        }
        // Only WebSocket is tunnelled; any other upgrade (h2c above all) is proxied as
        // the plain request it also is.
        if request::drop_upgrade(&mut parts.headers) {
            tracing::debug!("upgrade to a protocol other than WebSocket taken out of the request");
        }
        let on_upgrade = if parts.headers.contains_key(http::header::UPGRADE) {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        relay::proxy(self, parts, body, peer, record, on_upgrade).await
    }

    /// limpet's own answer, made and counted by the same function as every driver's.
    fn refuse(
        &self,
        mut record: Box<Record>,
        pool: Option<usize>,
        refusal: Refusal,
        location: Option<String>,
    ) -> Response<DownBody> {
        let snap = record.snap.clone();
        let hsts = snap
            .listeners
            .get(record.via.listener)
            .and_then(|l| l.hsts.as_deref())
            // HSTS over plain http means nothing to a browser.
            .filter(|_| location.is_none());
        let extra = exchange::Extra { location, hsts };
        let mut headers = http::HeaderMap::new();
        let body = exchange::refusal_fields(&self.shared, Some(&snap), pool, refusal, &extra, &mut headers)
            .unwrap_or_else(|_| refusal.body());
        let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        record.status = status.as_u16();
        let mut r = Response::new(DownBody::own(
            Some(Bytes::from_static(body.as_bytes())),
            Some(record),
        ));
        if matches!(
            refusal,
            Refusal::HeaderTooLarge | Refusal::BadRequest | Refusal::RequestTimeout
        ) {
            // The client sent something limpet refuses to read on from: what follows
            // on the connection is not trusted to be a request of its own.
            headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        *r.status_mut() = status;
        *r.headers_mut() = headers;
        r
    }
}
