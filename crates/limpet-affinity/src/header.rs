//! Byte-level HTTP header helpers for the affinity cookie: finding our cookie among
//! `Cookie` headers (which may hold bytes that are not UTF-8), writing `Set-Cookie`,
//! and keeping cookie-bearing responses out of shared caches.

use limpet_config::{CookiePersistence, SameSite, Secure};
use std::fmt::Write;

/// At most this many same-named cookies are tried per request: bounds the work a
/// hostile client can cause with a header full of copies.
pub const MAX_CANDIDATES: usize = 4;

/// Values of every cookie called `name` across all `Cookie` headers, in order, up to
/// [`MAX_CANDIDATES`]. Surrounding double quotes are removed (RFC 6265 cookie-value).
pub fn cookie_values<'a, 'n, I>(headers: I, name: &'n [u8]) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n, I>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    headers
        .into_iter()
        .flat_map(|h| h.split(|b| *b == b';'))
        .filter_map(move |pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|b| *b == b'=')?;
            (trim(&pair[..eq]) == name).then(|| unquote(trim(&pair[eq + 1..])))
        })
        .take(MAX_CANDIDATES)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn unquote(s: &[u8]) -> &[u8] {
    match s {
        [b'"', inner @ .., b'"'] => inner,
        _ => s,
    }
}

/// The `Set-Cookie` value that pins a session: `Max-Age` is the session's TTL, and a
/// cookie without one (`None`) lasts the browser session.
/// How the client reached limpet: `secure: auto` cookies are `Secure` over HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

pub fn set_cookie(cfg: &CookiePersistence, value: &str, max_age_secs: Option<u64>, scheme: Scheme) -> String {
    let mut s = String::with_capacity(cfg.name.len() + value.len() + 80);
    let _ = write!(s, "{}={}", cfg.name, value);
    if let Some(secs) = max_age_secs {
        let _ = write!(s, "; Max-Age={secs}");
    }
    let _ = write!(s, "; Path={}", cfg.path);
    attributes(&mut s, cfg, scheme);
    s
}

/// A `Set-Cookie` value that deletes the cookie (used when no session can be kept).
pub fn delete_cookie(cfg: &CookiePersistence, scheme: Scheme) -> String {
    let mut s = format!("{}=; Max-Age=0; Path={}", cfg.name, cfg.path);
    attributes(&mut s, cfg, scheme);
    s
}

fn attributes(s: &mut String, cfg: &CookiePersistence, scheme: Scheme) {
    if let Some(d) = &cfg.domain {
        let _ = write!(s, "; Domain={d}");
    }
    let secure = match cfg.secure {
        Secure::Always => true,
        Secure::Never => false,
        Secure::Auto => scheme == Scheme::Https,
    };
    // Browsers drop SameSite=None cookies that are not Secure; honour the operator's
    // choice anyway and let docs/config.md warn about it.
    if secure {
        s.push_str("; Secure");
    }
    if cfg.http_only {
        s.push_str("; HttpOnly");
    }
    s.push_str(match cfg.same_site {
        SameSite::Strict => "; SameSite=Strict",
        SameSite::Lax => "; SameSite=Lax",
        SameSite::None => "; SameSite=None",
    });
}

