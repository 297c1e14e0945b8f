//! The admin listener: `/metrics`, `/healthz`, `/readyz`, the delivery log API (`/api`) and its
//! page (`/ui/`). Never served on a webhook listener.

use super::delivery_log;
use super::runtime::Runtime;
use super::ui_page;
use crate::config::OnError;
use crate::store::queue::{unix_ms, DestinationStats};
use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub struct Admin {
    pub runtime: Arc<Runtime>,
    pub token: Option<String>,
    /// The (route, destination) pairs the last scrape's queue gauges were set for. A store may
    /// leave out a destination with nothing pending or dead (Postgres counts only such rows), and
    /// its gauges must then fall to zero rather than keep their last value.
    pub reported: Mutex<HashSet<(String, String)>>,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    answer(status, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

fn answer(status: u16, content_type: &str) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CACHE_CONTROL, "no-store")
        .header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let rt = &self.runtime;
        let req = session.req_header();
        let path = req.uri.path().to_string();
        match path.as_str() {
            "/metrics" => {
                self.refresh_gauges().await;
                reply(200, "text/plain; version=0.0.4", rt.metrics.render())
            }
            "/healthz" => reply(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => {
                let store_ok = matches!(
                    tokio::time::timeout(Duration::from_secs(2), rt.store.ping()).await,
                    Ok(Ok(()))
                );
                if store_ok || (rt.on_error == OnError::Allow && rt.queue.is_none()) {
                    reply(200, "application/json", br#"{"status":"ready"}"#.to_vec())
                } else {
                    reply(503, "application/json", br#"{"status":"store_unavailable"}"#.to_vec())
                }
            }
            "/ui" | "/ui/" => answer(200, "text/html; charset=utf-8")
                .header(
                    http::header::CONTENT_SECURITY_POLICY,
                    &*ui_page::CONTENT_SECURITY_POLICY,
                )
                .header(http::header::CONTENT_LENGTH, ui_page::PAGE.len())
                .body(ui_page::PAGE.as_bytes().to_vec())
                .unwrap_or_default(),
            p if p == "/api/deliveries"
                || p.starts_with("/api/deliveries/")
                || p == "/api/destinations" =>
            {
                let method = req.method.clone();
                let query = req.uri.query().map(str::to_string);
                let auth = req
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes().to_vec());
                if let Some(refused) =
                    delivery_log::authorize(self.token.as_deref(), auth.as_deref(), &method)
                {
                    return reply(refused.status, refused.content_type, refused.body);
                }
                let answer = delivery_log::serve(rt, &method, p, query.as_deref()).await;
                reply(answer.status, answer.content_type, answer.body)
            }
            _ => reply(404, "application/json", br#"{"error":{"code":"not_found","message":"Admin paths are /metrics, /healthz, /readyz, /api/deliveries, /api/destinations and /ui/."}}"#.to_vec()),
        }
    }
}

impl Admin {
    /// Gauges read from the stores when scraped, not kept current on the request path.
    async fn refresh_gauges(&self) {
        let rt = &self.runtime;
        let m = &rt.metrics;
        for (route, n) in rt.store.held_keys() {
            m.idempotency_keys.with_label_values(&[&route]).set(n);
        }
        for (route, total) in rt.store.evictions() {
            let counter = m.idempotency_evictions.with_label_values(&[&route]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let Some(queue) = &rt.queue else {
            return;
        };
        let now = unix_ms(SystemTime::now());
        let stats = match queue.stats().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queue's counts for /metrics");
                return;
            }
        };
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        let now_reported: HashSet<(String, String)> = stats
            .iter()
            .map(|s| (s.route.clone(), s.destination.clone()))
            .collect();
        let gone: Vec<DestinationStats> = reported
            .difference(&now_reported)
            .map(|(route, destination)| DestinationStats {
                route: route.clone(),
                destination: destination.clone(),
                ..DestinationStats::default()
            })
            .collect();
        *reported = now_reported;
        drop(reported);
        for s in stats.into_iter().chain(gone) {
            let labels = [s.route.as_str(), s.destination.as_str()];
            m.queue_deliveries
                .with_label_values(&[labels[0], labels[1], "pending"])
                .set(s.pending);
            m.queue_deliveries
                .with_label_values(&[labels[0], labels[1], "dead"])
                .set(s.dead);
            let age = s
                .oldest_pending_ms
                .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0);
            m.queue_oldest_pending.with_label_values(&labels).set(age);
        }
    }
}
