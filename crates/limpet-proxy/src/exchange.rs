//! What limpet adds to and says in an exchange, shared by both request drivers (the
//! proxy hooks and the upgrade tunnel): forwarding headers on the way up, the session
//! record and the affinity cookie on the way down, and every response limpet makes
//! itself: one [`Refusal`] per reason, written by one function ([`refuse`]), counted in
//! `limpet_responses_total`.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use limpet_affinity::{private_cache_control, Scheme};
use limpet_metrics::{ResponseCounters, ResponseKind};
use pingora_error::{Error, ErrorSource, ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::attempt::Attempt;
use crate::clock::unix_now;
use crate::persist;
use crate::shared::Shared;
use crate::snapshot::Snapshot;

/// Why limpet answers a request itself instead of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No route matches the host and path (404).
    NoRoute,
    /// The request head is larger than limpet accepts (431).
    HeaderTooLarge,
    /// The client sent something limpet cannot proxy (400).
    BadRequest,
    /// The pool has no backend able to take the request (503).
    NoBackend,
    /// A strict pool's pinned backend is down or unreachable (503).
    SessionBackendDown,
    /// No backend could be connected to (502).
    ConnectFailed,
    /// The backend did not answer within `upstream_read_timeout` (504).
    UpstreamTimeout,
    /// The backend closed, reset or answered something that is not HTTP (502).
    UpstreamError,
    /// A fault of limpet itself (500).
    Internal,
    /// limpet ran out of its own resources (file descriptors, ports, memory) (503).
    LocalResources,
    /// A plain listener with `redirect_https` sends the client to https (308).
    HttpsRedirect,
    /// The request head did not arrive within `request_header_timeout` (408).
    RequestTimeout,
    /// The backend's response head is above `max_response_header_bytes` (502).
    ResponseTooLarge,
}

impl Refusal {
    pub const ALL: [Refusal; 13] = [
        Refusal::NoRoute,
        Refusal::HeaderTooLarge,
        Refusal::BadRequest,
        Refusal::NoBackend,
        Refusal::SessionBackendDown,
        Refusal::ConnectFailed,
        Refusal::UpstreamTimeout,
        Refusal::UpstreamError,
        Refusal::Internal,
        Refusal::HttpsRedirect,
        Refusal::RequestTimeout,
        Refusal::ResponseTooLarge,
        Refusal::LocalResources,
    ];

    /// Refusals that happen before a request has a pool: counted under `pool=""`.
    const UNROUTED: [Refusal; 6] = [
        Refusal::NoRoute,
        Refusal::HeaderTooLarge,
        Refusal::BadRequest,
        Refusal::Internal,
        Refusal::HttpsRedirect,
        Refusal::RequestTimeout,
    ];

