//! The access log: one line per request, in text (`key=value`) or JSON as
//! `server.log_format` says, written by limpet itself rather than through `tracing`'s
//! formatter (which cost about 17 000 instructions a request: docs/performance.md).
//! Whether requests are logged at all follows the log filter (`limpet::access` at info).
//!
//! Lines go to standard error or to `server.access_log_file`, buffered as nginx's
//! `access_log ... buffer=64k flush=100ms`: a request formats its line and copies it
//! into one buffer under a short lock, with no system call; the buffer is written out
//! in one `write(2)` when it passes [`FLUSH_AT`] (by the request that passed it),
//! [`FLUSH_EVERY`] after a line landed in it empty (by the flusher thread,
//! [`AccessLog::run_flusher`]), before a SIGUSR1 reopen, and at stop.
//!
//! Invariant: batches are written in the order their lines were buffered, whole. The
//! writer lock (`out`) is taken before the buffer is swapped out and held until the
//! batch is written, and standard error's lock is held across a batch, so neither
//! another batch nor one of limpet's own messages lands inside it.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use limpet_config::LogFormat;

use crate::render;

/// Bytes waiting before the request whose line passes it writes them out.
const FLUSH_AT: usize = 64 * 1024;

/// How long a line waits at most (about) before the flusher writes it out.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

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

/// Where access-log lines go.
pub struct AccessLog {
    format: LogFormat,
    /// Lines not yet written. Held only to append a line or to swap the buffer out.
    pending: Mutex<Vec<u8>>,
    /// Wakes the flusher when a line lands in an empty buffer.
    filled: Condvar,
    /// Held from swapping a batch out of `pending` until it is written.
    out: Mutex<Out>,
}

struct Out {
    sink: Sink,
    /// The batch being written; swapped with `pending`, so both keep their capacity.
    batch: Vec<u8>,
    /// A write failed and has been reported; the next failure is not, until one works.
    failing: bool,
}

enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
}

impl AccessLog {
    /// To `file` (appended to, created if missing) or to standard error.
    pub fn open(file: Option<PathBuf>, format: LogFormat) -> std::io::Result<Self> {
        let sink = match file {
            None => Sink::Stderr,
            Some(path) => Sink::File {
                file: open_append(&path)?,
                path,
            },
        };
        Ok(Self {
            format,
            pending: Mutex::new(Vec::new()),
            filled: Condvar::new(),
            out: Mutex::new(Out {
                sink,
                batch: Vec::new(),
                failing: false,
            }),
        })
    }

    /// Whether the log filter lets request lines through.
    pub fn enabled() -> bool {
        tracing::enabled!(target: "limpet::access", tracing::Level::INFO)
    }

