//! Pure helpers over request headers: the host used for routing, the real client
//! address (trusting `X-Forwarded-For` only from configured proxies), header size.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// Requests whose header block exceeds this get 431: enough for any sane cookie jar,
/// small enough that a hostile client cannot make limpet chew megabytes per request.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Lower-case host without port, from the absolute URI or the Host header.
pub fn host(uri: &http::Uri, headers: &HeaderMap) -> Vec<u8> {
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
    without_port.to_ascii_lowercase()
}

/// Sum of header names and values, plus the URI: what a client made us parse.
pub fn header_bytes(uri: &http::Uri, headers: &HeaderMap) -> usize {
    let uri_len = uri.path_and_query().map_or(0, |p| p.as_str().len());
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + uri_len
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

#[cfg(test)]
mod tests {
    use super::*;

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
            host(&uri, &headers(&[("host", "Example.COM:8080")])),
            b"example.com"
        );
        assert_eq!(host(&uri, &headers(&[("host", "[::1]:8080")])), b"[::1]");
        assert_eq!(host(&uri, &headers(&[])), b"");
        let abs: http::Uri = "http://a.b:1/x".parse().unwrap();
        assert_eq!(host(&abs, &headers(&[("host", "other")])), b"a.b");
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
