//! One active check of one backend.

use std::net::SocketAddr;

use limpet_config::{CheckKind, HealthCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One active check: a TCP connect, or an HTTP/1.1 `GET` whose status must fall in
/// `expect_status`, all within `timeout`.
pub async fn probe(addr: SocketAddr, hc: &HealthCheck) -> bool {
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        if hc.kind == CheckKind::Tcp {
            return Ok(true);
        }
        let host = hc.host.clone().unwrap_or_else(|| addr.to_string());
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: limpet-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            hc.path
        );
        stream.write_all(request.as_bytes()).await?;
        // The status line is all that matters: "HTTP/1.x NNN".
        let mut head = [0u8; 12];
        let mut got = 0;
        while got < head.len() {
            let n = stream.read(&mut head[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let status = std::str::from_utf8(&head[..got])
            .ok()
            .filter(|h| h.starts_with("HTTP/1."))
            .and_then(|h| h.get(9..12))
            .and_then(|s| s.parse::<u16>().ok());
        Ok::<_, std::io::Error>(
            status.is_some_and(|s| (hc.expect_status.0..=hc.expect_status.1).contains(&s)),
        )
    };
    matches!(tokio::time::timeout(hc.timeout, check).await, Ok(Ok(true)))
}
