//! How a request ended, recorded once: its `hookgate_requests_total` outcome, its duration and
//! the one structured log event (PRODUCT.md §7). Every exit of the handler goes through here.

use super::active::RouteState;
use crate::metrics::Metrics;
use crate::rejection::Answer;
use crate::spans::{Kind, OpenSpan, Value};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The app answered with this status; it was relayed.
    Forwarded { status: u16 },
    /// The gateway answered itself.
    Answered(Answer),
    /// The client went away or broke the protocol before an answer could be sent.
    ClientClosed,
}

impl Outcome {
    /// The `outcome` label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Forwarded { .. } => "forwarded",
            Outcome::Answered(a) => a.outcome(),
            Outcome::ClientClosed => "client_closed",
        }
    }

    /// The status the sender got (499, nginx's "client closed request", when none).
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Forwarded { status } => *status,
            Outcome::Answered(a) => a.status(),
            Outcome::ClientClosed => 499,
        }
    }
}

/// What the request's log event says besides its outcome.
pub struct RequestLog {
    pub request_id: String,
    /// The W3C trace id, written as 32 hex digits in the log event.
    pub trace_id: u128,
    pub route: Option<Arc<str>>,
    /// `None` when a trusted proxy forwarded something that is not an address.
    pub client: Option<IpAddr>,
    pub started: Instant,
    /// The request's span, when its trace is recorded.
    pub span: Option<OpenSpan>,
}

/// The client address as logged: `unknown` when a trusted proxy forwarded something else.
struct ClientAddr(Option<IpAddr>);

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// Counts and logs one request's outcome. `state` is the matched route's (its metric series
/// are looked up once per config load), `None` when no route matched.
pub fn record(metrics: &Metrics, log: &RequestLog, state: Option<&RouteState>, outcome: &Outcome) {
    let route = log.route.as_deref().unwrap_or("-");
    let elapsed = log.started.elapsed();
    match (state, outcome) {
        (Some(s), Outcome::Forwarded { .. }) => s.forwarded.inc(),
        _ => metrics
            .requests
            .with_label_values(&[route, outcome.label()])
            .inc(),
    }
    match state {
        Some(s) => s.request_duration.observe(elapsed.as_secs_f64()),
        None => metrics
            .request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64()),
    }
    let upstream_status = match outcome {
        Outcome::Forwarded { status } => Some(*status),
        _ => None,
    };
    if let Some(span) = &log.span {
        let now = std::time::SystemTime::now();
        let mut attributes: Vec<(&'static str, Value)> = vec![
            ("hookgate.route", route.into()),
            ("hookgate.outcome", outcome.label().into()),
            (
                "http.response.status_code",
                i64::from(outcome.status()).into(),
            ),
        ];
        if let Some(s) = upstream_status {
            attributes.push(("hookgate.upstream_status", i64::from(s).into()));
        }
        let event = vec![
            ("hookgate.outcome", outcome.label().into()),
            (
                "http.response.status_code",
                i64::from(outcome.status()).into(),
            ),
        ];
        let error = (outcome.status() >= 500).then(|| outcome.label().to_string());
        span.finish(
            "hookgate.request",
            Kind::Server,
            attributes,
            vec![("checks done", now, event)],
            error,
        );
    }
    tracing::info!(
        target: "hookgate::request",
        request_id = log.request_id.as_str(),
        trace_id = %format_args!("{:032x}", log.trace_id),
        route,
        client = %ClientAddr(log.client),
        outcome = outcome.label(),
        status = outcome.status(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        upstream_status,
        "request"
    );
}
