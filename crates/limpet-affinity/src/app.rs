//! The application cookie that an application-controlled affinity cookie follows
//! (`cookie.follow`): what a backend's response does to it, read from its
//! `Set-Cookie` headers as RFC 6265 §5.2 has a browser read them.

use cookie::Cookie;

/// Longest application cookie value limpet follows. Longer ones are left alone: the
/// request is then not sticky through this method.
pub const MAX_APP_VALUE: usize = 4096;

/// What a response does to the application cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppCookie {
    /// Sets it: its value (surrounding quotes removed, as browsers send it back and
    /// [`crate::cookie_values`] reads it) and its lifetime in seconds from now; `None`
    /// for a session cookie, which lasts as long as the browser session.
    Set { value: Vec<u8>, max_age: Option<u64> },
    /// Deletes it: `Max-Age` zero or negative, `Expires` not in the future, or an
    /// empty value.
    Deleted,
}

/// Reads every `Set-Cookie` header of a response for the cookie called `name`.
///
/// Attribute names are matched in any case, `Max-Age` wins over `Expires`, and
/// `Expires` is read in the date formats browsers accept (RFC 1123, RFC 850 with a
/// two-digit year, asctime, and the Netscape `DD-Mon-YYYY` form). A header that does
/// not parse is ignored, as a browser ignores it. When the response carries the cookie
/// several times (one per path, say), any header that sets it wins over those that
/// delete it, and the last one that sets it gives value and lifetime.
pub fn app_cookie<'a>(
    set_cookies: impl IntoIterator<Item = &'a [u8]>,
    name: &str,
    now: u64,
) -> Option<AppCookie> {
    let mut found = None;
    for raw in set_cookies {
        let Ok(text) = std::str::from_utf8(raw) else {
            continue;
        };
        let Ok(c) = Cookie::parse(text) else { continue };
        if c.name() != name {
            continue;
        }
        let value = c.value_trimmed().as_bytes();
        if value.len() > MAX_APP_VALUE {
            continue;
        }
        let seconds_left = match (c.max_age(), c.expires_datetime()) {
            (Some(age), _) => Some(age.whole_seconds()),
            (None, Some(at)) => Some(
                at.unix_timestamp()
                    .saturating_sub(now.min(i64::MAX as u64) as i64),
            ),
            (None, None) => None,
        };
        let this = match seconds_left {
            Some(s) if s <= 0 => AppCookie::Deleted,
            _ if value.is_empty() => AppCookie::Deleted,
            left => AppCookie::Set {
                value: value.to_vec(),
                max_age: left.map(|s| s.unsigned_abs()),
            },
        };
        if matches!(this, AppCookie::Set { .. }) || found.is_none() {
            found = Some(this);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-22T00:00:00Z.
    const NOW: u64 = 1_795_305_600;

    fn read(headers: &[&str]) -> Option<AppCookie> {
        app_cookie(headers.iter().map(|h| h.as_bytes()), "JSESSIONID", NOW)
    }

    fn set(value: &str, max_age: Option<u64>) -> Option<AppCookie> {
        Some(AppCookie::Set {
            value: value.as_bytes().to_vec(),
            max_age,
        })
    }

    #[test]
    fn lifetimes() {
        assert_eq!(read(&["JSESSIONID=abc; Path=/; HttpOnly"]), set("abc", None));
        assert_eq!(read(&["JSESSIONID=abc; Max-Age=600"]), set("abc", Some(600)));
        // Attribute names in any case; Max-Age wins over Expires whatever the order.
        assert_eq!(
            read(&["JSESSIONID=abc; expires=Thu, 01 Jan 1970 00:00:00 GMT; MAX-AGE=60"]),
            set("abc", Some(60))
        );
        assert_eq!(
            read(&["JSESSIONID=abc; Expires=Sun, 22 Nov 2026 01:00:00 GMT"]),
            set("abc", Some(3600))
        );
        // A Max-Age that is not a number is ignored, as a browser ignores it.
        assert_eq!(read(&["JSESSIONID=abc; Max-Age=soon"]), set("abc", None));
    }

    #[test]
    fn legacy_date_formats() {
        for expires in [
            "Sun, 22 Nov 2026 00:10:00 GMT",  // RFC 1123
            "Sunday, 22-Nov-26 00:10:00 GMT", // RFC 850, two-digit year
            "Sun Nov 22 00:10:00 2026",       // asctime
            "Sun, 22-Nov-2026 00:10:00 GMT",  // Netscape
        ] {
            let h = format!("JSESSIONID=abc; Expires={expires}");
            assert_eq!(read(&[&h]), set("abc", Some(600)), "{expires}");
        }
        // RFC 850 two-digit years 70-99 are 19xx: long past.
        assert_eq!(
            read(&["JSESSIONID=abc; Expires=Sunday, 06-Nov-94 08:49:37 GMT"]),
            Some(AppCookie::Deleted)
        );
        // An Expires that does not parse is ignored: a session cookie.
        assert_eq!(read(&["JSESSIONID=abc; Expires=tomorrow"]), set("abc", None));
    }

    #[test]
    fn deletion() {
        for h in [
            "JSESSIONID=abc; Max-Age=0",
            "JSESSIONID=abc; Max-Age=-1",
            "JSESSIONID=abc; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            "JSESSIONID=; Path=/",
            "JSESSIONID=\"\"",
        ] {
            assert_eq!(read(&[h]), Some(AppCookie::Deleted), "{h}");
        }
    }

    #[test]
    fn values_and_several_headers() {
        assert_eq!(read(&["JSESSIONID=\"q v\"; Path=/"]), set("q v", None));
        assert_eq!(read(&[" JSESSIONID = abc ; Path=/"]), set("abc", None));
        assert_eq!(read(&["OTHER=1", "jsessionid=2", "bad", "=x"]), None);
        // Login rotation as frameworks write it: the old path's cookie deleted, the
        // new one set, in either order.
        let rotate = ["JSESSIONID=; Max-Age=0; Path=/app", "JSESSIONID=new; Path=/"];
        assert_eq!(read(&rotate), set("new", None));
        assert_eq!(read(&[rotate[1], rotate[0]]), set("new", None));
        assert_eq!(
            read(&["JSESSIONID=a", "JSESSIONID=b; Max-Age=5"]),
            set("b", Some(5))
        );
        // Not UTF-8, or too long to follow: ignored.
        assert_eq!(
            app_cookie([b"JSESSIONID=\xff".as_slice()], "JSESSIONID", NOW),
            None
        );
        let long = format!("JSESSIONID={}", "x".repeat(MAX_APP_VALUE + 1));
        assert_eq!(read(&[&long]), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary Set-Cookie bytes from a backend: no panic, and a lifetime never
        /// beyond what fits in the cookie format.
        #[test]
        fn app_cookie_of_arbitrary_bytes(
            headers in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..4),
        ) {
            let found = app_cookie(headers.iter().map(Vec::as_slice), "JSESSIONID", 1_795_305_600);
            if let Some(AppCookie::Set { value, .. }) = found {
                prop_assert!(!value.is_empty());
            }
        }

        /// The same with a well-formed name and arbitrary attributes.
        #[test]
        fn app_cookie_attributes_never_panic(attrs in "[ -~]{0,200}") {
            let header = format!("JSESSIONID=abc; {attrs}");
            let _ = app_cookie([header.as_bytes()], "JSESSIONID", 1_795_305_600);
        }
    }
}