    pub fn status(self) -> u16 {
        match self {
            Refusal::NoRoute => 404,
            Refusal::HeaderTooLarge => 431,
            Refusal::BadRequest => 400,
            Refusal::NoBackend | Refusal::SessionBackendDown | Refusal::LocalResources => 503,
            Refusal::ConnectFailed | Refusal::UpstreamError => 502,
            Refusal::UpstreamTimeout => 504,
            Refusal::Internal => 500,
            Refusal::HttpsRedirect => 308,
            Refusal::RequestTimeout => 408,
            Refusal::ResponseTooLarge => 502,
        }
    }

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoRoute => "no_route",
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::BadRequest => "bad_request",
            Refusal::NoBackend => "no_backend",
            Refusal::SessionBackendDown => "session_backend_down",
            Refusal::ConnectFailed => "connect_failed",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::UpstreamError => "upstream_error",
            Refusal::Internal => "internal",
            Refusal::HttpsRedirect => "https_redirect",
            Refusal::RequestTimeout => "request_timeout",
            Refusal::ResponseTooLarge => "response_header_too_large",
            Refusal::LocalResources => "local_resources",
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Refusal::NoRoute => "limpet: no route for this host and path\n",
            Refusal::HeaderTooLarge => "limpet: request headers too large\n",
            Refusal::BadRequest => "limpet: bad request\n",
            Refusal::NoBackend => "limpet: no backend is available for this request; retry shortly\n",
            Refusal::SessionBackendDown => {
                "limpet: the backend of this session is unavailable; retry shortly\n"
            }
            Refusal::ConnectFailed => "limpet: no backend could be reached\n",
            Refusal::UpstreamTimeout => "limpet: the backend did not answer in time\n",
            Refusal::UpstreamError => "limpet: the backend failed to answer\n",
            Refusal::Internal => "limpet: internal error\n",
            Refusal::HttpsRedirect => "limpet: this site is served over https\n",
            Refusal::RequestTimeout => "limpet: the request came too slowly\n",
            Refusal::ResponseTooLarge => "limpet: the backend's response headers are too large\n",
            Refusal::LocalResources => "limpet: the proxy is out of resources; retry shortly\n",
        }
    }

    /// A 503 is temporary by design (a backend is coming back, or a strict session's
    /// backend is): say when to try again.
    fn retry_after(self) -> bool {
        self.status() == 503
    }

    /// The refusal an error stands for when proxying failed; `None` when the client is
    /// gone and there is nobody to answer.
    pub fn for_error(e: &Error) -> Option<Refusal> {
        use ErrorType::*;
        Some(match (e.esource(), e.etype()) {
            (_, HTTPStatus(404)) => Refusal::NoRoute,
            (_, HTTPStatus(503)) => Refusal::NoBackend,
            (_, HTTPStatus(400)) => Refusal::BadRequest,
            (_, HTTPStatus(_)) => Refusal::Internal,
            (ErrorSource::Upstream, ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError) => {
                Refusal::ConnectFailed
            }
            (ErrorSource::Upstream, TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert) => {
                Refusal::ConnectFailed
            }
            (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => Refusal::UpstreamTimeout,
            (ErrorSource::Upstream, _) => Refusal::UpstreamError,
            (ErrorSource::Downstream, WriteError | ReadError | ConnectionClosed) => return None,
            (ErrorSource::Downstream, _) => Refusal::BadRequest,
            (ErrorSource::Internal | ErrorSource::Unset, _) => Refusal::Internal,
        })
    }

    fn kind(self) -> ResponseKind {
        (self.status(), self.as_str())
    }

    /// The kinds counted per pool, in [`Refusal::ALL`] order.
    pub fn pool_kinds() -> Vec<ResponseKind> {
        Refusal::ALL.map(Refusal::kind).to_vec()
    }

    /// The kinds counted under `pool=""`, in [`Refusal::ALL`] order.
    pub fn unrouted_kinds() -> Vec<ResponseKind> {
        Refusal::UNROUTED.map(Refusal::kind).to_vec()
    }

    /// Counts this refusal in `counters` (built from [`Refusal::pool_kinds`] or
    /// [`Refusal::unrouted_kinds`]).
    fn count(self, counters: &ResponseCounters, routed: bool) {
        let list: &[Refusal] = if routed { &Refusal::ALL } else { &Refusal::UNROUTED };
        if let Some(i) = list.iter().position(|r| *r == self) {
            counters.count(i);
        }
    }
}

/// Counts, under `pool=""`, an answer the HTTP/1 parser wrote itself to a head it
/// could not read (hyper's bare `400` and `431`): every answer limpet's edge makes is
/// counted.
pub fn count_parser_answer(shared: &Shared, refusal: Refusal) {
    refusal.count(&shared.unrouted, false);
}

