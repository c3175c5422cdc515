//! Pure helpers over request headers: the host used for routing, the real client
//! address (trusting `X-Forwarded-For` only from configured proxies), header size.

use std::borrow::Cow;
use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;

/// Lower-case host without port, from the absolute URI or the Host header; borrowed
/// when it is lower case already, as clients send it.
pub fn host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Cow<'a, [u8]> {
    let raw: &[u8] = match uri.host() {
        Some(h) => h.as_bytes(),
        None => headers
            .get(http::header::HOST)
            .map(|v| v.as_bytes())
            .unwrap_or_default(),
    };
    let without_port = if raw.starts_with(b"[") {
        // IPv6 literal: keep through the closing bracket.
        match raw.iter().position(|b| *b == b']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.iter().rposition(|b| *b == b':') {
            Some(colon) => &raw[..colon],
            None => raw,
        }
    };
    if without_port.iter().any(u8::is_ascii_uppercase) {
        Cow::Owned(without_port.to_ascii_lowercase())
    } else {
        Cow::Borrowed(without_port)
    }
}

/// Whether an upgrade request asks for WebSocket, the one protocol limpet tunnels.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    let mut upgrades = headers.get_all(http::header::UPGRADE).iter();
    upgrades.next().is_some_and(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .all(|p| p.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    }) && upgrades.next().is_none()
}

/// Takes an upgrade to any protocol but WebSocket out of a request, so that it is
/// proxied as the plain request it also is (RFC 9110 §7.8: a server may ignore
/// `Upgrade`). `h2c` in particular: tunnelled, it would let a client speak HTTP/2
/// straight to a backend, past routing (request smuggling). Returns whether anything
/// was taken out.
pub fn drop_upgrade(headers: &mut HeaderMap) -> bool {
    let Some(kept) = connection_without_upgrade(headers) else {
        return false;
    };
    headers.remove(http::header::UPGRADE);
    headers.remove("http2-settings");
    headers.remove(http::header::CONNECTION);
    for v in kept {
        headers.append(http::header::CONNECTION, v);
    }
    true
}

/// When a request asks to upgrade to anything but WebSocket: its `Connection` values
/// without `upgrade` and `http2-settings`. `None` when there is nothing to drop.
fn connection_without_upgrade(headers: &HeaderMap) -> Option<Vec<HeaderValue>> {
    if !headers.contains_key(http::header::UPGRADE) || is_websocket(headers) {
        return None;
    }
    let kept = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| {
            let tokens: Vec<&[u8]> = v
                .as_bytes()
                .split(|b| *b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|t| {
                    !t.is_empty()
                        && !t.eq_ignore_ascii_case(b"upgrade")
                        && !t.eq_ignore_ascii_case(b"http2-settings")
                })
                .collect();
            (!tokens.is_empty())
                .then(|| HeaderValue::from_bytes(&tokens.join(&b", "[..])).ok())
                .flatten()
        })
        .collect();
    Some(kept)
}

