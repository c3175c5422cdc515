//! The PROXY protocol (v1 text and v2 binary, as HAProxy specifies them) on listeners
//! with `proxy_protocol: true`: behind an L4 balancer it is the only way to learn the
//! client's address. The header is read before anything else on the connection (before
//! TLS on TLS listeners), only from peers in `server.trusted_proxies`; the client
//! address it carries replaces the peer address for everything after (client IP,
//! `source_ip` affinity, `X-Forwarded-For`, logs). A malformed header, or any header
//! from an untrusted peer, closes the connection and is counted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest, UniqueID};
use pingora_error::{Error, ErrorType, Result};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::shared::Shared;
use crate::snapshot::Snapshot;

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included.
const V1_MAX: usize = 107;

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Not a PROXY header, or a broken one.
    Malformed,
    /// The peer is not in `server.trusted_proxies`.
    Untrusted,
    /// The connection closed before sending anything (a TCP health check of the
    /// balancer in front): not counted.
    Empty,
}

impl Rejected {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Malformed => "malformed",
            Rejected::Untrusted => "untrusted",
            Rejected::Empty => "empty",
        }
    }
}

/// Reads one PROXY header from `io`, byte-exact (nothing after it is consumed).
/// Returns the client address it carries; `None` for `LOCAL` (v2) or `UNKNOWN` (v1)
/// connections, which keep the peer's own address.
pub async fn read_header<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
) -> std::result::Result<Option<SocketAddr>, Rejected> {
    let mut first = [0u8; 12];
    first[0] = first_byte(io).await?;
    io.read_exact(&mut first[1..5])
        .await
        .map_err(|_| Rejected::Malformed)?;
    if &first[..5] == b"PROXY" {
        let mut line = first[..5].to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err(Rejected::Malformed);
            }
            let mut b = [0u8; 1];
            io.read_exact(&mut b).await.map_err(|_| Rejected::Malformed)?;
            line.push(b[0]);
        }
        return parse_v1(&line[..line.len() - 2]);
    }
    io.read_exact(&mut first[5..])
        .await
        .map_err(|_| Rejected::Malformed)?;
    if first != V2_SIGNATURE {
        return Err(Rejected::Malformed);
    }
    let mut head = [0u8; 4];
    io.read_exact(&mut head).await.map_err(|_| Rejected::Malformed)?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await.map_err(|_| Rejected::Malformed)?;
    parse_v2(head[0], head[1], &body)
}

/// The connection's first byte; [`Rejected::Empty`] when it closes before sending one.
async fn first_byte<R: AsyncRead + Unpin + ?Sized>(io: &mut R) -> std::result::Result<u8, Rejected> {
    let mut b = [0u8; 1];
    match io.read(&mut b).await {
        Ok(1) => Ok(b[0]),
        Ok(_) => Err(Rejected::Empty),
        Err(_) => Err(Rejected::Malformed),
    }
}

fn parse_v1(line: &[u8]) -> std::result::Result<Option<SocketAddr>, Rejected> {
    let text = std::str::from_utf8(line).map_err(|_| Rejected::Malformed)?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let src: IpAddr = src.parse().map_err(|_| Rejected::Malformed)?;
            let _dst: IpAddr = dst.parse().map_err(|_| Rejected::Malformed)?;
            let sport: u16 = sport.parse().map_err(|_| Rejected::Malformed)?;
            let _dport: u16 = dport.parse().map_err(|_| Rejected::Malformed)?;
            if (*family == "TCP4") != src.is_ipv4() {
                return Err(Rejected::Malformed);
            }
            Ok(Some(SocketAddr::new(src, sport)))
        }
        _ => Err(Rejected::Malformed),
    }
}