/// The bytes of limpet's own HTTP/1.1 answer `refusal`, for the connection guard,
/// which answers before any request exists (so before Pingora's session): the same
/// shape as [`refuse`] writes, with `Connection: close`. Counted under `pool=""`.
pub fn raw_refusal(shared: &Shared, refusal: Refusal, hsts: Option<&str>) -> Vec<u8> {
    let status = http::StatusCode::from_u16(refusal.status()).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut fields = HeaderMap::new();
    let extra = Extra { location: None, hsts };
    // No snapshot: counted under `pool=""`.
    let body =
        refusal_fields(shared, None, None, refusal, &extra, &mut fields).unwrap_or_else(|_| refusal.body());
    fields.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// How the client reached limpet: the listener, TLS or not, HTTP/2 or not, and the
/// scheme it sees (https on TLS, or when a trusted proxy in front says so).
#[derive(Debug, Clone, Copy)]
pub struct Via {
    pub listener: usize,
    pub tls: bool,
    pub h2: bool,
    pub scheme: Scheme,
}

impl Via {
    /// How a request comes through listener `listener` as far as the listener alone
    /// says: over TLS or not, as HTTP/1, with the scheme that follows.
    pub fn of_listener(shared: &Shared, listener: usize) -> Self {
        let tls = shared
            .current
            .load()
            .config
            .listeners
            .get(listener)
            .is_some_and(|l| l.tls.is_some());
        Self {
            listener,
            tls,
            h2: false,
            scheme: if tls { Scheme::Https } else { Scheme::Http },
        }
    }
}

/// Writes limpet's own response for `refusal` (unless a response has begun already)
/// and counts it under the request's pool. Returns `Ok(true)`: the response is done.
pub async fn refuse(
    shared: &Shared,
    snap: Option<&Snapshot>,
    pool: Option<usize>,
    via: Via,
    session: &mut Session,
    refusal: Refusal,
) -> Result<bool> {
    let hsts = snap
        .and_then(|s| s.listeners.get(via.listener))
        .and_then(|l| l.hsts.as_deref());
    respond(
        shared,
        snap,
        pool,
        session,
        refusal,
        Extra { location: None, hsts },
    )
    .await
}

/// Headers some of limpet's own responses carry.
pub struct Extra<'a> {
    pub location: Option<String>,
    /// `Strict-Transport-Security` of a TLS listener that sends it.
    pub hsts: Option<&'a str>,
}

/// Sends the client to `https://{host}{path}` with a 308 (method and body kept).
pub async fn redirect_https(
    shared: &Shared,
    snap: &Snapshot,
    session: &mut Session,
    host: &str,
) -> Result<bool> {
    let path = session
        .req_header()
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str());
    let location = format!("https://{host}{path}");
    // Plain listeners only: HSTS over http means nothing to a browser.
    let extra = Extra {
        location: Some(location),
        hsts: None,
    };
    respond(shared, Some(snap), None, session, Refusal::HttpsRedirect, extra).await
}

/// The one writer of limpet's own responses. Boxed: every request hook's future is
/// moved into a box by Pingora's hook calls, at its full size, and this rare path
/// (writing a response and awaiting the client) would otherwise widen them all.
fn respond<'a>(
    shared: &'a Shared,
    snap: Option<&'a Snapshot>,
    pool: Option<usize>,
    session: &'a mut Session,
    refusal: Refusal,
    extra: Extra<'a>,
) -> Pin<Box<dyn Future<Output = Result<bool>> + Send + 'a>> {
    Box::pin(async move {
        if session
            .response_written()
            .is_some_and(|r| !r.status.is_informational())
        {
            return Ok(true);
        }
        let mut h = ResponseHeader::build(refusal.status(), Some(5))?;
        let body = refusal_fields(shared, snap, pool, refusal, &extra, &mut h)?;
        session.write_response_header(Box::new(h), false).await?;
        session
            .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
            .await?;
        Ok(true)
    })
}

/// Counts limpet's own response `refusal` under its pool (or `pool=""`) and writes its
/// fields into `h`, a head of status `refusal.status()`; returns its body. What every
/// driver's answer is made of.
pub fn refusal_fields(
    shared: &Shared,
    snap: Option<&Snapshot>,
    pool: Option<usize>,
    refusal: Refusal,
    extra: &Extra<'_>,
    h: &mut impl Head,
) -> Result<&'static str> {
    match snap.zip(pool).and_then(|(s, p)| s.pools.get(p)) {
        Some(pool) => refusal.count(&pool.responses, true),
        None => refusal.count(&shared.unrouted, false),
    }
    let body = refusal.body();
    h.set(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    )?;
    h.set(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()))?;
    h.set(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"))?;
    if refusal.retry_after() {
        h.set(http::header::RETRY_AFTER, HeaderValue::from_static("1"))?;
    }
    if let Some(location) = &extra.location {
        h.set(http::header::LOCATION, value(location)?)?;
    }
    if let Some(hsts) = extra.hsts {
        h.set(http::header::STRICT_TRANSPORT_SECURITY, value(hsts)?)?;
    }
    Ok(body)
}

