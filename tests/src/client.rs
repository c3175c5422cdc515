//! A small HTTP client view that handles the affinity cookie explicitly, so that tests
//! can assert on it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

/// Sends `request` on a fresh connection to `addr` and returns everything that came
/// back until the connection closed, and how long that took (bounded as
/// [`until_closed`]).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (String, Duration) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    until_closed(&mut s).await
}

/// Everything the server sends on `s` (a stream or its read half) until it closes
/// (bounded at 15 s).
pub async fn until_closed<R: tokio::io::AsyncRead + Unpin>(s: &mut R) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(15) {
        match tokio::time::timeout(
            Duration::from_secs(15),
            tokio::io::AsyncReadExt::read(s, &mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&out).to_string(), started.elapsed())
}

/// What curl saw: HTTP version, status, headers (lower-case names) and body.
pub struct Curled {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Curled {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs curl with `args` against `url` and parses its answer.
pub fn curl(args: &[&str], url: &str) -> Curled {
    let out = std::process::Command::new("curl")
        .args(["-s", "-i", "--max-time", "20"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl (Debian package curl; .ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default().to_string();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Curled {
        version,
        status,
        headers,
        body: body.to_string(),
    }
}
