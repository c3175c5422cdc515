//! The affinity cookie value: opaque, HMAC-SHA256-signed, self-describing.
//!
//! Layout before base64url (no padding), version 2:
//! `ver(1) | klen(1) key_id | issued_at(u64 BE, unix s) | ttl(u32 BE, s) | nonce(4) | blen(1) backend_id | tag(32)`.
//! The random nonce makes every session's cookie distinct, also two issued in the same
//! second for the same backend, so that sessions can be told apart and counted.
//! Version 1 (the same without the nonce) still verifies.
//! The tag covers a domain label, the pool id and every byte before it, so a cookie
//! cannot be moved to another pool, and nothing in it names a backend address. An
//! application-controlled cookie's tag also covers the value of the application cookie
//! it follows (under its own domain label): it verifies only next to that value, so it
//! ends with the application's session and cannot be replayed with another one.
//! Expiry is enforced here from the issue time, never from the browser's Max-Age.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
/// Longest id in a cookie: the bound config enforces on key and backend ids.
use limpet_config::MAX_ID_LEN;
use sha2::Sha256;
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 2;
const NONCE_LEN: usize = 4;
const TAG_LEN: usize = 32;
const DOMAIN_LABEL: &[u8] = b"limpet-affinity-cookie-v1";
const FOLLOW_LABEL: &[u8] = b"limpet-app-cookie-v1";
/// Longest encoded value worth decoding; anything longer is rejected unread.
pub const MAX_ENCODED_LEN: usize = (2 + 2 * MAX_ID_LEN + 8 + 4 + NONCE_LEN + 1 + TAG_LEN).div_ceil(3) * 4;
/// Shortest secret accepted: HMAC-SHA256 wants at least its output size.
pub const MIN_SECRET_LEN: usize = 32;
/// Cookies issued up to this far in the future still verify (clock skew between instances).
const CLOCK_SKEW_SECS: u64 = 60;

/// A signing key: its id travels in every cookie it signs.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    mac: HmacSha256,
    /// Names this key's secret among every key made in the process (clones share it):
    /// what [`VERIFIED`] remembers a tag was checked with.
    serial: u64,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key id must be 1 to {MAX_ID_LEN} bytes")]
    BadId,
    #[error("secret is {0} bytes; use at least {MIN_SECRET_LEN} random bytes")]
    TooShort(usize),
}

impl SigningKey {
    pub fn new(id: &str, secret: &[u8]) -> Result<Self, KeyError> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(KeyError::BadId);
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::TooShort(secret.len()));
        }
        let mac = HmacSha256::new_from_slice(secret).map_err(|_| KeyError::TooShort(secret.len()))?;
        static SERIALS: AtomicU64 = AtomicU64::new(0);
        Ok(Self {
            id: id.to_string(),
            mac,
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The keys of one configuration: the first signs, all verify.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<SigningKey>,
}

impl Keyring {
    /// None when `keys` is empty: there would be nothing to sign with.
    pub fn new(keys: Vec<SigningKey>) -> Option<Self> {
        (!keys.is_empty()).then_some(Self { keys })
    }

    fn signer(&self) -> &SigningKey {
        &self.keys[0]
    }

    fn find(&self, id: &[u8]) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.id.as_bytes() == id)
    }
}

/// What a verified cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket<'a> {
    pub backend: &'a [u8],
    pub issued_at: u64,
    pub ttl: u32,
    /// The session's identity, for counting sessions (not a secret).
    pub session: u64,
}

/// Why a cookie value did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not base64, wrong length, wrong version, truncated, empty id.
    Malformed,
    /// Signed with a key id not (or no longer) in the keyring.
    UnknownKey,
    /// The tag does not match: forged or tampered.
    BadSignature,
    /// Issued too far in the future for clock skew to explain.
    FromTheFuture,
    /// Valid, but its TTL (capped by max_ttl) has passed.
    Expired,
}

/// What a cookie is valid for besides its own bytes: its pool and, for an
/// application-controlled cookie, the application cookie value it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope<'a> {
    pub pool: &'a str,
    pub follows: Option<&'a [u8]>,
}

impl<'a> From<&'a str> for Scope<'a> {
    /// A duration-based cookie of `pool`.
    fn from(pool: &'a str) -> Self {
        Self { pool, follows: None }
    }
}

/// Most distinct cookies one thread remembers as verified before it starts over.
const VERIFIED_MAX: usize = 1024;