fn parse_v2(
    version_command: u8,
    family: u8,
    body: &[u8],
) -> std::result::Result<Option<SocketAddr>, Rejected> {
    if version_command >> 4 != 2 {
        return Err(Rejected::Malformed);
    }
    match version_command & 0x0f {
        // LOCAL: the balancer's own connection (a health check): keep the peer.
        0 => return Ok(None),
        1 => {}
        _ => return Err(Rejected::Malformed),
    }
    match family {
        // TCP over IPv4: src(4) dst(4) sport(2) dport(2).
        0x11 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Ok(Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([body[8], body[9]]),
            )))
        }
        // TCP over IPv6: src(16) dst(16) sport(2) dport(2).
        0x21 if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Ok(Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port)))
        }
        // UNSPEC: no address to learn.
        0x00 => Ok(None),
        _ => Err(Rejected::Malformed),
    }
}

/// Checks the peer, reads the header and puts the client address in the stream's
/// socket digest. `stream` is the raw TCP stream, before TLS.
pub(crate) async fn accept<S>(shared: &Shared, snap: &Snapshot, listener: usize, stream: &mut S) -> Result<()>
where
    S: AsyncRead + Unpin + GetSocketDigest + UniqueID + ?Sized,
{
    let digest = stream.get_socket_digest();
    let peer = digest
        .as_ref()
        .and_then(|d| d.peer_addr())
        .and_then(|a| a.as_inet())
        .copied();
    let trusted = peer.is_some_and(|p| {
        snap.config
            .server
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&p.ip()))
    });
    let outcome = if trusted {
        read_header(stream).await
    } else {
        // Whatever an untrusted peer sends is refused; one that sends nothing is not
        // worth a count.
        first_byte(stream).await.and(Err(Rejected::Untrusted))
    };
    match outcome {
        Ok(client) => {
            if let Some(client) = client {
                let replaced = SocketDigest::from_raw_fd(stream.id());
                let _ = replaced.peer_addr.set(Some(PingoraAddr::Inet(client)));
                if let Some(local) = digest.as_ref().and_then(|d| d.local_addr()) {
                    let _ = replaced.local_addr.set(Some(local.clone()));
                }
                stream.set_socket_digest(replaced);
            }
            Ok(())
        }
        Err(why) => {
            if let Some(Some(counters)) = shared.proxy_protocol.get(listener) {
                match why {
                    Rejected::Malformed => counters.malformed(),
                    Rejected::Untrusted => counters.untrusted(),
                    Rejected::Empty => {}
                }
            }
            tracing::info!(
                target: "limpet::input",
                peer = ?peer,
                reason = why.as_str(),
                "PROXY protocol header refused: connection closed"
            );
            Error::e_explain(ErrorType::HandshakeError, "PROXY protocol header refused")
        }
    }
}

/// The pre-TLS step of every TLS listener: the client must send its first byte (of the
/// handshake, or of a PROXY header) within `client_idle_timeout`, not Pingora's fixed
/// 60 s; then, with `proxy_protocol: true`, the whole PROXY header by the same deadline.
pub struct BeforeTls {
    pub shared: Arc<Shared>,
    pub listener: usize,
    pub proxy_protocol: bool,
}

#[async_trait]
impl PreTlsProcess for BeforeTls {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        let snap = self.shared.current.load_full();
        // The PROXY header that may come first must be complete by the same deadline.
        let deadline = tokio::time::Instant::now() + snap.config.server.client_idle_timeout;
        handshake_starts_by(deadline, stream).await?;
        if !self.proxy_protocol {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, accept(&self.shared, &snap, self.listener, stream)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Error::e_explain(
                    ErrorType::HandshakeError,
                    "PROXY header not complete within client_idle_timeout",
                )
            }
        }
        // After the header, the handshake itself must start by the same deadline, not
        // Pingora's 60 s.
        handshake_starts_by(deadline, stream).await
    }
}

