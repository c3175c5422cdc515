//! limpet's own resources running out: a failure of limpet is never blamed on a backend.
//! With no file descriptor left for an upstream socket, the request gets a 503, the
//! failure is counted in `limpet_local_errors_total{kind}`, and the healthy backend is
//! neither counted as failing to connect nor ejected by passive health.

use std::time::Duration;

use limpet_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The file descriptors `pid` has open, by number.
fn open_fds(pid: i32) -> Vec<u64> {
    let mut fds: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

/// `pid`'s descriptors once the start-up probes' connections have closed: the set
/// has not changed for ten polls in a row (bounded at 10 s).
async fn settled_fds(pid: i32) -> Vec<u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (mut last, mut same) = (open_fds(pid), 0);
    while same < 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = open_fds(pid);
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// Sets `pid`'s soft limit of open files to `n` (or back); returns the limit before.
/// Only the soft limit moves: raising it again needs no privilege.
fn limit_fds(pid: i32, n: libc::rlim_t) -> libc::rlim_t {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) on a child process this test started, with valid structs.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_is_a_503_never_blamed_on_the_backend() {
    let bs = backends("fd", 1).await;
    let lb = PoolSpec::new(&bs)
        .cookie()
        .pool_key("passive_health: { max_fails: 1, window: 30s, cooldown: 30s }")
        .start()
        .await;
    let pid = lb.pid();
    // A new descriptor takes the lowest free number: with the limit just above it,
    // limpet has exactly one descriptor left (those open above the limit stay valid).
    let open = settled_fds(pid).await;
    let lowest_free = (0..).find(|n| !open.contains(n)).unwrap();
    let old = limit_fds(pid, lowest_free + 1);
    // The last descriptor goes to this client; its request finds none for the backend.
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    limit_fds(pid, old);
    read.expect("no answer within 10 s").unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");

    assert_eq!(
        lb.metric(r#"limpet_local_errors_total{kind="file_descriptors"}"#)
            .await,
        1.0
    );
    assert_eq!(
        lb.metric(r#"limpet_responses_total{code="503",pool="web",reason="local_resources"}"#)
            .await,
        1.0
    );
    assert_eq!(
        lb.metric(r#"limpet_backend_connect_errors_total{backend="fd-1",pool="web"}"#)
            .await,
        0.0
    );
    // Passive health (one failure ejects) never saw it: the backend still serves.
    let r = get(&client(), &lb.url("/"), &[], "SRV").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.backend, "fd-1");
}

/// limpet turns transparent huge pages off for itself: with them on, the kernel refilled
/// the memory limpet returned after a flood of connections, 2 MiB at a time, and RSS
/// tripled in the following minute (docs/performance.md). Where the kernel reports the
/// flag (`THP_enabled` in /proc/PID/status), it must be 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_huge_pages_are_off_for_limpet() {
    let bs = backends("thp", 1).await;
    let lb = PoolSpec::new(&bs).cookie().start().await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", lb.pid())).unwrap();
    let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
        eprintln!("this kernel does not report THP_enabled; nothing to check");
        return;
    };
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}