thread_local! {
    /// Cookies whose tag this thread checked and found good, each by the key's
    /// [`SigningKey::serial`], its scope, and its exact bytes: a returning client sends
    /// the same value with every request, and checking its HMAC-SHA256 again is most
    /// of what a returning request costs limpet. A value differing in any byte, under
    /// another secret or scope, is checked afresh; nothing unverified is ever kept.
    static VERIFIED: RefCell<Verified> = RefCell::new(Verified::default());
}

/// See [`VERIFIED`].
#[derive(Default)]
struct Verified {
    seen: HashSet<Box<[u8]>>,
    /// Scratch for building a lookup.
    entry: Vec<u8>,
}

/// Whether `given` is `body`'s tag under `key` in `scope`.
fn verify(key: &SigningKey, scope: Scope<'_>, body: &[u8], given: &[u8]) -> bool {
    let check = || tag(key, scope, body).verify_slice(given).is_ok();
    VERIFIED.with(|verified| {
        let Ok(mut verified) = verified.try_borrow_mut() else {
            return check();
        };
        let Verified { seen, entry } = &mut *verified;
        entry.clear();
        entry.extend_from_slice(&key.serial.to_be_bytes());
        entry.push(scope.pool.len() as u8);
        entry.extend_from_slice(scope.pool.as_bytes());
        match scope.follows {
            None => entry.push(0),
            Some(app) => {
                entry.push(1);
                entry.extend_from_slice(&(app.len() as u64).to_be_bytes());
                entry.extend_from_slice(app);
            }
        }
        entry.extend_from_slice(body);
        entry.extend_from_slice(given);
        if seen.contains(entry.as_slice()) {
            return true;
        }
        if !check() {
            return false;
        }
        if seen.len() >= VERIFIED_MAX {
            seen.clear();
        }
        seen.insert(entry.as_slice().into());
        true
    })
}

fn tag(key: &SigningKey, scope: Scope<'_>, body: &[u8]) -> HmacSha256 {
    let mut mac = key.mac.clone();
    match scope.follows {
        None => mac.update(DOMAIN_LABEL),
        Some(app) => {
            mac.update(FOLLOW_LABEL);
            mac.update(&(app.len() as u64).to_be_bytes());
            mac.update(app);
        }
    }
    mac.update(&[scope.pool.len() as u8]);
    mac.update(scope.pool.as_bytes());
    mac.update(body);
    mac
}

/// Issues a cookie value pinning `backend` in `scope`, signed with the first key.
pub fn encode<'s>(
    keys: &Keyring,
    scope: impl Into<Scope<'s>>,
    backend: &str,
    issued_at: u64,
    ttl: Duration,
) -> String {
    encode_session(keys, scope, backend, issued_at, ttl).0
}

/// [`encode`], also returning the session's identity ([`Ticket::session`]).
pub fn encode_session<'s>(
    keys: &Keyring,
    scope: impl Into<Scope<'s>>,
    backend: &str,
    issued_at: u64,
    ttl: Duration,
) -> (String, u64) {
    let scope = scope.into();
    let key = keys.signer();
    let backend = &backend.as_bytes()[..backend.len().min(MAX_ID_LEN)];
    let mut buf = Vec::with_capacity(2 + key.id.len() + 13 + NONCE_LEN + backend.len() + TAG_LEN);
    buf.push(VERSION);
    buf.push(key.id.len() as u8);
    buf.extend_from_slice(key.id.as_bytes());
    buf.extend_from_slice(&issued_at.to_be_bytes());
    let ttl_secs = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&ttl_secs.to_be_bytes());
    buf.extend_from_slice(&rand::random::<[u8; NONCE_LEN]>());
    buf.push(backend.len() as u8);
    buf.extend_from_slice(backend);
    let t = tag(key, scope, &buf).finalize().into_bytes();
    buf.extend_from_slice(&t);
    (URL_SAFE_NO_PAD.encode(&buf), session_of(&t))
}

/// A session's identity: the first 64 bits of its cookie's tag, uniformly distributed
/// and distinct per session (the nonce sees to that).
fn session_of(tag: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&tag[..8]);
    u64::from_le_bytes(a)
}

