//! The access log: one line per request, in text (`key=value`) or JSON as
//! `server.log_format` says, written by limpet itself rather than through `tracing`'s
//! formatter (which cost about 17 000 instructions a request: docs/performance.md).
//! Lines go to standard error, or to `server.access_log_file`, buffered (flushed every
//! second and when 32 KiB are waiting) and reopened on SIGUSR1 for logrotate. Whether
//! requests are logged at all follows the log filter (`limpet::access` at info).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use limpet_config::LogFormat;

use crate::render;

/// Bytes waiting before a file sink writes them out without waiting for the tick.
const FLUSH_AT: usize = 32 * 1024;

/// One request, as the access log records it.
pub struct Entry<'a> {
    pub at: SystemTime,
    pub id: &'a str,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// `None` when there is none, or when `server.access_log_query` is off.
    pub query: Option<&'a str>,
    pub protocol: &'a str,
    pub tls: bool,
    pub status: u16,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub user_agent: &'a str,
    pub pool: &'a str,
    pub backend: &'a str,
    pub backend_address: Option<SocketAddr>,
    pub outcome: &'a str,
    pub attempts: usize,
    /// From the request's arrival to its last byte sent.
    pub total: Duration,
    /// Getting a connection to the backend (0 when a pooled one was reused).
    pub connect: Option<Duration>,
    /// From the connection to the backend's response head.
    pub response: Option<Duration>,
    pub error: Option<&'a str>,
}

enum Sink {
    Stderr,
    File {
        path: PathBuf,
        file: File,
        pending: Vec<u8>,
    },
}

/// Where access-log lines go.
pub struct AccessLog {
    format: LogFormat,
    sink: Mutex<Sink>,
}

impl AccessLog {
    /// To `file` (appended to, created if missing) or to standard error.
    pub fn open(file: Option<PathBuf>, format: LogFormat) -> std::io::Result<Self> {
        let sink = match file {
            None => Sink::Stderr,
            Some(path) => Sink::File {
                file: open_append(&path)?,
                path,
                pending: Vec::with_capacity(FLUSH_AT * 2),
            },
        };
        Ok(Self {
            format,
            sink: Mutex::new(sink),
        })
    }

    /// Whether the log filter lets request lines through.
    pub fn enabled() -> bool {
        tracing::enabled!(target: "limpet::access", tracing::Level::INFO)
    }

    /// Formats and writes one line.
    pub fn write(&self, entry: &Entry<'_>) {
        thread_local! {
            static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512));
        }
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return;
            };
            line.clear();
            match self.format {
                LogFormat::Text => entry.text(&mut line),
                LogFormat::Json => entry.json(&mut line),
            }
            line.push('\n');
            let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
            match &mut *sink {
                Sink::Stderr => {
                    let _ = std::io::stderr().write_all(line.as_bytes());
                }
                Sink::File { file, pending, .. } => {
                    pending.extend_from_slice(line.as_bytes());
                    if pending.len() >= FLUSH_AT {
                        let _ = file.write_all(pending);
                        pending.clear();
                    }
                }
            }
        });
    }

    /// Writes out what is waiting (called every second and at stop).
    pub fn flush(&self) {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        if let Sink::File { file, pending, .. } = &mut *sink {
            if !pending.is_empty() {
                let _ = file.write_all(pending);
                pending.clear();
            }
        }
    }

    /// Flushes, then opens the file again by its path (after logrotate moved it).
    /// `Ok(None)` when the log goes to standard error.
    pub fn reopen(&self) -> std::io::Result<Option<PathBuf>> {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *sink {
            Sink::Stderr => Ok(None),
            Sink::File { path, file, pending } => {
                let _ = file.write_all(pending);
                pending.clear();
                *file = open_append(path)?;
                Ok(Some(path.clone()))
            }
        }
    }
}

