//! A backend written byte by byte, for tests of what limpet sends a backend exactly and
//! of backends that answer oddly.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A backend written byte by byte: each connection's request head is read, kept in
/// `heads`, and answered with `answer(head)`; `None` closes the connection at once.
pub struct RawBackend {
    pub addr: SocketAddr,
    pub heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a raw backend does with a request head: bytes to write, then whether to keep
/// reading (and echoing every later byte back) or close.
pub type Answer = fn(&str) -> Option<(Vec<u8>, bool)>;

pub async fn raw_backend(answer: Answer) -> RawBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(1) => head.push(b[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    seen.lock().unwrap().push(head.clone());
                    // A body the head announces is read before answering.
                    let len: usize = head
                        .to_ascii_lowercase()
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if head.starts_with("GET /wait") {
                        // Holds its connection, so that concurrent requests need more.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    let Some((bytes, keep)) = answer(&head) else {
                        return;
                    };
                    if s.write_all(&bytes).await.is_err() {
                        return;
                    }
                    if !keep {
                        return;
                    }
                    if head.to_ascii_lowercase().contains("upgrade:") {
                        // Upgraded: echo whatever comes next, raw.
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                }
            });
        }
    });
    RawBackend { addr, heads, task }
}
