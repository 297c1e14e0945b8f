//! The idle-connection sweep: every few seconds, every upstream's pool closes the connections
//! its app closed or that idled too long (`super::pool`), so they do not linger half-closed.

use super::runtime::Runtime;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Sweeps every upstream's pool every few seconds.
pub struct Sweeper {
    pub runtime: Arc<Runtime>,
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    for link in self.runtime.active.load().links() {
                        link.pool.sweep();
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