/// Takes the hop-by-hop fields (RFC 9110 §7.6.1) out of a message limpet relays
/// between two HTTP/1 connections it manages itself: `Connection` and the fields it
/// names, `Keep-Alive`, `Proxy-Connection`, `TE` but `TE: trailers` (which says the
/// client takes the trailers a backend may send), and `Upgrade` unless `keep_upgrade` (a
/// WebSocket handshake, which needs it and `Connection: upgrade`). `Transfer-Encoding`
/// stays: the engine frames the body by it; so does `Trailer`, which is end to end.
pub fn drop_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    use http::header::{HeaderName, CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
    // One pass over the names says which hop-by-hop fields are there at all: most
    // messages have none, or only `Connection: keep-alive`.
    let (mut connection, mut others) = (false, false);
    for name in headers.keys() {
        match name.as_str() {
            "connection" => connection = true,
            "keep-alive" | "proxy-connection" | "te" | "upgrade" => others = true,
            _ => {}
        }
    }
    if connection {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            // `keep-alive` and `close` are options more often than field names; the
            // Keep-Alive field goes below either way.
            .filter(|t| {
                !t.is_empty() && !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"close")
            })
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .filter(|n| *n != TRANSFER_ENCODING && *n != TE && !(keep_upgrade && *n == UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    if others {
        for name in ["keep-alive", "proxy-connection"] {
            headers.remove(name);
        }
        let trailers_only = {
            let mut te = headers.get_all(TE).iter();
            te.next()
                .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"trailers"))
                && te.next().is_none()
        };
        if !trailers_only {
            headers.remove(TE);
        }
        if !keep_upgrade {
            headers.remove(UPGRADE);
        }
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Sum of header names and values, plus the URI: what a client made us parse.
pub fn header_bytes(uri: &http::Uri, headers: &HeaderMap) -> usize {
    let uri_len = uri.path_and_query().map_or(0, |p| p.as_str().len());
    fields_bytes(headers) + uri_len
}

/// Sum of header names and values with their separators: the size of a header block.
pub fn fields_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
}

/// The client's address: the TCP peer, or — when the peer is a trusted proxy — the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(s) = v.to_str() else { return peer };
        for part in s.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                // A malformed chain cannot be trusted past this point.
                Err(_) => return peer,
            }
        }
    }
    hops.into_iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(peer)
}

/// Does a trusted proxy in front say the client used https (`X-Forwarded-Proto`)?
/// Only a peer in `trusted` is believed.
pub fn forwarded_https(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&peer))
        && headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// The request's id: the `X-Request-Id` a trusted proxy sent (visible ASCII, 1 to 128
