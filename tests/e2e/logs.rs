//! The access log as operators use it: to a file (`server.access_log_file`) or stderr, in
//! JSON or text, with the fields of a request (request id passed to the backend, timings,
//! bytes, user agent; the query dropped on request). Lines are buffered: a lone line is
//! written out within the flush interval, a graceful stop loses none, and SIGUSR1 (after
//! logrotate moved the file) puts every earlier line in the moved file and later ones in
//! a new one.

use std::path::Path;
use std::time::{Duration, Instant};

use limpet_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The lines of `file` once it has at least `n` (bounded at 10 s).
async fn lines_of(file: &Path, n: usize) -> Vec<String> {
    lines_within(file, n, Duration::from_secs(10)).await
}

/// The lines of `file` once it has at least `n`; fails when that takes longer than
/// `within`.
async fn lines_within(file: &Path, n: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let lines = lines_now(file);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines after {within:?}, wanted {n}",
            file.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn lines_now(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

/// The `path` field of each text-format line.
fn paths(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| {
            let rest = l
                .split(" path=")
                .nth(1)
                .unwrap_or_else(|| panic!("no path in {l}"));
            rest.split(' ').next().unwrap_or_default()
        })
        .collect()
}

/// `/{prefix}/0` … `/{prefix}/{n - 1}`.
fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("/{prefix}/{i}")).collect()
}

