//! The store's background connection: applies the migrations, then listens for other replicas'
//! acceptances and retries.

use super::{described, migrations, CHANNEL, RETRY_EVERY};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

/// Applies migrations (retrying until the database answers), then listens for other replicas'
/// acceptances and retries, reconnecting when the connection drops.
pub(super) async fn background(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    ready: Arc<AtomicBool>,
    changed: Arc<Notify>,
) {
    let mut warned = false;
    loop {
        let connected = config.connect(tls.clone()).await;
        let (mut client, mut connection) = match connected {
            Ok(pair) => pair,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %described(&e), "Postgres does not answer; trying again every second");
                    warned = true;
                }
                tokio::time::sleep(RETRY_EVERY).await;
                continue;
            }
        };
        // The connection is driven by a task of its own while the migration runs, then handed
        // to the notification loop below.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (notify_tx, mut notify_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let driver = tokio::spawn(async move {
            let mut stop = stop_rx;
            loop {
                let message = std::future::poll_fn(|cx| connection.poll_message(cx));
                tokio::select! {
                    m = message => match m {
                        Some(Ok(AsyncMessage::Notification(_))) => { let _ = notify_tx.send(()); }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return,
                    },
                    _ = &mut stop => return,
                }
            }
        });
        if !ready.load(Ordering::Acquire) {
            match migrations::migrate(&mut client).await {
                Ok(applied) => {
                    if !applied.is_empty() {
                        tracing::info!(versions = ?applied, "Postgres schema migrated");
                    }
                    ready.store(true, Ordering::Release);
                    tracing::info!("Postgres store ready");
                }
                Err(e) => {
                    tracing::warn!(error = %described(&e), "Postgres schema migration failed; trying again");
                    let _ = stop_tx.send(());
                    let _ = driver.await;
                    tokio::time::sleep(RETRY_EVERY).await;
                    continue;
                }
            }
        }
        if client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .is_ok()
        {
            warned = false;
            while notify_rx.recv().await.is_some() {
                changed.notify_one();
            }
        }
        // The connection ended: catch up on anything missed, then reconnect.
        changed.notify_one();
        let _ = stop_tx.send(());
        let _ = driver.await;
        tokio::time::sleep(RETRY_EVERY).await;
    }
}
