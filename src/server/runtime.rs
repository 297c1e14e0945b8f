//! What every request and background task of one gateway process shares: the active config, the
//! stores, metrics, the body budget and the connector that opens new upstream connections.

use super::active::ActiveConfig;
use super::breaker::Breakers;
use super::budget::BodyBudget;
use crate::config::OnError;
use crate::metrics::Metrics;
use crate::spans::SpanSink;
use crate::store::queue::Queue;
use crate::store::Store;
use arc_swap::ArcSwap;
use pingora_core::connectors::TransportConnector;
use std::sync::Arc;
use tokio::sync::Notify;

pub struct Runtime {
    /// Swapped whole on reload; a request keeps the one it started with.
    pub active: ArcSwap<ActiveConfig>,
    /// Idempotency keys.
    pub store: Arc<dyn Store>,
    /// The delivery queue, when the store is durable (`file:`, `postgres:`).
    pub queue: Option<Arc<dyn Queue>>,
    pub on_error: OnError,
    pub metrics: Arc<Metrics>,
    pub budget: Arc<BodyBudget>,
    /// Opens new upstream connections (each route and destination keeps its idle ones).
    pub connector: TransportConnector,
    /// Wakes the queue worker when a delivery is accepted or retried.
    pub queue_wake: Notify,
    /// Finished spans, for the exporter (dropped when tracing is off or the queue is full).
    pub spans: SpanSink,
    /// Queue destinations' breakers, for the worker and the delivery log.
    pub breakers: Breakers,
}
