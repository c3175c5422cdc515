//! The fuzz targets' bodies, one function per parser of untrusted bytes. Each takes
//! the fuzzer's bytes, must never panic, and asserts what the parser promises; the
//! binaries in `src/bin/` hand them to AFL.

use std::time::Duration;

use limpet_affinity::{Keyring, SigningKey};

/// The signing keys the cookie codec target verifies against.
pub fn keyring() -> Keyring {
    let key = SigningKey::new("k1", b"fuzz-secret-0123456789abcdef0123456789").unwrap();
    Keyring::new(vec![key]).unwrap()
}

/// limpet's affinity cookie. The first byte picks what the rest is:
/// - 0: the cookie's bytes before base64, so that mutations reach the fields
///   behind the encoding;
/// - 1: a value as a client sends it;
/// - 2: a backend id, issue time and TTL to sign and read back.
///
/// Decoding never panics, a value it accepts names a backend and was issued no later
/// than now, and what limpet signs it reads back as it was.
pub fn cookie_codec(keys: &Keyring, data: &[u8]) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let now = 1_800_000_000;
    let max_ttl = Duration::from_secs(4 * 3600);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut buf = Vec::new();
    match mode % 3 {
        0 | 1 => {
            let encoded;
            let value = if mode % 3 == 0 {
                encoded = URL_SAFE_NO_PAD.encode(rest);
                encoded.as_bytes()
            } else {
                rest
            };
            if let Ok(t) = limpet_affinity::decode(keys, "web", value, &mut buf, now, max_ttl) {
                assert!(!t.backend.is_empty());
                assert!(t.issued_at <= now + 60, "from the future, beyond the clock skew");
            }
        }
        _ => {
            if rest.len() < 9 {
                return;
            }
            let issued = now - u64::from(u32::from_be_bytes(rest[..4].try_into().unwrap())) % now;
            let ttl = u64::from(u32::from_be_bytes(rest[4..8].try_into().unwrap())) % (4 * 3600) + 1;
            let Ok(backend) = std::str::from_utf8(&rest[8..]) else {
                return;
            };
            let valid = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
            if backend.len() > 64 || !backend.chars().all(valid) {
                return;
            }
            let v = limpet_affinity::encode(keys, "web", backend, issued, Duration::from_secs(ttl));
            assert!(v.len() <= limpet_affinity::MAX_ENCODED_LEN);
            match limpet_affinity::decode(keys, "web", v.as_bytes(), &mut buf, now, max_ttl) {
                Ok(t) => {
                    assert_eq!((t.backend, t.issued_at), (backend.as_bytes(), issued));
                    assert!(now <= issued + ttl, "an expired cookie was accepted");
                }
                Err(limpet_affinity::Reject::Expired) => assert!(now > issued + ttl),
                Err(e) => panic!("{backend:?} issued {issued} ttl {ttl}: {e:?}"),
            }
            // Read with another pool's scope, it is refused.
            assert!(limpet_affinity::decode(keys, "api", v.as_bytes(), &mut buf, now, max_ttl).is_err());
        }
    }
}

/// `Cookie` header fields (the input split at newlines), looked up by a name taken
/// from the first byte's length: every value found is a slice of some field, and no
/// more than `MAX_CANDIDATES` come back.
pub fn cookie_header(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n as usize % 16).max(1).min(rest.len());
    let (name, rest) = rest.split_at(n);
    if name.is_empty() {
        return;
    }
    let fields: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let found: Vec<&[u8]> = limpet_affinity::cookie_values(fields.iter().copied(), name).collect();
    assert!(found.len() <= limpet_affinity::MAX_CANDIDATES);
    for v in found {
        assert!(v.is_empty() || fields.iter().any(|f| f.windows(v.len()).any(|w| w == v)));
    }
}

/// A backend's `Set-Cookie` fields (the input split at newlines) read for the app
/// cookie `JSESSIONID`: never panics, and a cookie it keeps has a value of bounded size.
pub fn set_cookie(data: &[u8]) {
    let fields = data.split(|&b| b == b'\n');
    if let Some(limpet_affinity::AppCookie::Set { value, .. }) =
        limpet_affinity::app_cookie(fields, "JSESSIONID", 1_800_000_000)
    {
        assert!(!value.is_empty() && value.len() <= limpet_affinity::MAX_APP_VALUE);
    }
}

/// A PROXY protocol header (v1 or v2) at the start of a connection: never panics and
/// never reads past the header, so what follows stays for HTTP or TLS.
pub fn proxy_header(rt: &tokio::runtime::Runtime, data: &[u8]) {
    let mut rest = data;
    let r = rt.block_on(limpet_proxy::read_proxy_header(&mut rest));
    if r.is_ok() {
        let consumed = &data[..data.len() - rest.len()];
        assert!(
            (consumed.starts_with(b"PROXY") && consumed.ends_with(b"\r\n"))
                || consumed.starts_with(b"\r\n\r\n\0\r\nQUIT\n")
        );
    }
}

/// The configuration loader over any text: errors, never a panic, and every error
/// says something.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = limpet_config::parse(text) {
        assert!(errors.iter().all(|e| !e.message.is_empty()));
    }
}