/// The `Cache-Control` a response must carry when it sets an affinity cookie, or None
/// when the backend's own value already keeps it out of shared caches.
pub fn private_cache_control(existing: Option<&[u8]>) -> Option<String> {
    let Some(existing) = existing else {
        return Some("private".into());
    };
    let directives: Vec<&[u8]> = existing
        .split(|b| *b == b',')
        .map(trim)
        .filter(|d| !d.is_empty())
        .collect();
    let name = |d: &[u8]| -> Vec<u8> {
        let end = d.iter().position(|b| *b == b'=').unwrap_or(d.len());
        trim(&d[..end]).to_ascii_lowercase()
    };
    if directives
        .iter()
        .any(|d| matches!(name(d).as_slice(), b"private" | b"no-store"))
    {
        return None;
    }
    // `public` would invite shared caches in; everything else (max-age, …) is kept.
    let mut out = String::from("private");
    for d in directives {
        if name(d) == b"public" {
            continue;
        }
        out.push_str(", ");
        out.push_str(&String::from_utf8_lossy(d));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> CookiePersistence {
        CookiePersistence {
            name: "LIMPET".into(),
            follow: None,
            ttl: Duration::from_secs(900),
            max_ttl: Duration::from_secs(14400),
            path: "/".into(),
            domain: None,
            secure: Secure::Auto,
            http_only: true,
            same_site: SameSite::Lax,
        }
    }

    #[test]
    fn finds_cookie_across_headers_and_quotes() {
        let h: Vec<&[u8]> = vec![b"a=1; LIMPETX=no", b" LIMPET = \"v1\" ;b=2", b"LIMPET=v2"];
        let got: Vec<&[u8]> = cookie_values(h, b"LIMPET").collect();
        assert_eq!(got, vec![b"v1".as_slice(), b"v2".as_slice()]);
    }

    #[test]
    fn tolerates_non_utf8_and_bounds_candidates() {
        let h: Vec<&[u8]> = vec![b"x=\xff\xfe; LIMPET=\xc3\x28"];
        assert_eq!(cookie_values(h, b"LIMPET").count(), 1);
        let many = "LIMPET=a;".repeat(100);
        assert_eq!(
            cookie_values([many.as_bytes()], b"LIMPET").count(),
            MAX_CANDIDATES
        );
    }

    #[test]
    fn set_cookie_attributes() {
        let mut c = cfg();
        assert_eq!(
            set_cookie(&c, "VAL", Some(900), Scheme::Http),
            "LIMPET=VAL; Max-Age=900; Path=/; HttpOnly; SameSite=Lax"
        );
        assert!(set_cookie(&c, "VAL", Some(900), Scheme::Https).contains("; Secure"));
        assert_eq!(
            set_cookie(&c, "VAL", None, Scheme::Http),
            "LIMPET=VAL; Path=/; HttpOnly; SameSite=Lax"
        );
        c.domain = Some("example.com".into());
        c.secure = Secure::Never;
        c.http_only = false;
        c.same_site = SameSite::Strict;
        assert_eq!(
            set_cookie(&c, "V", Some(5), Scheme::Https),
            "LIMPET=V; Max-Age=5; Path=/; Domain=example.com; SameSite=Strict"
        );
        assert_eq!(
            delete_cookie(&c, Scheme::Http),
            "LIMPET=; Max-Age=0; Path=/; Domain=example.com; SameSite=Strict"
        );
    }

    #[test]
    fn cache_control() {
        assert_eq!(private_cache_control(None).as_deref(), Some("private"));
        assert_eq!(private_cache_control(Some(b"no-store")), None);
        assert_eq!(private_cache_control(Some(b"Private, max-age=5")), None);
        assert_eq!(
            private_cache_control(Some(b"public, max-age=60")).as_deref(),
            Some("private, max-age=60")
        );
        assert_eq!(
            private_cache_control(Some(b"max-age=60, s-maxage=600")).as_deref(),
            Some("private, max-age=60, s-maxage=600")
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes in any number of Cookie fields: no panic, at most MAX_CANDIDATES
        /// values, each a slice of the input without its surrounding quotes.
        #[test]
        fn cookie_values_of_arbitrary_bytes(
            fields in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..6),
            name in proptest::collection::vec(any::<u8>(), 1..12),
        ) {
            let found: Vec<&[u8]> = cookie_values(fields.iter().map(Vec::as_slice), &name).collect();
            prop_assert!(found.len() <= MAX_CANDIDATES);
            for v in found {
                prop_assert!(fields.iter().any(|f| f.windows(v.len().max(1)).any(|w| v.is_empty() || w == v)));
            }
        }
    }
}
