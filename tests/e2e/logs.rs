//! The access log as operators use it: to a file (`server.access_log_file`), in JSON
//! or text, reopened on SIGUSR1 after logrotate moved it, with the fields of a request
//! (request id passed to the backend, timings, bytes, user agent; the query dropped on
//! request).

use std::path::Path;
use std::time::{Duration, Instant};

use limpet_e2e::*;

/// The lines of `file` once it has at least `n` (the log is flushed every second).
async fn lines_of(file: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, wanted {n}",
            file.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
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
async fn the_access_log_goes_to_a_file_in_json_and_reopens_on_sigusr1() {
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

    // logrotate: move the file, then SIGUSR1; new lines go to a new file.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    lb.signal(libc::SIGUSR1);
    lb.wait_log("access log reopened").await;
    request_id_seen(&c, &lb.url("/headers"), None).await;
    assert_eq!(lines_of(&file, 1).await.len(), 1);
    assert_eq!(lines_of(&rotated, 1).await.len(), 1);
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
