//! The span exporter (PRODUCT.md §7): drains the span queue in batches and POSTs each as OTLP/HTTP
//! protobuf to the collector the active config names (`tracing.otlp`, so a reload that changes
//! it applies to the next batch). A batch the collector does not take (down, slow, an error
//! status) is dropped and counted, never retried: spans must not pile up behind a collector that
//! is gone.

use super::forward::{self, UpstreamLink};
use super::runtime::Runtime;
use crate::spans::{self, Span};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Spans per request to the collector, at most.
const BATCH: usize = 512;
/// How long a span may wait for its batch to fill.
const LINGER: Duration = Duration::from_millis(500);
/// One export's limit, connect included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SpanExport {
    pub runtime: Arc<Runtime>,
    /// The queue's receiving end, taken by the service when it starts.
    pub queue: Mutex<Option<mpsc::Receiver<Span>>>,
}

#[async_trait]
impl BackgroundService for SpanExport {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut queue) = self.queue.lock().ok().and_then(|mut q| q.take()) else {
            return;
        };
        // The collector's link, kept while the config names the same one.
        let mut link: Option<(String, UpstreamLink)> = None;
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                n = queue.recv_many(&mut batch, BATCH) => if n == 0 { return },
                _ = shutdown.changed() => return,
            }
            // Let a batch fill a little before it goes.
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, queue.recv()).await {
                    Ok(Some(span)) => batch.push(span),
                    Ok(None) | Err(_) => break,
                }
            }
            let Some(settings) = self.runtime.active.load().policy.tracing.clone() else {
                // Tracing was switched off by a reload: what was queued goes nowhere.
                self.runtime.spans.lost(batch.len());
                continue;
            };
            let collector = &settings.collector;
            if link.as_ref().is_none_or(|(url, _)| url != &collector.url) {
                link = Some((
                    collector.url.clone(),
                    UpstreamLink::new(collector, EXPORT_TIMEOUT),
                ));
            }
            let Some((_, link)) = &link else { continue };
            let n = batch.len();
            let body = Bytes::from(spans::encode(batch));
            let mut head = BytesMut::with_capacity(256);
            forward::write_request_line(&mut head, "POST", "/v1/traces");
            let _ = write!(
                head,
                "Host: {}\r\nContent-Type: application/x-protobuf\r\n",
                collector.host
            );
            forward::end_head(&mut head, body.len());
            match forward::exchange(&self.runtime.connector, link, head, body).await {
                Ok(answer) if answer.header.status.is_success() => {}
                Ok(answer) => {
                    self.runtime.spans.lost(n);
                    tracing::debug!(
                        status = answer.header.status.as_u16(),
                        spans = n,
                        "the collector refused a batch of spans"
                    );
                }
                Err(e) => {
                    self.runtime.spans.lost(n);
                    tracing::debug!(error = %e, spans = n, "cannot export spans");
                }
            }
        }
    }
}
