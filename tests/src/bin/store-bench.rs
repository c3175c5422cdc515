//! Session-store cost (`make bench`): the `header` table method with the embedded
//! memory store against the same with Redis on loopback, in one run. limpet (release,
//! one worker thread) in front of four demo backends; keep-alive clients send session
//! ids from a set of 20,000, so most requests find their session and some create one.
//! Prints requests/s, p50/p99 latency and CPU per request of limpet (and of
//! redis-server), read from /proc.
//!
//! `cargo build --release --workspace --bins && target/release/store-bench`;
//! `SECS` (default 5) per store, `CLIENTS` (default 32).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use limpet_e2e::{
    backend_list, free_addr, launch, percentile, pool_config, process_cpu, release_bin, wait_admin, Backend,
    Redis,
};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    requests: u64,
    failures: u64,
    latencies: Vec<Duration>,
    limpet_cpu: Duration,
    redis_cpu: Duration,
    elapsed: Duration,
}

async fn run(backends: &[Backend], store: &str, redis: Option<&Redis>, secs: u64, clients: usize) -> Run {
    let (listen, admin) = (free_addr(), free_addr());
    let yaml = format!(
        "{}{store}",
        pool_config(
            (listen, admin),
            &backend_list(backends),
            "      - header: { name: X-Session-Id, ttl: 15m }\n",
            "",
            ""
        )
    )
    .replace("threads: 2", "threads: 1");
    let dir = std::env::temp_dir().join(format!(
        "limpet-store-bench-{}-{}",
        std::process::id(),
        listen.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut child = launch(&release_bin(), &path, &dir, "warn", Stdio::null(), &[]);
    wait_admin(admin).await;
    // Warm up: create part of the sessions before measuring.
    let c = limpet_e2e::client();
    for i in 0..2000 {
        c.get(format!("http://{listen}/"))
            .header("x-session-id", format!("s{i}"))
            .send()
            .await
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let all: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let cpu0 = process_cpu(child.id() as i32);
    let redis_cpu0 = redis.map_or(Duration::ZERO, |r| process_cpu(r.pid()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..clients {
        let (stop, failures, all) = (stop.clone(), failures.clone(), all.clone());
        let url = format!("http://{listen}/");
        tasks.push(tokio::spawn(async move {
            let c = limpet_e2e::client();
            let mut mine = Vec::new();
            let mut n: u64 = t as u64 * 7919;
            while !stop.load(Ordering::Relaxed) {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let id = format!("s{}", (n >> 33) % 20_000);
                let at = Instant::now();
                match c.get(&url).header("x-session-id", id).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        mine.push(at.elapsed());
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            all.lock().unwrap().extend(mine);
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let limpet_cpu = process_cpu(child.id() as i32).saturating_sub(cpu0);
    let redis_cpu = redis.map_or(Duration::ZERO, |r| {
        process_cpu(r.pid()).saturating_sub(redis_cpu0)
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let mut latencies = std::mem::take(&mut *all.lock().unwrap());
    latencies.sort();
    Run {
        requests: latencies.len() as u64,
        failures: failures.load(Ordering::Relaxed),
        latencies,
        limpet_cpu,
        redis_cpu,
        elapsed,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs = env_num("SECS", 5);
    let clients = env_num("CLIENTS", 32) as usize;
    let mut backends = Vec::new();
    for i in 0..4 {
        backends.push(
            Backend::start(&format!("b{i}"), "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
    }
    let redis = Redis::start().await;
    println!(
        "# store-bench: header table, 20,000 ids, {clients} keep-alive clients, {secs}s per store, limpet 1 worker thread, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let memory = run(&backends, "", None, secs, clients).await;
    let store = format!(
        "session_store: {{ kind: redis, redis_url: \"{}\", key_prefix: \"bench:\", timeout: 50ms }}\n",
        redis.url()
    );
    let shared = run(&backends, &store, Some(&redis), secs, clients).await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (name, r) in [("memory", &memory), ("redis", &shared)] {
        let per = |cpu: Duration| cpu.as_secs_f64() * 1e6 / r.requests.max(1) as f64;
        println!(
            "{name:>6}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, limpet CPU {:.1} µs/req, redis-server CPU {:.1} µs/req, failed {}",
            r.requests as f64 / r.elapsed.as_secs_f64(),
            ms(percentile(&r.latencies, 0.5)),
            ms(percentile(&r.latencies, 0.99)),
            per(r.limpet_cpu),
            per(r.redis_cpu),
            r.failures
        );
    }
}
