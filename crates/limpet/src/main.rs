//! The limpet binary: command line, logging, Pingora server wiring generated from our
//! own configuration (users edit one YAML file), then run until a signal ends it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use limpet_config::{Listener, LogFormat, LogLevel};
use limpet_proxy::{
    load_file, AccessLog, Admin, BeforeTls, Drain, Front, HealthService, Limpet, Loaded, Reloader, Shared,
    Signals, Snapshot, SniResolver, Stopped, StoreKeeper,
};
use pingora_core::apps::http_app::HttpServer;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{ListenerConfig, Listeners};
use pingora_core::protocols::http::v2::server::default_h2_options;
use pingora_core::protocols::l4::stream::{L4BufferSettings, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;

/// mimalloc: measured side by side against glibc malloc in one run (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The version and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("LIMPET_COMMIT"), ")");

/// limpet: a sticky-session layer-7 load balancer.
#[derive(Parser, Debug)]
#[command(version = VERSION, about)]
struct Cli {
    /// Configuration file.
    #[arg(long, default_value = "./config.yaml")]
    config: PathBuf,
    /// Validate the configuration and exit: 0 and "configuration OK", or 1 and every error.
    #[arg(long)]
    check: bool,
    /// With --check: print the effective configuration (every default filled in,
    /// secrets redacted) as YAML on standard output.
    #[arg(long, requires = "check")]
    print: bool,
    /// Take over the listening sockets of a running limpet that received SIGQUIT.
    #[arg(long, short = 'u')]
    upgrade: bool,
    /// Socket used to hand listeners over during a SIGQUIT upgrade.
    #[arg(long, default_value = "/tmp/limpet_upgrade.sock")]
    upgrade_sock: String,
    /// Write limpet's process id to this file while it runs (overrides server.pid_file).
    #[arg(long)]
    pid_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    return_freed_memory_promptly();
    ignore_control_signals();
    let cli = Cli::parse();
    let loaded = match load_file(&cli.config) {
        Ok(l) => l,
        Err(errors) => {
            eprintln!("{}: {} error(s):", cli.config.display(), errors.len());
            for e in errors.iter() {
                eprintln!("  {e}");
            }
            return ExitCode::from(1);
        }
    };
    if cli.check {
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        if cli.print {
            print!("{}", limpet_config::effective_yaml(&loaded.config));
            eprintln!("configuration OK");
        } else {
            println!("configuration OK");
        }
        return ExitCode::SUCCESS;
    }
    init_logging(loaded.config.server.log_format, loaded.config.server.log_level);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    match run(cli, loaded) {
        Ok(stopped) => {
            tracing::info!(?stopped, "limpet stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("limpet: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Memory freed goes back to the OS within about a second, and never on the request
/// path.
///
/// mimalloc keeps freed pages for `purge_delay` (1 s by default) and returns them only
/// when the thread that freed them allocates again: after a flood of connections, an
/// idle limpet kept every page (14x its resting RSS, measured). Setting `purge_delay` to
/// 0 returned them, but at the cost of 3.4 minor page faults per request under load,
/// since every page a request freed had to be faulted back in by the next one: about a
/// quarter of limpet's CPU per request (docs/performance.md). Instead a thread forces a
/// collection once a second (`mi_collect(true)`: the arenas' free pages, whatever their
/// delay), so a flood's memory goes back within a second or two and steady load keeps
/// its pages.
///
/// And no transparent huge pages (`mi_option_allow_thp`, option 43 of mimalloc.h, which
/// the Rust bindings do not name, and the process's THP flag): mimalloc marks its arenas
/// `MADV_HUGEPAGE`, so after a flood the kernel's khugepaged refilled the pages limpet
/// had just returned, 2 MiB at a time. RSS climbed from 1.3x to 3.3x its resting level
/// in the minute after the connections closed, all of it `AnonHugePages` (measured with
/// /proc/PID/smaps_rollup).
#[allow(unsafe_code)]
fn return_freed_memory_promptly() {
    const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;
    // SAFETY: setting an allocator option is thread-safe and takes plain integers.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
    }
    let collector = std::thread::Builder::new()
        .name("limpet-memory".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            // SAFETY: mi_collect takes a plain flag and is safe from any thread; the
            // arenas it purges are shared and locked by mimalloc itself.
            unsafe { libmimalloc_sys::mi_collect(true) };
        });
    if let Err(e) = collector {
        eprintln!("limpet: freed memory will go back to the OS later: {e}");
    }
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes plain integers and only sets a flag of
    // this process; on a kernel without it the call fails and nothing changes.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!(
            "transparent huge pages stay on: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// SIGHUP's, SIGUSR1's and SIGUSR2's default action kills the process; until limpet's
/// own handlers are installed (once Pingora runs), these signals must be harmless.
#[allow(unsafe_code)]
fn ignore_control_signals() {
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: installing SIG_IGN has no preconditions and runs before any thread exists.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}

/// The log filter for `level`, with Pingora's own lines (services starting and
/// stopping, for debugging Pingora) below warnings unless the filter names pingora.
fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    let directives = if level.contains("pingora") {
        level.to_string()
    } else {
        format!("{level},pingora_core=warn,pingora_proxy=warn")
    };
    tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|_| "info".into())
}

/// Logs to standard error at `LIMPET_LOG` (or `RUST_LOG`) when set, else at
/// `server.log_level`, which then follows reloads.
fn init_logging(format: LogFormat, level: LogLevel) {
    let from_env = [std::env::var("LIMPET_LOG"), std::env::var("RUST_LOG")]
        .into_iter()
        .find_map(|v| v.ok().filter(|v| !v.is_empty()));
    let filter = log_filter(from_env.as_deref().unwrap_or(level.as_str()));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let set_level: Box<dyn Fn(LogLevel) + Send + Sync> = match format {
        LogFormat::Text => {
            let builder = builder.with_env_filter(filter).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |l| drop(handle.reload(log_filter(l.as_str()))))
        }
        LogFormat::Json => {
            let builder = builder
                .json()
                .flatten_event(true)
                .with_env_filter(filter)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |l| drop(handle.reload(log_filter(l.as_str()))))
        }
    };
    if from_env.is_none() {
        limpet_proxy::on_log_level(set_level);
    }
}