/// Waits until the client's next byte (of its TLS handshake, or of a PROXY header) is
/// there, by `deadline`. A one-byte peek (read and put back): cancelling it loses
/// nothing.
async fn handshake_starts_by(deadline: tokio::time::Instant, stream: &mut L4Stream) -> Result<()> {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(
        deadline,
        pingora_core::protocols::Peek::try_peek(stream, &mut first),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Error::e_because(ErrorType::HandshakeError, "closed before the TLS handshake", e),
        Err(_) => Error::e_explain(
            ErrorType::HandshakeError,
            "no TLS handshake within client_idle_timeout",
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn read(bytes: &[u8]) -> (std::result::Result<Option<SocketAddr>, Rejected>, Vec<u8>) {
        let mut cursor = std::io::Cursor::new(bytes.to_vec());
        let r = read_header(&mut cursor).await;
        let pos = cursor.position() as usize;
        (r, bytes[pos..].to_vec())
    }

    #[tokio::test]
    async fn v1_headers() {
        let (r, rest) = read(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(r, Ok(Some("203.0.113.7:51234".parse().unwrap())));
        assert_eq!(
            rest, b"GET / HTTP/1.1\r\n",
            "nothing after the header is consumed"
        );
        let (r, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 80\r\n").await;
        assert_eq!(r, Ok(Some("[2001:db8::7]:4000".parse().unwrap())));
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await.0, Ok(None));
        for bad in [
            &b"PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n"[..],
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 300.1.1.1 10.0.0.1 1 2\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"PROXY",
            b"PRO",
        ] {
            assert_eq!(
                read(bad).await.0,
                Err(Rejected::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(read(b"").await.0, Err(Rejected::Empty));
        let long = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        assert_eq!(read(&long).await.0, Err(Rejected::Malformed));
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    proptest::proptest! {
        /// Arbitrary bytes: no panic, and a header is never read past its end: what
        /// follows it stays for HTTP or TLS.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (r, rest) = rt.block_on(read(&bytes));
            if r.is_ok() {
                let consumed = bytes.len() - rest.len();
                let v1 = bytes.starts_with(b"PROXY") && bytes[..consumed].ends_with(b"\r\n");
                let v2 = bytes.starts_with(&V2_SIGNATURE);
                proptest::prop_assert!(v1 || v2);
            }
        }

        /// Valid v1 headers for any address and port round-trip.
        #[test]
        fn v1_round_trip(a in 0u8..=255, b in 0u8..=255, port in 1u16..) {
            let line = format!("PROXY TCP4 10.{a}.{b}.1 127.0.0.1 {port} 80\r\nX");
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (r, rest) = rt.block_on(read(line.as_bytes()));
            proptest::prop_assert_eq!(r, Ok(Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, a, b, 1)), port))));
            proptest::prop_assert_eq!(rest, b"X".to_vec());
        }
    }

    #[tokio::test]
    async fn v2_headers() {
        let body4 = [203, 0, 113, 9, 10, 0, 0, 1, 0x1f, 0x90, 1, 187];
        let (r, rest) = read(&[v2(1, 0x11, &body4), b"GET /".to_vec()].concat()).await;
        assert_eq!(r, Ok(Some("203.0.113.9:8080".parse().unwrap())));
        assert_eq!(rest, b"GET /");
        let mut body6 = vec![0u8; 36];
        body6[..16].copy_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        body6[32..34].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(
            read(&v2(1, 0x21, &body6)).await.0,
            Ok(Some("[2001:db8::9]:5000".parse().unwrap()))
        );
        assert_eq!(read(&v2(0, 0x00, &[])).await.0, Ok(None), "LOCAL");
        assert_eq!(read(&v2(1, 0x11, &body4[..5])).await.0, Err(Rejected::Malformed));
        assert_eq!(read(&v2(7, 0x11, &body4)).await.0, Err(Rejected::Malformed));
        let mut wrong_version = v2(1, 0x11, &body4);
        wrong_version[12] = 0x11;
        assert_eq!(read(&wrong_version).await.0, Err(Rejected::Malformed));
    }
}