fn open_append(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Entry<'_> {
    /// The fields in the order both formats write them.
    fn visit(&self, f: &mut impl Fields) {
        f.text("id", self.id);
        f.ip("client", self.client);
        f.text("method", self.method);
        f.text("host", self.host);
        f.text("path", self.path);
        if let Some(q) = self.query {
            f.text("query", q);
        }
        f.text("protocol", self.protocol);
        f.flag("tls", self.tls);
        f.num("status", u64::from(self.status));
        f.num("bytes_in", self.bytes_in as u64);
        f.num("bytes_out", self.bytes_out as u64);
        f.text("pool", self.pool);
        f.text("backend", self.backend);
        f.addr("backend_address", self.backend_address);
        f.text("outcome", self.outcome);
        f.num("attempts", self.attempts as u64);
        f.ms("total_ms", Some(self.total));
        f.ms("connect_ms", self.connect);
        f.ms("response_ms", self.response);
        if let Some(e) = self.error {
            f.text("error", e);
        }
        f.text("user_agent", self.user_agent);
    }

    fn text(&self, out: &mut String) {
        rfc3339(self.at, out);
        out.push_str(" access");
        self.visit(&mut Text(out));
    }

    fn json(&self, out: &mut String) {
        out.push_str("{\"timestamp\":\"");
        rfc3339(self.at, out);
        out.push_str("\",\"target\":\"limpet::access\"");
        self.visit(&mut Json(out));
        out.push('}');
    }
}

/// How a format writes each kind of field.
trait Fields {
    fn key(&mut self, k: &str);
    fn text(&mut self, k: &str, v: &str);
    /// A value written bare in both formats.
    fn raw(&mut self, k: &str, write: impl FnOnce(&mut String));
    /// A value that is a string in JSON, or `null` when absent.
    fn quoted(&mut self, k: &str, present: bool, write: impl FnOnce(&mut String));
    /// Milliseconds with microseconds; empty or `null` when absent.
    fn ms(&mut self, k: &str, d: Option<Duration>);

    fn num(&mut self, k: &str, n: u64) {
        self.raw(k, |out| render::uint(out, n));
    }
    fn flag(&mut self, k: &str, b: bool) {
        self.raw(k, |out| out.push_str(if b { "true" } else { "false" }));
    }
    fn ip(&mut self, k: &str, ip: Option<IpAddr>) {
        self.quoted(k, ip.is_some(), |out| {
            ip.into_iter().for_each(|ip| render::ip(out, ip))
        });
    }
    fn addr(&mut self, k: &str, a: Option<SocketAddr>) {
        self.quoted(k, a.is_some(), |out| {
            a.into_iter().for_each(|a| render::socket_addr(out, a))
        });
    }
}

/// ` key=value`; values with spaces, quotes, `=` or control characters (or none at
/// all) quoted, so fields split cleanly; absent ones empty.
struct Text<'a>(&'a mut String);

impl Fields for Text<'_> {
    fn key(&mut self, k: &str) {
        self.0.push(' ');
        self.0.push_str(k);
        self.0.push('=');
    }
    fn text(&mut self, k: &str, v: &str) {
        self.key(k);
        let plain = !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=');
        if plain {
            self.0.push_str(v);
        } else {
            quote(v, self.0);
        }
    }
    fn raw(&mut self, k: &str, write: impl FnOnce(&mut String)) {
        self.key(k);
        write(self.0);
    }
    fn quoted(&mut self, k: &str, _present: bool, write: impl FnOnce(&mut String)) {
        self.raw(k, write);
    }
    fn ms(&mut self, k: &str, d: Option<Duration>) {
        self.raw(k, |out| ms(out, d));
    }
}

/// `,"key":value`; absent values `null`.
struct Json<'a>(&'a mut String);

impl Fields for Json<'_> {
    fn key(&mut self, k: &str) {
        self.0.push_str(",\"");
        self.0.push_str(k);
        self.0.push_str("\":");
    }
    fn text(&mut self, k: &str, v: &str) {
        self.key(k);
        quote(v, self.0);
    }
    fn raw(&mut self, k: &str, write: impl FnOnce(&mut String)) {
        self.key(k);
        write(self.0);
    }
    fn quoted(&mut self, k: &str, present: bool, write: impl FnOnce(&mut String)) {
        self.key(k);
        if present {
            self.0.push('"');
            write(self.0);
            self.0.push('"');
        } else {
            self.0.push_str("null");
        }
    }
    fn ms(&mut self, k: &str, d: Option<Duration>) {
        self.key(k);
        match d {
            Some(_) => ms(self.0, d),
            None => self.0.push_str("null"),
        }
    }
}