/// Requests one after the other on one kept-alive HTTP/1.1 connection. limpet logs a
/// request before it reads the next one from the same connection, so once a response
/// has arrived, every earlier request on the connection is in the access log's buffer.
struct OneConnection {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl OneConnection {
    async fn open(lb: &Limpet) -> Self {
        let stream = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// GETs `path` and reads the whole response; its status.
    async fn get(&mut self, path: &str) -> u16 {
        let request = format!("GET {path} HTTP/1.1\r\nHost: logs.test\r\nUser-Agent: e2e\r\n\r\n");
        self.stream.write_all(request.as_bytes()).await.unwrap();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no content-length in {head}"));
        while self.buf.len() < head_end + length {
            self.fill().await;
        }
        self.buf.drain(..head_end + length);
        head.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("limpet answered within 10 s")
            .unwrap();
        assert!(n > 0, "limpet closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// The `x-request-id` the backend saw, from the demo backend's `/headers` echo.
async fn request_id_seen(c: &reqwest::Client, url: &str, id: Option<&str>) -> String {
    let mut req = c.get(url).header("user-agent", "e2e-agent/1.0");
    if let Some(id) = id {
        req = req.header("x-request-id", id);
    }
    let body = req.send().await.unwrap().text().await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("the backend saw no x-request-id:\n{body}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_goes_to_a_file_in_json_with_the_requests_fields() {
    let dir = scratch();
    let file = dir.join("access.log");
    let bs = backends("lg", 1).await;
    let lb = PoolSpec::new(&bs)
        .cookie()
        .server_key(&format!("access_log_file: {}", file.display()))
        .server_key("access_log_query: false")
        .server_key("log_format: json")
        .start()
        .await;
    let c = client();
    let id = request_id_seen(&c, &lb.url("/headers?token=secret"), None).await;
    assert_eq!(id.len(), 32, "{id}");
    let first = lines_of(&file, 1).await;
    let entry: serde_json::Value = serde_json::from_str(&first[0]).unwrap();
    assert_eq!(
        entry["id"],
        id.as_str(),
        "the id the backend saw is the logged one"
    );
    assert_eq!(entry["path"], "/headers");
    assert!(entry.get("query").is_none(), "access_log_query: false: {entry}");
    assert!(!first[0].contains("secret"));
    assert_eq!(entry["user_agent"], "e2e-agent/1.0");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["backend"], "lg-1");
    assert_eq!(entry["backend_address"], bs[0].addr.to_string().as_str());
    assert_eq!(entry["outcome"], "new");
    assert!(entry["bytes_out"].as_u64().unwrap() > 0);
    assert!(entry["total_ms"].as_f64().unwrap() > 0.0);
    assert!(entry["response_ms"].as_f64().is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_request_id_is_kept_and_text_lines_carry_the_query() {
    let dir = scratch();
    let file = dir.join("access.log");
    let bs = backends("lt", 1).await;
    let lb = PoolSpec::new(&bs)
        .cookie()
        .server_key(&format!("access_log_file: {}", file.display()))
        .server_key("trusted_proxies: [127.0.0.1/32]")
        .start()
        .await;
    let c = client();
    let id = request_id_seen(&c, &lb.url("/headers?page=2"), Some("edge-7f3a")).await;
    assert_eq!(id, "edge-7f3a");
    let line = &lines_of(&file, 1).await[0];
    for field in [
        " access id=edge-7f3a ",
        " method=GET ",
        " path=/headers ",
        " query=\"page=2\" ",
        " status=200 ",
        " backend=lt-1 ",
        " user_agent=e2e-agent/1.0",
    ] {
        assert!(line.contains(field), "no `{field}` in {line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without `LIMPET_LOG`, `server.log_level` sets the level, and a reload changes it:
/// at `warn` no request is logged, at `info` (after SIGHUP) requests are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_follows_reloads() {
    let bs = backends("ll", 1).await;
    let quiet = PoolSpec::new(&bs).cookie().server_key("log_level: warn");
    let lb = Limpet::start_with_env(&quiet.yaml(), quiet.listen, quiet.admin, &[("LIMPET_LOG", "")]).await;
    let c = client();
    assert_eq!(get(&c, &lb.url("/quiet"), &[], "LIMPET").await.status, 200);
    let mut loud = PoolSpec::new(&bs).cookie().server_key("log_level: info");
    (loud.listen, loud.admin) = (quiet.listen, quiet.admin);
    assert!(lb.reload_spec(&loud).await);
    assert_eq!(get(&c, &lb.url("/loud"), &[], "LIMPET").await.status, 200);
    lb.wait_log("path=/loud").await;
    assert!(!lb.log_text().contains("path=/quiet"), "{}", lb.log_text());
}

/// With no further traffic, a lone request's line is written out by the flusher, to a
/// file or to stderr, well within a second (the buffer waits 100 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_line_is_written_out_without_more_traffic() {
    let within = Duration::from_secs(1);
    let dir = scratch();
    let file = dir.join("access.log");
    let bs = backends("lf", 1).await;
    let to_file = PoolSpec::new(&bs)
        .cookie()
        .server_key(&format!("access_log_file: {}", file.display()))
        .start()
        .await;
    let to_stderr = PoolSpec::new(&bs).cookie().start().await;
    let c = client();
    assert_eq!(get(&c, &to_file.url("/lone"), &[], "LIMPET").await.status, 200);
    assert_eq!(paths(&lines_within(&file, 1, within).await), ["/lone"]);
    assert_eq!(
        get(&c, &to_stderr.url("/lone-stderr"), &[], "LIMPET")
            .await
            .status,
        200
    );
    let deadline = Instant::now() + within;
    while !to_stderr.log_text().contains(" path=/lone-stderr ") {
        assert!(
            Instant::now() < deadline,
            "no line on stderr after {within:?}:\n{}",
            to_stderr.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `n` requests (then `/fence`) on one connection to a limpet logging to a file,
/// sends `signal` at once, and returns the file's paths once limpet has exited.
async fn paths_logged_before(signal: i32, prefix: &str, n: usize) -> Vec<String> {
    let dir = scratch();
    let file = dir.join("access.log");
    let bs = backends(prefix, 1).await;
    let mut lb = PoolSpec::new(&bs)
        .cookie()
        .server_key(&format!("access_log_file: {}", file.display()))
        .start()
        .await;
    let mut conn = OneConnection::open(&lb).await;
    for path in numbered(prefix, n) {
        assert_eq!(conn.get(&path).await, 200);
    }
    assert_eq!(conn.get("/fence").await, 200);
    lb.signal(signal);
    let deadline = Instant::now() + Duration::from_secs(10);
    while lb.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "limpet did not exit:\n{}",
            lb.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let paths = paths(&lines_now(&file)).into_iter().map(str::to_owned).collect();
    let _ = std::fs::remove_dir_all(&dir);
    paths
}

/// SIGTERM right after a run of requests: once limpet has exited, every one of them is
/// in the file, in order (the graceful stop waited for the last, `/fence`, too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_writes_out_every_buffered_line() {
    let mut expected = numbered("ls", 300);
    expected.push("/fence".into());
    assert_eq!(paths_logged_before(libc::SIGTERM, "ls", 300).await, expected);
}

/// SIGINT stops at once, within the flush interval: what was logged is written out all
/// the same (`/fence` may be cut before its line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_stop_writes_out_what_was_logged() {
    let mut paths = paths_logged_before(libc::SIGINT, "lq", 300).await;
    if paths.last().is_some_and(|p| p == "/fence") {
        paths.pop();
    }
    assert_eq!(paths, numbered("lq", 300));
}

/// logrotate's way: move the file, send SIGUSR1. Every line of a request answered
/// before the signal is in the moved file (written out by the reopen, buffered or not),
/// every later one in the new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_puts_earlier_lines_in_the_moved_file_and_later_ones_in_a_new_one() {
    let dir = scratch();
    let file = dir.join("access.log");
    let bs = backends("lr", 1).await;
    let lb = PoolSpec::new(&bs)
        .cookie()
        .server_key(&format!("access_log_file: {}", file.display()))
        .start()
        .await;
    let mut conn = OneConnection::open(&lb).await;
    for path in numbered("before", 50) {
        assert_eq!(conn.get(&path).await, 200);
    }
    // The last request's line may be logged just after its response: `/fence` makes
    // sure `/before/49`'s is buffered, and may itself land in either file.
    assert_eq!(conn.get("/fence").await, 200);
    let rotated = dir.join("access.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    lb.signal(libc::SIGUSR1);
    lb.wait_log("access log reopened").await;
    for path in numbered("after", 20) {
        assert_eq!(conn.get(&path).await, 200);
    }
    // The last of them may still be on its way: the new file holds `/after/19` at last.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !paths(&lines_now(&file)).contains(&"/after/19") {
        assert!(Instant::now() < deadline, "{:?}", lines_now(&file));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (old, new) = (lines_now(&rotated), lines_now(&file));
    let without_fence = |lines: &[String]| -> Vec<String> {
        paths(lines)
            .into_iter()
            .filter(|p| *p != "/fence")
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(without_fence(&old), numbered("before", 50), "the moved file");
    assert_eq!(without_fence(&new), numbered("after", 20), "the new file");
    let fences = paths(&old)
        .iter()
        .chain(&paths(&new))
        .filter(|p| **p == "/fence")
        .count();
    assert_eq!(fences, 1, "/fence is logged once");
    let _ = std::fs::remove_dir_all(&dir);
}