/// Adds the forwarding headers every request carries upstream: the client chain in
/// `X-Forwarded-For` and `Forwarded`, the scheme the client used in
/// `X-Forwarded-Proto` and `Forwarded`.
pub fn forwarding_headers(peer: Option<IpAddr>, via: Via, upstream: &mut impl Head) -> Result<()> {
    let proto: &'static str = match via.scheme {
        Scheme::Https => "https",
        Scheme::Http => "http",
    };
    // Append the TCP peer, as every proxy hop does; backends read the chain right to
    // left, and `server.trusted_proxies` decides how far limpet itself believes it.
    if let Some(peer) = peer {
        // The values are rendered on the stack and copied once into their header
        // values: no formatting allocations on the request path.
        let mut line = Line::default();
        line.push_ip(peer);
        // Several X-Forwarded-For lines form one list (RFC 9110 §5.3); bytes that are
        // not visible ASCII cannot be forwarded faithfully and are dropped.
        let earlier: Vec<&str> = upstream
            .fields()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::trim).filter(|v| !v.is_empty()))
            .collect();
        let xff = if earlier.is_empty() {
            line.value()?
        } else {
            let mut joined = earlier.join(", ");
            joined.push_str(", ");
            joined.push_str(line.as_str());
            HeaderValue::try_from(joined).explain_err(ErrorType::InvalidHTTPHeader, |_| "x-forwarded-for")?
        };
        upstream.set(HeaderName::from_static("x-forwarded-for"), xff)?;
        // RFC 7239: IPv6 addresses are quoted and bracketed.
        let mut forwarded = Line::default();
        match peer {
            IpAddr::V4(_) => {
                forwarded.push(b"for=");
                forwarded.push_ip(peer);
            }
            IpAddr::V6(_) => {
                forwarded.push(b"for=\"[");
                forwarded.push_ip(peer);
                forwarded.push(b"]\"");
            }
        }
        forwarded.push(b";proto=");
        forwarded.push(proto.as_bytes());
        upstream.add(http::header::FORWARDED, forwarded.value()?)?;
    }
    upstream.set(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    )?;
    Ok(())
}

/// A short header value (an address and a few words) rendered on the stack.
struct Line {
    buf: [u8; 96],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self { buf: [0; 96], len: 0 }
    }
}

impl crate::render::Out for Line {
    fn put(&mut self, s: &str) {
        self.push(s.as_bytes());
    }
}

impl Line {
    fn push_ip(&mut self, ip: IpAddr) {
        crate::render::ip(self, ip);
    }

    fn push(&mut self, bytes: &[u8]) {
        // Addresses and protocol names fit: the longest value, a quoted IPv6 address
        // with its scope, is under 70 bytes. A longer one would be cut, never overflow.
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }

    fn value(&self) -> Result<HeaderValue> {
        HeaderValue::from_bytes(&self.buf[..self.len])
            .explain_err(ErrorType::InvalidHTTPHeader, |_| "forwarding header")
    }
}

/// Records the serving backend in the session tables the request consulted. Called
/// once per request, when the backend's response head arrives.
pub async fn record(shared: &Shared, snap: &Snapshot, attempt: &Attempt) {
    let (Some(pool), Some(i)) = (attempt.pool(snap), attempt.chosen) else {
        return;
    };
    let now = unix_now();
    persist::record_tables(
        shared.store.as_ref(),
        pool,
        &attempt.evals,
        i,
        attempt.served(),
        now,
    )
    .await;
}