/// Milliseconds with microsecond precision (`0.412`), or nothing.
fn ms(out: &mut String, d: Option<Duration>) {
    if let Some(d) = d {
        let us = d.as_micros() as u64;
        render::uint(out, us / 1000);
        out.push('.');
        let frac = us % 1000;
        out.push_str(if frac < 10 {
            "00"
        } else if frac < 100 {
            "0"
        } else {
            ""
        });
        render::uint(out, frac);
    }
}

/// `s` as a JSON string (also the text format's quoting): quotes, backslashes and
/// control characters escaped.
fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `t` as RFC 3339 UTC with microseconds: `2026-12-02T01:30:00.123456Z`.
fn rfc3339(t: SystemTime, out: &mut String) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let two = |out: &mut String, n: u64| {
        out.push(char::from(b'0' + (n / 10 % 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
    };
    render::uint(out, year.max(0) as u64);
    out.push('-');
    two(out, month as u64);
    out.push('-');
    two(out, day as u64);
    out.push('T');
    two(out, rem / 3600);
    out.push(':');
    two(out, rem / 60 % 60);
    out.push(':');
    two(out, rem % 60);
    out.push('.');
    let us = u64::from(d.subsec_micros());
    for div in [100_000, 10_000, 1_000, 100, 10, 1] {
        out.push(char::from(b'0' + (us / div % 10) as u8));
    }
    out.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: SystemTime) -> Entry<'static> {
        Entry {
            at,
            id: "4bf92f3577b34da6a3ce929d0e0e4736",
            client: Some("192.0.2.7".parse().unwrap()),
            method: "GET",
            host: "shop.example",
            path: "/cart",
            query: Some("a=1&b=two words"),
            protocol: "h1",
            tls: true,
            status: 200,
            bytes_in: 0,
            bytes_out: 1234,
            user_agent: "Mozilla/5.0 (X11) \"quoted\"",
            pool: "web",
            backend: "web-1",
            backend_address: Some("10.0.0.1:8080".parse().unwrap()),
            outcome: "hit",
            attempts: 1,
            total: Duration::from_micros(1_412),
            connect: Some(Duration::ZERO),
            response: Some(Duration::from_micros(980)),
            error: None,
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let mut s = String::new();
        rfc3339(UNIX_EPOCH + Duration::from_micros(1_796_175_000_123_456), &mut s);
        assert_eq!(s, "2026-12-02T01:30:00.123456Z");
        s.clear();
        rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400), &mut s);
        assert_eq!(s, "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn a_text_line_has_every_field_and_quotes_what_needs_it() {
        let mut line = String::new();
        entry(UNIX_EPOCH).text(&mut line);
        assert_eq!(
            line,
            "1970-01-01T00:00:00.000000Z access id=4bf92f3577b34da6a3ce929d0e0e4736 client=192.0.2.7 \
             method=GET host=shop.example path=/cart query=\"a=1&b=two words\" protocol=h1 tls=true \
             status=200 bytes_in=0 bytes_out=1234 pool=web backend=web-1 \
             backend_address=10.0.0.1:8080 outcome=hit attempts=1 total_ms=1.412 connect_ms=0.000 \
             response_ms=0.980 user_agent=\"Mozilla/5.0 (X11) \\\"quoted\\\"\""
        );
    }

    #[test]
    fn a_json_line_parses_with_every_field() {
        let mut line = String::new();
        let mut e = entry(UNIX_EPOCH);
        e.client = None;
        e.connect = None;
        e.error = Some("ConnectRefused");
        e.json(&mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["user_agent"], "Mozilla/5.0 (X11) \"quoted\"");
        assert_eq!(v["query"], "a=1&b=two words");
        assert_eq!(v["status"], 200);
        assert_eq!(v["total_ms"], 1.412);
        assert_eq!(v["connect_ms"], serde_json::Value::Null);
        assert_eq!(v["client"], serde_json::Value::Null);
        assert_eq!(v["backend_address"], "10.0.0.1:8080");
        assert_eq!(v["error"], "ConnectRefused");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn control_characters_never_break_a_line() {
        let mut out = String::new();
        quote("a\nb\u{1}c", &mut out);
        assert_eq!(out, "\"a\\nb\\u0001c\"");
    }
}
