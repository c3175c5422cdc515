//! A small, real HTTP/1.1 backend for demos and end-to-end tests. It answers with its
//! own id, and offers what the tests need to observe a proxy from behind it:
//!
//! - `GET /…` → `200`, body `backend <id>\n`, header `x-backend-id`
//! - `GET /headers` → the request headers it received, one per line
//! - `POST /upload` → streams the body, answers with the byte count (never buffers it)
//! - `GET /download?bytes=N` → streams N bytes
//! - `GET /slow?ms=N` → answers after N milliseconds
//! - `GET /status/NNN` → answers with status NNN
//! - `GET /login` → sets an application session cookie `APPSESSION`
//! - `GET /logout` → deletes `APPSESSION` (`Max-Age=0`)
//! - any request with `x-set-cookie` headers → each becomes a `Set-Cookie` of the
//!   response, so tests can make the application set any cookie they need
//! - WebSocket upgrade on any path → echoes each message prefixed with `<id>:`; the
//!   `101` carries the request's `x-request-id` back as `x-seen-request-id`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Body = BoxBody<Bytes, hyper::Error>;

/// A running backend. Dropping it (or calling [`Backend::stop`]) closes its listener and
/// every open connection, as a crashed process would.
pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Binds `addr` (use port 0 for an ephemeral port) and serves until dropped.
    pub async fn start(id: &str, addr: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let owned = id.to_string();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let id = owned.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(req, id.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
                // Reap finished connections so the set does not grow without bound.
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Backend {
            id: id.to_string(),
            addr,
            task,
        })
    }

    pub fn stop(self) {}

    /// Stops the backend and returns once its listener is closed: from then on a
    /// connection to its address is refused, as after a crash.
    pub async fn kill(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn query_u64(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

async fn handle(req: Request<Incoming>, id: String) -> Result<Response<Body>, Infallible> {
    let ok = |body: Body| {
        let mut r = Response::new(body);
        r.headers_mut().insert(
            "x-backend-id",
            id.parse().unwrap_or_else(|_| {
                "invalid"
                    .parse()
                    .unwrap_or(hyper::header::HeaderValue::from_static("?"))
            }),
        );
        r
    };
    if is_websocket(&req) {
        return Ok(websocket(req, id.clone()));
    }
    let echoed: Vec<_> = req.headers().get_all("x-set-cookie").iter().cloned().collect();
    let path = req.uri().path().to_string();
    let resp = match path.as_str() {
        "/headers" => {
            let mut s = String::new();
            for (k, v) in req.headers() {
                s.push_str(&format!("{}: {}\n", k, String::from_utf8_lossy(v.as_bytes())));
            }
            ok(full(s))
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            ok(full(format!("{total}\n")))
        }
        "/download" => {
            let n = query_u64(&req, "bytes").unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_util::stream::unfold(n, move |left| {
                let chunk = chunk.clone();
                async move {
                    if left == 0 {
                        return None;
                    }
                    let take = left.min(chunk.len() as u64);
                    Some((
                        Ok::<_, hyper::Error>(Frame::data(chunk.slice(..take as usize))),
                        left - take,
                    ))
                }
            });
            let mut r = ok(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert("content-length", n.into());
            r
        }
        "/slow" => {
            let ms = query_u64(&req, "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ok(full(format!("backend {id} slow {ms}\n")))
        }
        p if p.starts_with("/status/") => {
            let mut r = ok(full(format!("backend {id} status\n")));
            if let Some(code) = p["/status/".len()..]
                .parse()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                *r.status_mut() = code;
            }
            r
        }
        "/login" => {
            let mut r = ok(full(format!("backend {id} logged in\n")));
            let sid = format!("APPSESSION={id}-{}; Path=/; HttpOnly", rand_suffix());
            if let Ok(v) = sid.parse() {
                r.headers_mut().append("set-cookie", v);
            }
            r
        }
        "/logout" => {
            let mut r = ok(full(format!("backend {id} logged out\n")));
            r.headers_mut().append(
                "set-cookie",
                hyper::header::HeaderValue::from_static("APPSESSION=; Max-Age=0; Path=/"),
            );
            r
        }
        _ => ok(full(format!("backend {id}\n"))),
    };
    let mut resp = resp;
    for v in echoed {
        resp.headers_mut().append("set-cookie", v);
    }
    Ok(resp)
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn websocket(req: Request<Incoming>, id: String) -> Response<Body> {
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        let mut r = Response::new(full("missing sec-websocket-key\n"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let reply_id = id.clone();
    let request_id = req.headers().get("x-request-id").cloned();
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(t) => Message::text(format!("{reply_id}:{t}")),
                Message::Binary(b) => Message::binary(b),
                Message::Ping(p) => Message::Pong(p),
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("upgrade", hyper::header::HeaderValue::from_static("websocket"));
    h.insert("connection", hyper::header::HeaderValue::from_static("Upgrade"));
    if let Ok(v) = key.parse() {
        h.insert("sec-websocket-accept", v);
    }
    if let Ok(v) = id.parse() {
        h.insert("x-backend-id", v);
    }
    if let Some(v) = request_id {
        h.insert("x-seen-request-id", v);
    }
    r
}