/// Buffers in front of each client socket: no read buffer. Pingora's default (64 KiB,
/// zeroed when the connection is accepted) would be most of an idle connection's
/// memory. Plain HTTP/1 reads go straight into the request parser's own buffer, and TLS
/// reads into rustls' record buffer. A 16 KiB buffer below rustls added 6 KiB to every
/// TLS connection and saved no CPU, for uploads or kept-alive requests
/// (docs/performance.md).
fn client_buffers() -> L4BufferSettings {
    L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE)
}

/// Adds listener `i`'s proxy service to `server`.
fn add_listener(
    server: &mut Server,
    shared: &Arc<Shared>,
    i: usize,
    l: &Listener,
    limits: &limpet_config::Server,
) -> anyhow::Result<()> {
    let name = format!("limpet proxy {}", l.address);
    let mut proxy = HttpProxy::new(Limpet::new(shared.clone(), i), server.configuration.clone());
    proxy.handle_init_modules();
    // HTTP/2 connections get the limits HTTP/1 ones have, as they stand at startup
    // (Pingora reads these once): idle connections close, header blocks are bounded.
    let mut options = HttpServerOptions::default();
    options.h2c = l.h2c;
    options.h2_idle_timeout = Some(limits.client_idle_timeout);
    proxy.server_options = Some(options);
    let mut h2 = default_h2_options();
    h2.max_header_list_size(u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.h2_max_concurrent_streams);
    proxy.h2_options = Some(h2);
    let address = l.address.to_string();
    let tls = match &l.tls {
        None => None,
        Some(_) => {
            // The resolver picks each handshake's certificate from the snapshot in
            // use, so certificates reload with everything else.
            let mut tls = TlsSettings::intermediate("", "").context("TLS settings")?;
            tls.set_cert_resolver(Arc::new(SniResolver::new(shared.clone(), i)));
            tls.enable_h2();
            Some(tls)
        }
    };
    // Every listener serves through `Front`: the PROXY header of a plain listener, and
    // the idle and request-head deadlines Pingora does not enforce.
    let front = |proxy_protocol: bool| Front {
        shared: shared.clone(),
        listener: i,
        proxy_protocol,
        inner: Arc::new(proxy),
        // HTTP/1 connections go to limpet's HTTP/1 engine (docs/architecture.md).
        h1: Arc::new(limpet_proxy::H1::new(shared.clone(), i)),
    };
    let mut listeners = Listeners::new();
    // Before a TLS handshake: the idle deadline, and the PROXY header if expected.
    if tls.is_some() {
        listeners.set_pre_tls_callback(Arc::new(BeforeTls {
            shared: shared.clone(),
            listener: i,
            proxy_protocol: l.proxy_protocol,
        }));
    }
    let mut endpoint = ListenerConfig::tcp(address).l4_buffer(client_buffers());
    if let Some(tls) = tls {
        endpoint = endpoint.tls(tls);
    }
    listeners.add_listener(endpoint);
    let plain_proxy_protocol = l.proxy_protocol && l.tls.is_none();
    server.add_service(Service::with_listeners(
        name,
        listeners,
        front(plain_proxy_protocol),
    ));
    Ok(())
}

/// One listener as the startup line names it: its URL and what it speaks.
fn describe(l: &Listener) -> String {
    let scheme = if l.tls.is_some() { "https" } else { "http" };
    let mut speaks = vec!["HTTP/1.1"];
    if l.tls.is_some() || l.h2c {
        speaks.push(if l.tls.is_some() { "HTTP/2" } else { "h2c" });
    }
    if l.proxy_protocol {
        speaks.push("PROXY protocol");
    }
    if l.redirect_https {
        speaks.push("redirects to https");
    }
    format!("{scheme}://{} ({})", l.address, speaks.join(", "))
}

