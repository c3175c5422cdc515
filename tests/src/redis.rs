//! A real `redis-server` for the Redis session-store tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_addr;

/// A real `redis-server` on a free loopback port, without persistence. Killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub async fn start() -> Redis {
        let port = free_addr().port();
        let mut r = Redis { port, child: None };
        r.restart().await;
        r
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: connections stay open and
    /// nothing answers, as with an overloaded or partitioned Redis.
    pub fn freeze(&self, frozen: bool) {
        if let Some(c) = &self.child {
            let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Starts the server (again) on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; .ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command("PING").await.as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The body of `INFO section`, as `field:value` lines.
    pub async fn info(&self, section: &str) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        s.write_all(format!("INFO {section}\r\n").as_bytes())
            .await
            .unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        r.read_line(&mut head).await.unwrap();
        // A bulk string: `$LEN` then LEN bytes.
        let len: usize = head.trim_end().trim_start_matches('$').parse().unwrap();
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await.unwrap();
        String::from_utf8(body).unwrap()
    }

    /// Calls of `command` so far (`INFO commandstats`, which counts commands run by
    /// scripts too).
    pub async fn calls(&self, command: &str) -> u64 {
        let info = self.info("commandstats").await;
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    /// Sends one inline command and returns the first line of the reply.
    pub async fn command(&self, cmd: &str) -> Option<String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).await.ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.ok()?;
        Some(line.trim_end().to_string())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