/// bytes), else a new random one (32 hex digits).
pub fn request_id(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> HeaderValue {
    let from_proxy = peer.is_some_and(|p| trusted.iter().any(|n| n.contains(&p)));
    if from_proxy {
        if let Some(v) = headers.get("x-request-id") {
            let b = v.as_bytes();
            if (1..=128).contains(&b.len()) && b.iter().all(|c| c.is_ascii_graphic()) {
                return v.clone();
            }
        }
    }
    let mut hex = [0u8; 32];
    let id: u128 = rand::random();
    for (i, out) in hex.iter_mut().enumerate() {
        let nibble = (id >> (124 - 4 * i)) & 0xf;
        *out = b"0123456789abcdef"[nibble as usize];
    }
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_websocket_upgrades_are_kept() {
        let mut req = headers(&[
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("connection", "Upgrade, HTTP2-Settings, keep-alive"),
        ]);
        assert!(drop_upgrade(&mut req));
        assert!(req.get("upgrade").is_none());
        assert!(req.get("http2-settings").is_none());
        assert_eq!(req.get("connection").unwrap(), "keep-alive");

        let mut ws = headers(&[("upgrade", "WebSocket"), ("connection", "Upgrade")]);
        assert!(!drop_upgrade(&mut ws));
        assert_eq!(ws.get("upgrade").unwrap(), "WebSocket");

        let mut two = headers(&[("upgrade", "websocket, h2c"), ("connection", "upgrade")]);
        assert!(drop_upgrade(&mut two));
        assert!(two.get("connection").is_none());
    }

    #[test]
    fn hop_by_hop_fields_stay_on_their_hop() {
        let mut req = headers(&[
            ("connection", "close, X-Private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("trailer", "x-sum"),
            ("x-kept", "1"),
        ]);
        drop_hop_by_hop(&mut req, false);
        let mut left: Vec<&str> = req.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["trailer", "transfer-encoding", "x-kept"]);
        let mut trailers = headers(&[("te", "trailers")]);
        drop_hop_by_hop(&mut trailers, false);
        assert_eq!(trailers.get("te").unwrap(), "trailers");

        let mut ws = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        drop_hop_by_hop(&mut ws, true);
        assert_eq!(ws.get("connection").unwrap(), "upgrade");
        assert_eq!(ws.get("upgrade").unwrap(), "websocket");
    }

    #[test]
    fn request_ids_come_from_trusted_proxies_or_are_made() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let sent = headers(&[("x-request-id", "abc-123")]);
        let proxy = Some("10.1.2.3".parse().unwrap());
        let client = Some("192.0.2.1".parse().unwrap());
        assert_eq!(request_id(proxy, &sent, &trusted), "abc-123");
        let made = request_id(client, &sent, &trusted);
        assert_ne!(made, "abc-123", "a client cannot choose its id");
        assert_eq!(made.len(), 32);
        assert!(made.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(request_id(client, &sent, &trusted), made, "ids are random");
        let too_long = "x".repeat(129);
        let long = headers(&[("x-request-id", too_long.leak())]);
        assert_eq!(request_id(proxy, &long, &trusted).len(), 32);
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn host_forms() {
        let uri: http::Uri = "/x".parse().unwrap();
        assert_eq!(
            host(&uri, &headers(&[("host", "Example.COM:8080")])).as_ref(),
            b"example.com"
        );
        assert_eq!(host(&uri, &headers(&[("host", "[::1]:8080")])).as_ref(), b"[::1]");
        assert_eq!(host(&uri, &headers(&[])).as_ref(), b"");
        let abs: http::Uri = "http://a.b:1/x".parse().unwrap();
        assert_eq!(host(&abs, &headers(&[("host", "other")])).as_ref(), b"a.b");
    }

    #[test]
    fn xff_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.1.1.1")]);
        let untrusted: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(untrusted, &h, &trusted), untrusted);
        let lb: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            client_ip(lb, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let bad = headers(&[("x-forwarded-for", "nonsense")]);
        assert_eq!(client_ip(lb, &bad, &trusted), lb);
    }
}

/// The client address masked to its prefix, as table-key bytes: the family's tag, the
/// prefix length and the masked address, so that 10.0.0.0/8 and 10.0.0.0/24 never share
/// a key.
pub fn masked_ip(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => {
            let net = ipnet::Ipv4Net::new(v4, v4_prefix.min(32)).map_or(v4, |n| n.network());
            let mut out = vec![4, v4_prefix];
            out.extend_from_slice(&net.octets());
            out
        }
        IpAddr::V6(v6) => {
            // An IPv4-mapped address is the IPv4 client it carries.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return masked_ip(IpAddr::V4(v4), v4_prefix, v6_prefix);
            }
            let net = ipnet::Ipv6Net::new(v6, v6_prefix.min(128)).map_or(v6, |n| n.network());
            let mut out = vec![6, v6_prefix];
            out.extend_from_slice(&net.octets());
            out
        }
    }
}

/// The raw value of query parameter `name` (not percent-decoded: the bytes are only
/// hashed, and one spelling per client is what keeps it on one backend).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a [u8]> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn masks_by_family_and_prefix() {
        let a: IpAddr = "192.0.2.77".parse().unwrap();
        let b: IpAddr = "192.0.2.200".parse().unwrap();
        assert_eq!(masked_ip(a, 24, 64), masked_ip(b, 24, 64));
        assert_ne!(masked_ip(a, 32, 64), masked_ip(b, 32, 64));
        let mapped: IpAddr = "::ffff:192.0.2.77".parse().unwrap();
        assert_eq!(masked_ip(mapped, 32, 64), masked_ip(a, 32, 64));
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(masked_ip(x, 32, 64), masked_ip(y, 32, 64));
        assert_ne!(masked_ip(x, 32, 128), masked_ip(y, 32, 128));
    }

    #[test]
    fn query_parameters() {
        assert_eq!(query_param(Some("a=1&room=42&b"), "room"), Some(&b"42"[..]));
        assert_eq!(query_param(Some("a=1&b"), "b"), Some(&b""[..]));
        assert_eq!(query_param(Some("a=1"), "room"), None);
        assert_eq!(query_param(None, "room"), None);
    }
}
