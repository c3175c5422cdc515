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
