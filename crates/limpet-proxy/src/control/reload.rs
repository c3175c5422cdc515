//! The background service that owns SIGHUP: each signal runs the same load function as
//! startup and `--check`, refuses changes to restart-only keys, builds a new snapshot and
//! swaps it in with one store. Signals arriving during a reload coalesce into one more.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use limpet_config::ConfigErrors;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::clock::{now_ms, unix_secs_f64};
use crate::load::load_file;
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use limpet_config::LogLevel;

pub struct Reloader {
    shared: Arc<Shared>,
    path: PathBuf,
    /// Snapshots replaced by a reload, kept until no request holds them any more so
    /// that freeing a large one happens here, never on a request's thread.
    retired: std::sync::Mutex<Vec<Arc<Snapshot>>>,
}

impl Reloader {
    pub fn new(shared: Arc<Shared>, path: PathBuf) -> Self {
        Self {
            shared,
            path,
            retired: std::sync::Mutex::default(),
        }
    }

    /// Frees the retired snapshots that no request uses any more.
    fn free_retired(&self) {
        if let Ok(mut retired) = self.retired.lock() {
            retired.retain(|s| Arc::strong_count(s) > 1);
        }
    }

    /// One reload attempt; on error the running snapshot is untouched.
    ///
    /// The work (read, parse, validate, build) runs on a thread of its own at a lower
    /// scheduling priority: on a machine with CPU to spare it takes no longer, and it
    /// leaves request threads the CPU they need instead of adding to their latency. It
    /// shares no lock with them.
    pub fn reload(&self) -> Result<u64, ConfigErrors> {
        let shared = self.shared.clone();
        let path = self.path.clone();
        let work = std::thread::Builder::new()
            .name("limpet-reload".into())
            .spawn(move || {
                lower_priority();
                swap_in(&shared, &path)
            });
        let outcome = match work.map(|t| t.join()) {
            Ok(Ok(outcome)) => outcome,
            // No thread to be had (or it died): do the work here rather than not at all.
            Ok(Err(_)) | Err(_) => swap_in(&self.shared, &self.path),
        };
        let (generation, old) = outcome?;
        if let Ok(mut retired) = self.retired.lock() {
            retired.push(old);
        }
        Ok(generation)
    }

    fn record(&self, result: Result<u64, ConfigErrors>, took: Duration) {
        let m = &self.shared.metrics;
        match result {
            Ok(generation) => {
                m.count_reload(true);
                m.config_generation.set(generation as i64);
                m.last_reload_success
                    .set(unix_secs_f64(std::time::SystemTime::now()));
                self.shared.last_reload_error.store(None);
                if let Some(set_level) = LOG_LEVEL.get() {
                    set_level(self.shared.current.load().config.server.log_level);
                }
                tracing::info!(
                    generation,
                    path = %self.path.display(),
                    ms = took.as_secs_f64() * 1e3,
                    "configuration reloaded"
                );
            }
            Err(errors) => {
                m.count_reload(false);
                for e in errors.iter() {
                    tracing::error!(path = %self.path.display(), "reload rejected, old configuration keeps serving: {e}");
                }
                self.shared
                    .last_reload_error
                    .store(Some(Arc::new(errors.to_string())));
            }
        }
    }
}

/// Applies `server.log_level` after each good reload; set by `main` when the level
/// comes from the configuration (no `LIMPET_LOG` in the environment).
static LOG_LEVEL: std::sync::OnceLock<Box<dyn Fn(LogLevel) + Send + Sync>> = std::sync::OnceLock::new();

/// Installs the function that applies a reloaded `server.log_level`.
pub fn on_log_level(set: Box<dyn Fn(LogLevel) + Send + Sync>) {
    let _ = LOG_LEVEL.set(set);
}

/// Loads `path` and, if it is valid and changes no restart-only key, builds the next
/// snapshot and swaps it in. Returns the new generation and the replaced snapshot.
fn swap_in(shared: &Shared, path: &std::path::Path) -> Result<(u64, Arc<Snapshot>), ConfigErrors> {
    let loaded = load_file(path)?;
    let current = shared.current.load_full();
    limpet_config::restart_only(&current.config, &loaded.config)?;
    for w in limpet_config::http2_restart_warnings(&current.config, &loaded.config) {
        tracing::warn!("{w}");
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let generation = current.generation + 1;
    // Series of removed backends go in `build`; a scrape refreshing gauges from the
    // old snapshot meanwhile would bring them back, so the two never overlap.
    let _series = shared.series_lock();
    let next = Snapshot::build(loaded, generation, &shared.metrics, Some(&current), now_ms());
    crate::health::carry_checks(&current, &next);
    Ok((generation, shared.current.swap(Arc::new(next))))
}

/// Nice +10 for the calling thread (Linux keeps a nice value per thread).
#[allow(unsafe_code)]
fn lower_priority() {
    // SAFETY: setpriority(2) on the calling thread's own id; no memory is involved.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    if rc != 0 {
        tracing::debug!(
            "reload thread keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP, reload disabled: {e}");
                return;
            }
        };
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.free_retired(),
                _ = shutdown.changed() => return,
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!(path = %self.path.display(), "SIGHUP: reloading configuration");
                    let started = std::time::Instant::now();
                    super::notify::reloading();
                    let result = self.reload();
                    self.record(result, started.elapsed());
                    // Serving again, with the new configuration or the old one.
                    super::notify::notify("READY=1");
                }
            }
        }
    }
}
