//! SIGHUP: reload the config; a valid one serves new requests, an invalid one is refused and the
//! old one keeps serving.

use super::active::ActiveConfig;
use super::runtime::Runtime;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::Arc;

pub struct Reloader {
    pub runtime: Arc<Runtime>,
    pub file: PathBuf,
}

impl Reloader {
    /// Loads and swaps in the config file, or logs why not and keeps the current one.
    pub fn reload(&self) {
        match crate::config::load(&self.file) {
            Ok(config) => {
                let active = ActiveConfig::new(config.gateway, &self.runtime.metrics);
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