/// Adds what limpet says in a backend's response: the affinity cookie when the request
/// starts or moves a session, and the debug header.
pub fn decorate_response(snap: &Snapshot, attempt: &Attempt, via: Via, resp: &mut impl Head) -> Result<()> {
    if let Some(hsts) = snap.listeners.get(via.listener).and_then(|l| l.hsts.as_deref()) {
        resp.set(http::header::STRICT_TRANSPORT_SECURITY, value(hsts)?)?;
    }
    let (Some(pool), Some(i)) = (attempt.pool(snap), attempt.chosen) else {
        return Ok(());
    };
    let backend = &pool.backends[i];
    if let Some(keys) = &snap.keyring {
        let to = persist::Issuer {
            keys,
            pool,
            backend: i,
            scheme: via.scheme,
            now: unix_now(),
        };
        let cookies = persist::set_cookies(&to, &attempt.evals, attempt.served(), resp.fields());
        let issued = !cookies.is_empty();
        for c in cookies {
            resp.add(http::header::SET_COOKIE, value(&c)?)?;
        }
        if issued {
            // Every Cache-Control line counts (RFC 9110 §5.3: one list, however split):
            // all are replaced below.
            let mut existing: Option<Vec<u8>> = None;
            for line in resp.fields().get_all(http::header::CACHE_CONTROL) {
                let joined = existing.get_or_insert_with(Vec::new);
                if !joined.is_empty() {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(line.as_bytes());
            }
            if let Some(cc) = private_cache_control(existing.as_deref()) {
                resp.set(http::header::CACHE_CONTROL, value(&cc)?)?;
            }
        }
    }
    if snap.config.server.debug_headers {
        resp.set(
            HeaderName::from_static("x-limpet-backend"),
            value(backend.id.as_str())?,
        )?;
    }
    Ok(())
}

fn value(text: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(text).explain_err(ErrorType::InvalidHTTPHeader, |_| "header value")
}

/// A message head limpet adds fields to, whichever HTTP engine carries it: the
/// request and response heads of Pingora (which keep the case of names they were given)
/// and a plain `http::HeaderMap` (hyper's).
pub trait Head {
    fn fields(&self) -> &HeaderMap;
    /// Replaces every field `name` with `value`.
    fn set(&mut self, name: HeaderName, value: HeaderValue) -> Result<()>;
    /// Adds a field `name`, keeping those there.
    fn add(&mut self, name: HeaderName, value: HeaderValue) -> Result<()>;
}

/// Pingora's heads keep the case of the names they were given: fields go through
/// their own insert and append.
macro_rules! pingora_head {
    ($($t:ty),*) => {$(
        impl Head for $t {
            fn fields(&self) -> &HeaderMap {
                &self.headers
            }
            fn set(&mut self, name: HeaderName, value: HeaderValue) -> Result<()> {
                self.insert_header(name, value)
            }
            fn add(&mut self, name: HeaderName, value: HeaderValue) -> Result<()> {
                self.append_header(name, value).map(|_| ())
            }
        }
    )*};
}
pingora_head!(RequestHeader, ResponseHeader);

impl Head for HeaderMap {
    fn fields(&self) -> &HeaderMap {
        self
    }
    fn set(&mut self, name: HeaderName, value: HeaderValue) -> Result<()> {
        self.insert(name, value);
        Ok(())
    }
    fn add(&mut self, name: HeaderName, value: HeaderValue) -> Result<()> {
        self.append(name, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn rendered(ip: IpAddr) -> String {
        let mut line = Line::default();
        line.push_ip(ip);
        line.as_str().to_owned()
    }

    proptest! {
        #[test]
        fn addresses_render_as_display_writes_them(v4 in any::<u32>(), v6 in any::<u128>()) {
            let v4 = IpAddr::V4(Ipv4Addr::from(v4));
            let v6 = IpAddr::V6(Ipv6Addr::from(v6));
            prop_assert_eq!(rendered(v4), v4.to_string());
            prop_assert_eq!(rendered(v6), v6.to_string());
        }
    }

    #[test]
    fn a_line_never_overflows() {
        let mut line = Line::default();
        for _ in 0..20 {
            line.push_ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap());
        }
        assert_eq!(line.len, line.buf.len());
        assert!(line.value().is_ok());
    }
}
