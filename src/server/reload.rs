//! SIGHUP: reload the config (secret files with it) and the listeners' certificates; a valid
//! config serves new requests and a valid certificate new handshakes, an invalid one is refused
//! and the old one keeps serving.

use super::active::ActiveConfig;
use super::certificate::Certificate;
use super::runtime::Runtime;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::Arc;

pub struct Reloader {
    pub runtime: Arc<Runtime>,
    pub file: PathBuf,
    /// The listeners' certificates read from files.
    pub certificates: Vec<Arc<Certificate>>,
}

impl Reloader {
    /// Re-reads every certificate; a pair that does not load or match is logged and the old
    /// one keeps serving.
    fn reload_certificates(&self) {
        for c in &self.certificates {
            match c.reload() {
                Ok(()) => {
                    tracing::info!(cert = %c.cert_file.display(), "certificate reloaded for new handshakes")
                }
                Err(e) => {
                    self.runtime
                        .metrics
                        .config_reloads
                        .with_label_values(&["error"])
                        .inc();
                    tracing::error!(error = %e, "certificate reload refused; the previous certificate keeps serving");
                }
            }
        }
    }

    /// Loads and swaps in the config file, or logs why not and keeps the current one.
    pub fn reload(&self) {
        self.reload_certificates();
        match crate::config::load(&self.file) {
            Ok(config) => {
                let active = ActiveConfig::new(config.policy, &self.runtime.metrics);
                self.runtime.active.store(Arc::new(active));
                self.runtime
                    .metrics
                    .config_reloads
                    .with_label_values(&["ok"])
                    .inc();
                tracing::info!(file = %self.file.display(), "config reloaded; listeners, store and threads change only on restart");
            }
            Err(e) => {
                self.runtime
                    .metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(file = %self.file.display(), problems = %e.to_string().replace('\n', "; "), "config reload refused; the previous config keeps serving");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot listen for SIGHUP; config reload is unavailable");
            return;
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => { self.reload(); }
                _ = shutdown.changed() => return,
            }
        }
    }
}