    /// Formats one line into the buffer; writes the buffer out when this line passed
    /// [`FLUSH_AT`].
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
            let (first, full) = {
                let mut pending = lock(&self.pending);
                pending.extend_from_slice(line.as_bytes());
                (pending.len() == line.len(), pending.len() >= FLUSH_AT)
            };
            if full {
                // This may wait for a batch being written: with a slow disk or a full
                // pipe the buffer stays near its size instead of growing.
                drop(self.write_out(FLUSH_AT));
            } else if first {
                // Once per batch: the flusher sleeps on this between batches.
                self.filled.notify_one();
            }
        });
    }

    /// The flusher thread's loop: waits for a line, lets the batch gather for
    /// [`FLUSH_EVERY`], writes it out. Never returns.
    pub fn run_flusher(&self) -> ! {
        loop {
            let mut pending = lock(&self.pending);
            while pending.is_empty() {
                pending = self.filled.wait(pending).unwrap_or_else(PoisonError::into_inner);
            }
            drop(pending);
            std::thread::sleep(FLUSH_EVERY);
            self.flush();
        }
    }

    /// Writes out every line buffered so far (at stop, and by the flusher).
    pub fn flush(&self) {
        drop(self.write_out(1));
    }

    /// Flushes to the old file, then opens the file again by its path (after logrotate
    /// moved it): every line buffered before the reopen is in the old file.
    /// `Ok(None)` when the log goes to standard error.
    pub fn reopen(&self) -> std::io::Result<Option<PathBuf>> {
        let mut out = self.write_out(1);
        match &mut out.sink {
            Sink::Stderr => Ok(None),
            Sink::File { path, file } => {
                *file = open_append(path)?;
                Ok(Some(path.clone()))
            }
        }
    }

    /// Writes the buffer out if it holds at least `min` (≥ 1) bytes: a size flush finds
    /// it already written when another thread got there first. Returns the writer lock,
    /// so that a reopen changes files with no batch in between.
    fn write_out(&self, min: usize) -> MutexGuard<'_, Out> {
        let mut out = lock(&self.out);
        let Out { sink, batch, failing } = &mut *out;
        {
            let mut pending = lock(&self.pending);
            if pending.is_empty() || pending.len() < min {
                return out;
            }
            std::mem::swap(&mut *pending, batch);
        }
        let written = match sink {
            Sink::Stderr => std::io::stderr().lock().write_all(batch),
            Sink::File { file, .. } => file.write_all(batch),
        };
        match written {
            Ok(()) => *failing = false,
            Err(e) if !*failing => {
                *failing = true;
                tracing::error!(error = %e, lost_bytes = batch.len(), "cannot write the access log");
            }
            Err(_) => {}
        }
        batch.clear();
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// A fresh text access log to a file, and the file's path.
    fn log_file(name: &str) -> (PathBuf, AccessLog) {
        let dir = std::env::temp_dir().join(format!("limpet-access-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let log = AccessLog::open(Some(path.clone()), LogFormat::Text).unwrap();
        (path, log)
    }

    fn write_id(log: &AccessLog, id: &str) {
        let mut e = entry(UNIX_EPOCH);
        e.id = id;
        log.write(&e);
    }

    fn ids(path: &std::path::Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "a partial line: {text:?}"
        );
        text.lines()
            .map(|l| {
                let id = l.split(" id=").nth(1).unwrap().split(' ').next().unwrap();
                let mut e = entry(UNIX_EPOCH);
                e.id = id;
                let mut whole = String::new();
                e.text(&mut whole);
                assert_eq!(l, whole, "lines are written whole");
                id.to_owned()
            })
            .collect()
    }

    #[test]
    fn lines_wait_in_the_buffer_until_it_is_flushed() {
        let (path, log) = log_file("flush");
        write_id(&log, "a");
        write_id(&log, "b");
        assert!(ids(&path).is_empty(), "no write per request");
        log.flush();
        assert_eq!(ids(&path), ["a", "b"]);
        log.flush();
        assert_eq!(ids(&path), ["a", "b"], "a flush writes nothing twice");
    }

    #[test]
    fn a_buffer_past_its_size_is_written_by_the_request_that_filled_it() {
        let (path, log) = log_file("size");
        let mut line = String::new();
        entry(UNIX_EPOCH).text(&mut line);
        let per_batch = FLUSH_AT.div_ceil(line.len() + 1);
        for i in 0..per_batch - 1 {
            write_id(&log, &format!("{i:0>32}"));
        }
        assert!(ids(&path).is_empty());
        write_id(&log, &format!("{:0>32}", per_batch - 1));
        assert_eq!(ids(&path).len(), per_batch);
    }

    #[test]
    fn a_reopen_writes_what_was_buffered_to_the_old_file() {
        let (path, log) = log_file("reopen");
        write_id(&log, "before-1");
        write_id(&log, "before-2");
        let rotated = path.with_extension("log.1");
        std::fs::rename(&path, &rotated).unwrap();
        assert_eq!(log.reopen().unwrap(), Some(path.clone()));
        write_id(&log, "after");
        log.flush();
        assert_eq!(ids(&rotated), ["before-1", "before-2"]);
        assert_eq!(ids(&path), ["after"]);
    }

    #[test]
    fn the_flusher_writes_a_lone_line_soon() {
        let (path, log) = log_file("flusher");
        let log = std::sync::Arc::new(log);
        let flusher = log.clone();
        std::thread::spawn(move || flusher.run_flusher());
        for round in ["first", "second"] {
            let start = std::time::Instant::now();
            write_id(&log, round);
            while !ids(&path).contains(&round.to_owned()) {
                assert!(start.elapsed() < Duration::from_secs(5), "{round} never written");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    #[test]
    fn concurrent_writers_lose_nothing_and_never_split_a_line() {
        let (path, log) = log_file("threads");
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..3_000 {
                        write_id(log, &format!("t{t}-{i}"));
                    }
                });
            }
        });
        log.flush();
        let seen = ids(&path);
        assert_eq!(seen.len(), 12_000);
        for t in 0..4 {
            let order: Vec<usize> = seen
                .iter()
                .filter_map(|id| id.strip_prefix(&format!("t{t}-"))?.parse().ok())
                .collect();
            assert_eq!(
                order,
                (0..3_000).collect::<Vec<_>>(),
                "thread {t}'s lines in order"
            );
        }
    }

    #[test]
    fn control_characters_never_break_a_line() {
        let mut out = String::new();
        quote("a\nb\u{1}c", &mut out);
        assert_eq!(out, "\"a\\nb\\u0001c\"");
    }
}
