//! Prometheus metrics (PRODUCT.md §7). Labels carry route names and outcome codes only: never
//! raw paths, keys or addresses, so cardinality stays bounded by the config.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_responses: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub idempotency_keys: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    pub store_duration: HistogramVec,
    pub store_errors: IntCounterVec,
    pub dedupe_skipped: IntCounterVec,
    pub idempotency_evictions: IntCounterVec,
    pub queue_deliveries: IntGaugeVec,
    pub queue_oldest_pending: prometheus::GaugeVec,
    pub delivery_attempts: IntCounterVec,
    pub deliveries: IntCounterVec,
    pub delivery_lag: HistogramVec,
    pub destination_open: IntGaugeVec,
    pub spans_dropped: IntCounter,
    pub bad_requests: prometheus::IntCounter,
    pub tls_handshake_failures: prometheus::IntCounter,
    /// Follows the log thread's own count, brought up to date when rendered.
    log_lines_dropped: prometheus::IntCounter,
    /// `store_duration` per `StoreOp`, looked up once.
    store_ops: [Histogram; 4],
}

/// The idempotency store's operations, as the `operation` label names them.
#[derive(Debug, Clone, Copy)]
pub enum StoreOp {
    Claim,
    Complete,
    Release,
    Enqueue,
}

impl StoreOp {
    pub fn label(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Complete => "complete",
            Self::Release => "release",
            Self::Enqueue => "enqueue",
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            registry
                .register(Box::new(c.clone()))
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let h =
                HistogramVec::new(opts, labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
            registry
                .register(Box::new(h.clone()))
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            h
        };
        let requests = counter(
            "hookgate_requests_total",
            "Requests answered, by route and outcome.",
            &["route", "outcome"],
        );
        let request_duration = histogram(
            "hookgate_request_duration_seconds",
            "Time from request head to answer.",
            &["route"],
        );
        let upstream_responses = counter(
            "hookgate_upstream_responses_total",
            "Upstream answers by status class.",
            &["route", "class"],
        );
        let upstream_duration = histogram(
            "hookgate_upstream_duration_seconds",
            "Upstream exchange time.",
            &["route"],
        );
        let idempotency_keys = IntGaugeVec::new(
            Opts::new(
                "hookgate_idempotency_keys",
                "Claimed + delivered keys held by the memory store.",
            ),
            &["route"],
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(idempotency_keys.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let config_reloads = counter(
            "hookgate_config_reloads_total",
            "Config reloads by result.",
            &["result"],
        );
        let store_duration = histogram(
            "hookgate_store_duration_seconds",
            "Idempotency store round trips.",
            &["operation"],
        );
        let store_errors = counter(
            "hookgate_store_errors_total",
            "Idempotency store failures.",
            &["operation"],
        );
        let dedupe_skipped = counter(
            "hookgate_dedupe_skipped_total",
            "Deliveries forwarded without dedupe because the store failed and on_error is allow.",
            &["route"],
        );
        let store_ops = [
            StoreOp::Claim,
            StoreOp::Complete,
            StoreOp::Release,
            StoreOp::Enqueue,
        ]
        .map(|op| store_duration.with_label_values(&[op.label()]));
        let idempotency_evictions = counter(
            "hookgate_idempotency_evictions_total",
            "Delivered keys the memory store forgot before their ttl to stay within max_keys.",
            &["route"],
        );
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            registry
                .register(Box::new(g.clone()))
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            g
        };
        let queue_deliveries = gauge(
            "hookgate_queue_deliveries",
            "Queued deliveries per destination that are pending or dead.",
            &["route", "destination", "state"],
        );
        let queue_oldest_pending = prometheus::GaugeVec::new(
            Opts::new(
                "hookgate_queue_oldest_pending_seconds",
                "Age of the oldest delivery still pending for a destination (0 when none).",
            ),
            &["route", "destination"],
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(queue_oldest_pending.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let spans_dropped = IntCounter::new(
            "hookgate_spans_dropped_total",
            "Spans not exported: the exporter's queue was full or the collector did not take them.",
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(spans_dropped.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let destination_open = gauge(
            "hookgate_destination_open",
            "1 while a destination's breaker holds it (no attempt starts), else 0.",
            &["route", "destination"],
        );
        let delivery_attempts = counter(
            "hookgate_delivery_attempts_total",
            "Queued delivery attempts by result: the app's status class, a broker's ack or nack, timeout or unavailable.",
            &["route", "destination", "result"],
        );
        let deliveries = counter(
            "hookgate_deliveries_total",
            "Queued deliveries that reached a destination or went dead there.",
            &["route", "destination", "outcome"],
        );
        let delivery_lag = HistogramVec::new(
            HistogramOpts::new(
                "hookgate_delivery_lag_seconds",
                "Time from acceptance to delivery at a destination.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
            ]),
            &["route", "destination"],
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(delivery_lag.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let bad_requests = requests.with_label_values(&["-", "bad_request"]);
        let tls_handshake_failures = prometheus::IntCounter::new(
            "hookgate_tls_handshake_failures_total",
            "Connections whose TLS handshake failed or timed out.",
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(tls_handshake_failures.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let log_lines_dropped = prometheus::IntCounter::new(
            "hookgate_log_lines_dropped_total",
            "Log lines dropped because the log thread's buffer was full (stdout stalled).",
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        registry
            .register(Box::new(log_lines_dropped.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        Self {
            log_lines_dropped,
            store_ops,
            registry,
            requests,
            request_duration,
            upstream_responses,
            upstream_duration,
            idempotency_keys,
            config_reloads,
            store_duration,
            store_errors,
            dedupe_skipped,
            idempotency_evictions,
            queue_deliveries,
            queue_oldest_pending,
            delivery_attempts,
            deliveries,
            delivery_lag,
            destination_open,
            spans_dropped,
            bad_requests,
            tls_handshake_failures,
        }
    }

    /// The store round-trip histogram of `op`.
    pub fn store_op(&self, op: StoreOp) -> &Histogram {
        &self.store_ops[op as usize]
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let dropped = crate::logging::dropped_lines();
        self.log_lines_dropped
            .inc_by(dropped.saturating_sub(self.log_lines_dropped.get()));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `2xx`..`5xx` for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_store_operation_lands_in_its_own_series() {
        let m = Metrics::new();
        m.store_op(StoreOp::Complete).observe(0.001);
        m.store_op(StoreOp::Complete).observe(0.001);
        m.store_op(StoreOp::Release).observe(0.001);
        let text = String::from_utf8(m.render()).unwrap();
        for (op, count) in [("claim", 0), ("complete", 2), ("release", 1)] {
            let line =
                format!("hookgate_store_duration_seconds_count{{operation=\"{op}\"}} {count}\n");
            assert!(text.contains(&line), "{line} not in:\n{text}");
        }
    }
}
