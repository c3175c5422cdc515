//! Reload cost under traffic (`make bench`): limpet (release) with 1,000 backends in 50
//! pools and keep-alive clients replaying their cookies at a fixed total rate, first a
//! steady phase, then the same length with a SIGHUP every 200 ms that re-weights a
//! backend in every pool. Prints each reload's duration (from limpet's log) and the
//! request latency of both phases, so the spike is read as a ratio against the steady
//! p99 of the same run. Requests are paced (open loop) at a rate the machine can carry,
//! as a balancer runs in production; latency counts from the moment a request is sent.
//!
//! `cargo run --release -p limpet-e2e --bin reload-bench` (after `cargo build --release`);
//! `SECS` sets each phase's length (default 5), `CLIENTS` the connections (default 16),
//! `RATE` the total requests per second (default 8000, about half of what this 2-core
//! machine serves with the load generator on the same cores).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use limpet_e2e::{free_addr, launch, parse_metric, percentile, release_bin, reply, wait_admin, Backend};

const POOLS: usize = 50;
const PER_POOL: usize = 20;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 50 pools of 20 backends over the real backends' addresses; every tenth pool hashes
/// (a 3,200-point ring each), the rest mix cookie and table methods. `weight_of` sets
/// the weight of each pool's first backend, which is what each reload changes.
fn config(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    real: &[Backend],
    weight_of: u32,
) -> String {
    let mut y = format!(
        "server: {{ threads: 1, client_idle_timeout: 30s }}\nlisteners: [ {{ address: \"{listen}\" }} ]\n\
         admin: {{ address: \"{admin}\" }}\ncookie_keys: [ {{ id: k1, secret_env: LIMPET_TEST_KEY }} ]\nroutes:\n"
    );
    for p in 1..POOLS {
        let _ = writeln!(y, "  - {{ host: \"p{p}.example\", path_prefix: /, pool: p{p} }}");
    }
    y.push_str("  - { host: \"*\", path_prefix: /, pool: p0 }\npools:\n");
    for p in 0..POOLS {
        let _ = writeln!(y, "  p{p}:");
        if p % 10 == 9 {
            y.push_str("    balance: consistent_hash\n    hash: { key: client_ip, balance_factor: 1.25 }\n");
            y.push_str("    persistence: [ { hash: {} } ]\n");
        } else {
            y.push_str("    persistence:\n      - cookie: { name: LIMPET, ttl: 15m }\n");
            y.push_str("      - header: { name: X-Session-Id, ttl: 15m }\n");
        }
        y.push_str("    backends:\n");
        for b in 0..PER_POOL {
            let addr = real[b % real.len()].addr;
            let w = if b == 0 { weight_of } else { 1 };
            let _ = writeln!(y, "      - {{ id: p{p}-b{b}, address: \"{addr}\", weight: {w} }}");
        }
    }
    y
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs = env_num("SECS", 5);
    let clients = env_num("CLIENTS", 16) as usize;
    let rate = env_num("RATE", 8000).max(1);
    let period = Duration::from_secs_f64(clients as f64 / rate as f64);
    let mut real = Vec::new();
    for i in 0..4 {
        real.push(
            Backend::start(&format!("r{i}"), "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
    }
    let (listen, admin) = (free_addr(), free_addr());
    let dir = std::env::temp_dir().join(format!("limpet-reload-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    let log = dir.join("limpet.log");
    std::fs::write(&path, config(listen, admin, &real, 1)).unwrap();
    let stderr = Stdio::from(std::fs::File::create(&log).unwrap());
    let mut child = launch(
        &release_bin(),
        &path,
        &dir,
        "warn,limpet_proxy::control=info",
        stderr,
        &[],
    );
    wait_admin(admin).await;
    let http = reqwest::Client::new();

    // Clients: each takes a session, then replays its cookie; latencies per phase.
    let phase = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<[Vec<Duration>; 2]>> = Arc::default();
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (phase, stop, samples, failures) =
            (phase.clone(), stop.clone(), samples.clone(), failures.clone());
        let url = format!("http://{listen}/");
        tasks.push(tokio::spawn(async move {
            let c = limpet_e2e::client();
            let first = reply(c.get(&url).send().await.unwrap(), "LIMPET").await;
            let cookie = first.set_cookie.unwrap_or_default();
            let mut mine: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
            let mut due = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                due += period;
                tokio::time::sleep_until(due.into()).await;
                let p = *phase.lock().unwrap();
                let t = Instant::now();
                match c.get(&url).header("cookie", &cookie).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        mine[p].push(t.elapsed());
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let mut all = samples.lock().unwrap();
            for (dst, src) in all.iter_mut().zip(mine) {
                dst.extend(src);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    *phase.lock().unwrap() = 1;
    let reload_phase = Instant::now();
    let mut reloads = 0u32;
    let metric = |text: &str| parse_metric(text, "limpet_config_generation");
    while reload_phase.elapsed() < Duration::from_secs(secs) {
        reloads += 1;
        std::fs::write(&path, config(listen, admin, &real, 1 + reloads % 3)).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGHUP);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let text = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let generation = metric(&text);
    let _ = child.kill();
    let _ = child.wait();

    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut took: Vec<f64> = log_text
        .lines()
        .filter(|l| l.contains("configuration reloaded"))
        .filter_map(|l| l.split("ms=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    took.sort_by(f64::total_cmp);
    let mut phases = samples.lock().unwrap().clone();
    for p in phases.iter_mut() {
        p.sort();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "# reload-bench: {POOLS} pools x {PER_POOL} backends, {clients} keep-alive clients, {rate} req/s, {secs}s per phase, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "reloads: {reloads} sent, {} applied (generation {generation}); duration ms: median {:.1}, max {:.1}",
        took.len(),
        took.get(took.len() / 2).copied().unwrap_or(f64::NAN),
        took.last().copied().unwrap_or(f64::NAN)
    );
    for (name, p) in ["steady", "reloading"].iter().zip(&phases) {
        println!(
            "{name:>9}: {} requests, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            p.len(),
            ms(percentile(p, 0.5)),
            ms(percentile(p, 0.99)),
            ms(percentile(p, 0.999)),
            ms(p.last().copied().unwrap_or_default())
        );
    }
    let ratio = ms(percentile(&phases[1], 0.99)) / ms(percentile(&phases[0], 0.99));
    println!(
        "p99 reloading / steady: {ratio:.2}; failed requests: {}",
        failures.load(Ordering::Relaxed)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