/// Verifies a cookie value. `max_ttl` caps whatever TTL the cookie carries, so lowering
/// it in the config shortens sessions already issued.
pub fn decode<'a, 's>(
    keys: &Keyring,
    scope: impl Into<Scope<'s>>,
    value: &[u8],
    buf: &'a mut Vec<u8>,
    now: u64,
    max_ttl: Duration,
) -> Result<Ticket<'a>, Reject> {
    if value.is_empty() || value.len() > MAX_ENCODED_LEN {
        return Err(Reject::Malformed);
    }
    buf.clear();
    URL_SAFE_NO_PAD
        .decode_vec(value, buf)
        .map_err(|_| Reject::Malformed)?;
    let b: &[u8] = buf;
    let mut r = Reader { b, at: 0 };
    let version = r.take(1)?[0];
    if version != 1 && version != VERSION {
        return Err(Reject::Malformed);
    }
    let klen = r.take(1)?[0] as usize;
    let key_id = r.take(klen)?;
    let issued_at = u64::from_be_bytes(r.array()?);
    let ttl = u32::from_be_bytes(r.array()?);
    if version == VERSION {
        r.take(NONCE_LEN)?;
    }
    let blen = r.take(1)?[0] as usize;
    let backend_at = r.at;
    r.take(blen)?;
    let body_len = r.at;
    let given = r.take(TAG_LEN)?;
    if r.at != b.len() || klen == 0 || blen == 0 {
        return Err(Reject::Malformed);
    }
    let key = keys.find(key_id).ok_or(Reject::UnknownKey)?;
    if !verify(key, scope.into(), &b[..body_len], given) {
        return Err(Reject::BadSignature);
    }
    if issued_at > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err(Reject::FromTheFuture);
    }
    // Times are whole seconds and the issue time was truncated, so `>` rather than `>=`:
    // a session lives at least its TTL and less than one second more.
    let life = u64::from(ttl).min(max_ttl.as_secs());
    if now > issued_at.saturating_add(life) {
        return Err(Reject::Expired);
    }
    Ok(Ticket {
        backend: &b[backend_at..backend_at + blen],
        issued_at,
        ttl,
        session: session_of(given),
    })
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Reject> {
        let end = self.at.checked_add(n).ok_or(Reject::Malformed)?;
        let s = self.b.get(self.at..end).ok_or(Reject::Malformed)?;
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Reject> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S1: &[u8] = b"0123456789abcdef0123456789abcdef";
    const S2: &[u8] = b"fedcba9876543210fedcba9876543210";
    const HOUR: Duration = Duration::from_secs(3600);

    fn ring(ids: &[(&str, &[u8])]) -> Keyring {
        Keyring::new(ids.iter().map(|(i, s)| SigningKey::new(i, s).unwrap()).collect()).unwrap()
    }

    fn check(keys: &Keyring, pool: &str, v: &str, now: u64) -> Result<(Vec<u8>, u64), Reject> {
        let mut buf = Vec::new();
        decode(keys, pool, v.as_bytes(), &mut buf, now, 4 * HOUR).map(|t| (t.backend.to_vec(), t.issued_at))
    }

    #[test]
    fn roundtrip_and_opaque() {
        let keys = ring(&[("k1", S1)]);
        let v = encode(&keys, "web", "web-2", 1_000, Duration::from_secs(900));
        assert!(!v.contains("web-2"));
        assert!(v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(check(&keys, "web", &v, 1_000), Ok((b"web-2".to_vec(), 1_000)));
        assert_eq!(check(&keys, "web", &v, 1_900), Ok((b"web-2".to_vec(), 1_000)));
    }

    #[test]
    fn a_value_verified_once_is_the_only_one_taken_without_its_tag_checked() {
        let keys = ring(&[("k1", S1)]);
        let v = encode(&keys, "web", "web-2", 1_000, HOUR);
        for _ in 0..3 {
            assert_eq!(check(&keys, "web", &v, 1_000), Ok((b"web-2".to_vec(), 1_000)));
        }
        // Every other byte of the value, flipped, is still refused.
        for at in 0..v.len() {
            let mut bytes = v.clone().into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(check(&keys, "web", &tampered, 1_000).is_err(), "byte {at}");
        }
        // Not in another pool, nor under another secret with the same key id.
        assert_eq!(check(&keys, "api", &v, 1_000), Err(Reject::BadSignature));
        let other = ring(&[("k1", S2)]);
        assert_eq!(check(&other, "web", &v, 1_000), Err(Reject::BadSignature));
        // Expiry is checked on every request, verified before or not.
        assert_eq!(check(&keys, "web", &v, 1_000 + 3601), Err(Reject::Expired));
        // Past the most remembered, values are checked again and still pass.
        for i in 0..VERIFIED_MAX + 10 {
            let v = encode(&keys, "web", &format!("b{i}"), 1_000, HOUR);
            assert!(check(&keys, "web", &v, 1_000).is_ok());
        }
        assert_eq!(check(&keys, "web", &v, 1_000), Ok((b"web-2".to_vec(), 1_000)));
    }

    #[test]
    fn expiry_is_absolute_and_capped() {
        let keys = ring(&[("k1", S1)]);
        let v = encode(&keys, "web", "a", 1_000, Duration::from_secs(900));
        assert_eq!(check(&keys, "web", &v, 1_901), Err(Reject::Expired));
        let long = encode(&keys, "web", "a", 1_000, 10 * HOUR);
        assert_eq!(
            check(&keys, "web", &long, 1_000 + 4 * 3600),
            Ok((b"a".to_vec(), 1_000))
        );
        assert_eq!(check(&keys, "web", &long, 1_001 + 4 * 3600), Err(Reject::Expired));
        assert_eq!(check(&keys, "web", &long, 1_000 - 61), Err(Reject::FromTheFuture));
    }

    #[test]
    fn rotation_and_forgery() {
        let old = ring(&[("k1", S1)]);
        let v = encode(&old, "web", "a", 1_000, HOUR);
        let rotated = ring(&[("k2", S2), ("k1", S1)]);
        assert!(check(&rotated, "web", &v, 1_001).is_ok());
        let fresh = encode(&rotated, "web", "a", 1_000, HOUR);
        assert!(check(&old, "web", &fresh, 1_001) == Err(Reject::UnknownKey));
        let removed = ring(&[("k2", S2)]);
        assert_eq!(check(&removed, "web", &v, 1_001), Err(Reject::UnknownKey));
        // Same id, other secret: a forgery.
        let impostor = ring(&[("k1", S2)]);
        assert_eq!(check(&impostor, "web", &v, 1_001), Err(Reject::BadSignature));
        // Another pool: the tag binds the pool id.
        assert_eq!(check(&old, "api", &v, 1_001), Err(Reject::BadSignature));
    }

    #[test]
    fn garbage_is_malformed() {
        let keys = ring(&[("k1", S1)]);
        let v = encode(&keys, "web", "a", 1_000, HOUR);
        for bad in [
            "",
            "!!!!",
            "AAAA",
            &v[..v.len() - 3],
            &format!("{v}AA"),
            &"A".repeat(5000),
        ] {
            assert_eq!(check(&keys, "web", bad, 1_001), Err(Reject::Malformed), "{bad}");
        }
    }

    #[test]
    fn version_1_cookies_still_verify() {
        let keys = ring(&[("k1", S1)]);
        let mut body = vec![1u8, 2];
        body.extend_from_slice(b"k1");
        body.extend_from_slice(&1_000u64.to_be_bytes());
        body.extend_from_slice(&900u32.to_be_bytes());
        body.push(5);
        body.extend_from_slice(b"web-1");
        let t = tag(&keys.keys[0], "web".into(), &body).finalize().into_bytes();
        body.extend_from_slice(&t);
        let v1 = URL_SAFE_NO_PAD.encode(&body);
        assert_eq!(check(&keys, "web", &v1, 1_500), Ok((b"web-1".to_vec(), 1_000)));
        // Version 2 is longer by its nonce only.
        let v2 = encode(&keys, "web", "web-1", 1_000, Duration::from_secs(900));
        assert_eq!(URL_SAFE_NO_PAD.decode(&v2).unwrap().len(), body.len() + NONCE_LEN);
    }

    #[test]
    fn short_secret_is_refused() {
        assert_eq!(SigningKey::new("k", b"short").unwrap_err(), KeyError::TooShort(5));
    }

    proptest! {
        #[test]
        fn any_bit_flip_is_rejected(backend in "[a-z0-9-]{1,64}", at in 0usize..400, bit in 0u8..8) {
            let keys = ring(&[("k1", S1)]);
            let v = encode(&keys, "web", &backend, 1_000, HOUR);
            let mut raw = URL_SAFE_NO_PAD.decode(&v).unwrap();
            let i = at % raw.len();
            raw[i] ^= 1 << bit;
            let tampered = URL_SAFE_NO_PAD.encode(&raw);
            prop_assert!(check(&keys, "web", &tampered, 1_001).is_err());
        }

        #[test]
        fn arbitrary_input_never_panics(v in proptest::collection::vec(any::<u8>(), 0..300)) {
            let keys = ring(&[("k1", S1)]);
            let mut buf = Vec::new();
            let _ = decode(&keys, "web", &v, &mut buf, 1_000, HOUR);
        }

        #[test]
        fn roundtrips_any_id(backend in "[A-Za-z0-9._-]{1,64}", issued in 0u64..4_000_000_000, ttl in 1u64..14_400) {
            let keys = ring(&[("k1", S1)]);
            let v = encode(&keys, "web", &backend, issued, Duration::from_secs(ttl));
            prop_assert!(v.len() <= MAX_ENCODED_LEN);
            let got = check(&keys, "web", &v, issued);
            prop_assert_eq!(got, Ok((backend.into_bytes(), issued)));
        }
    }
}
