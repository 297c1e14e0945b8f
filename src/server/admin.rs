//! The admin listener: `/metrics`, `/healthz`, `/readyz`. Never served on a webhook listener.

use super::gateway::Shared;
use crate::config::OnError;
use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::sync::Arc;
use std::time::Duration;

pub struct Admin {
    pub shared: Arc<Shared>,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let shared = &self.shared;
        match session.req_header().uri.path() {
            "/metrics" => {
                for (route, n) in shared.store.held_keys() {
                    shared.metrics.idempotency_keys.with_label_values(&[&route]).set(n);
                }
                reply(200, "text/plain; version=0.0.4", shared.metrics.render())
            }
            "/healthz" => reply(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => {
                let store_ok = matches!(
                    tokio::time::timeout(Duration::from_secs(2), shared.store.ping()).await,
                    Ok(Ok(()))
                );
                if store_ok || shared.on_error == OnError::Allow {
                    reply(200, "application/json", br#"{"status":"ready"}"#.to_vec())
                } else {
                    reply(503, "application/json", br#"{"status":"store_unavailable"}"#.to_vec())
                }
            }
            _ => reply(404, "application/json", br#"{"error":{"code":"not_found","message":"Admin paths are /metrics, /healthz and /readyz."}}"#.to_vec()),
        }
    }
}