/// The pid file: written with limpet's process id at start, removed at stop unless
/// another process (a limpet that took over with SIGQUIT and `-u`) wrote it since.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: PathBuf) -> anyhow::Result<Self> {
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the pid file {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours =
            std::fs::read_to_string(&self.0).is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Runs the server until it stops: returns when a graceful stop has drained every
/// request, or when Pingora's own run ends.
fn run(cli: Cli, loaded: Loaded) -> anyhow::Result<Stopped> {
    let config = loaded.config.clone();
    let server_cfg = &config.server;
    let conf = ServerConf {
        threads: server_cfg.threads,
        grace_period_seconds: Some(server_cfg.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: cli.upgrade_sock.clone(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: cli.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let metrics = limpet_metrics::Metrics::new().context("creating metrics")?;
    let store: Arc<dyn limpet_sessions::SessionStore> = match &loaded.config.session_store.redis {
        None => Arc::new(limpet_sessions::MemoryStore::new(
            loaded.config.session_store.max_entries,
        )),
        Some(redis) => Arc::new(limpet_sessions::RedisStore::new(redis).map_err(anyhow::Error::msg)?),
    };
    let snapshot = Snapshot::build(loaded, 1, &metrics, None, limpet_proxy::clock::now_ms());
    metrics
        .build_info(env!("CARGO_PKG_VERSION"), env!("LIMPET_COMMIT"))
        .context("registering limpet_build_info")?;
    metrics.config_generation.set(1);
    metrics.count_reload(true);
    metrics
        .last_reload_success
        .set(limpet_proxy::clock::unix_secs_f64(snapshot.loaded_at));
    let access = AccessLog::open(server_cfg.access_log_file.clone(), server_cfg.log_format)
        .with_context(|| format!("opening the access log {:?}", server_cfg.access_log_file))?;
    let shared = Arc::new(Shared::new(snapshot, metrics, store, access));
    // The access log's buffer goes out at most 100 ms after a line came (or sooner when
    // it fills), and at stop, below.
    let flusher = shared.clone();
    std::thread::Builder::new()
        .name("limpet-access-log".into())
        .spawn(move || flusher.access.run_flusher())
        .context("starting the access-log thread")?;
    let for_signals = shared.clone();
    let for_exit = shared.clone();

    // One proxy service per listener: listeners differ in TLS, h2c, PROXY protocol
    // and redirects.
    for (i, l) in config.listeners.iter().enumerate() {
        add_listener(&mut server, &shared, i, l, &config.server)?;
    }
    let mut admin = Service::new(
        "limpet admin".to_string(),
        HttpServer::new_app(Admin::new(shared.clone())),
    );
    admin.add_tcp(&config.admin.address.to_string());
    admin.threads = Some(1);
    let keeper = background_service("limpet sessions", StoreKeeper::new(shared.clone()));
    let health = background_service("limpet health", HealthService::new(shared.clone()));
    let (stopped_tx, stopped) = std::sync::mpsc::channel();
    let drain = background_service("limpet drain", Drain::new(shared.clone(), stopped_tx.clone()));
    let control = background_service("limpet control", Reloader::new(shared, cli.config.clone()));

    server.add_service(admin);
    server.add_service(control);
    server.add_service(keeper);
    server.add_service(health);
    server.add_service(drain);
    tracing::info!(config = %cli.config.display(), "limpet {VERSION} starting");
    for l in &config.listeners {
        tracing::info!("listening on {}", describe(l));
    }
    tracing::info!(
        "admin (metrics, status, health) on http://{}",
        config.admin.address
    );
    let pid_file = cli.pid_file.clone().or_else(|| config.server.pid_file.clone());
    let _pid_file = pid_file.map(PidFile::write).transpose()?;
    // The server runs on its own thread so that `main` decides when the process ends:
    // as soon as a graceful stop has drained, or when Pingora's run returns.
    std::thread::Builder::new()
        .name("limpet-server".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(Signals(for_signals)),
            });
            let _ = stopped_tx.send(Stopped::ServerDone);
        })
        .context("starting the server thread")?;
    // READY=1 for systemd (Type=notify) once every listener accepts connections.
    let mut addresses: Vec<_> = config.listeners.iter().map(|l| l.address).collect();
    addresses.push(config.admin.address);
    std::thread::Builder::new()
        .name("limpet-ready".into())
        .spawn(move || limpet_proxy::when_listening(addresses, std::time::Duration::from_secs(60)))
        .context("starting the readiness thread")?;
    let stopped = stopped.recv().context("the server thread ended without a word");
    // What the access log holds goes out last: a graceful stop has let its requests
    // finish (and log) by now.
    for_exit.access.flush();
    stopped
}
