//! Stopping: which signals stop limpet and how, and the wait for in-flight requests.
//!
//! [`Signals`] is the watcher Pingora's main loop waits on: SIGTERM stops gracefully,
//! SIGINT at once, SIGQUIT hands the listeners to a new process (`-u`). SIGUSR1 writes
//! out the access log's buffer and reopens its file (for logrotate); SIGUSR2 is logged
//! and ignored, so that an HAProxy habit never kills limpet.
//!
//! Pingora waits its whole grace period after SIGTERM even when nothing is in flight.
//! [`Drain`] watches the requests in progress once the listeners close and says
//! [`Stopped::Drained`] to `main` as soon as none is left; `main` then returns. If
//! requests are still running when the grace period ends, Pingora finishes the stop.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::shared::Shared;

/// Why the server's run is over, as `main` learns it.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every request finished after a graceful stop began.
    Drained,
    /// Pingora's run returned (fast stop, upgrade, or the grace period ran out).
    ServerDone,
}

/// The signals that stop limpet, SIGUSR1 (reopen the access log), and the ones it
/// only logs.
pub struct Signals(pub Arc<Shared>);

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let streams = [
            SignalKind::quit(),
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::user_defined1(),
            SignalKind::user_defined2(),
        ]
        .map(signal);
        let [Ok(mut quit), Ok(mut term), Ok(mut int), Ok(mut usr1), Ok(mut usr2)] = streams else {
            // Without handlers the default actions stay: TERM and INT still stop.
            tracing::error!("cannot install signal handlers; SIGTERM and SIGINT stop limpet at once");
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = quit.recv() => {
                    tracing::info!("SIGQUIT: handing the listeners to the new process, then stopping");
                    return ShutdownSignal::GracefulUpgrade;
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM: stopping gracefully");
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping now");
                    return ShutdownSignal::FastShutdown;
                }
                _ = usr1.recv() => match self.0.access.reopen() {
                    Ok(Some(path)) => tracing::info!(path = %path.display(), "SIGUSR1: access log reopened"),
                    Ok(None) => tracing::warn!(
                        "SIGUSR1 ignored: the access log goes to standard error (no server.access_log_file to reopen)"
                    ),
                    Err(e) => tracing::error!(error = %e, "SIGUSR1: could not reopen the access log; it keeps writing to the file it had open"),
                },
                _ = usr2.recv() => tracing::warn!("SIGUSR2 ignored: it has no job in limpet"),
            }
        }
    }
}

/// Tells `main` when the last in-flight request of a graceful stop has finished.
pub struct Drain {
    shared: Arc<Shared>,
    stopped: Mutex<Sender<Stopped>>,
}

impl Drain {
    pub fn new(shared: Arc<Shared>, stopped: Sender<Stopped>) -> Self {
        Self {
            shared,
            stopped: Mutex::new(stopped),
        }
    }
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        let grace = self.shared.current.load().config.server.grace_period;
        let deadline = tokio::time::Instant::now() + grace;
        tracing::info!(
            in_flight = self.shared.active.load(Ordering::Relaxed),
            ?grace,
            "stopping: waiting for in-flight requests"
        );
        // Idle twice in a row, so that a request between accept and its first hook
        // is not cut.
        let mut idle_checks = 0;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.shared.active.load(Ordering::Relaxed) == 0 {
                idle_checks += 1;
                if idle_checks >= 2 {
                    tracing::info!("no request in flight, exiting");
                    if let Ok(tx) = self.stopped.lock() {
                        let _ = tx.send(Stopped::Drained);
                    }
                    return;
                }
            } else {
                idle_checks = 0;
            }
        }
    }
}
