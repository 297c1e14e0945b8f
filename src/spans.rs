//! Spans for an OpenTelemetry collector (PRODUCT.md §7): what a request, an enqueue and a
//! delivery attempt leave behind when `tracing.otlp` is set, and how they are handed to the
//! exporter without ever making a request wait.
//!
//! A finished span goes into a bounded queue with `try_send`: when the exporter falls behind
//! (a slow or absent collector), the span is dropped and counted, so memory stays bounded and no
//! request slows. The exporter (`server::span_export`) batches the queue into OTLP/HTTP protobuf.
//! Attributes never carry secrets, signatures, keys or bodies: only names, ids, statuses and the
//! outcome.

use crate::config::TracingSettings;
use crate::trace::Traceparent;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1 as otlp;
use prometheus::IntCounter;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Finished spans waiting for the exporter, at most.
pub const QUEUE: usize = 4096;

/// Which side of an exchange a span stands on (OTLP's `SpanKind`).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
}

/// One finished span.
pub struct Span {
    pub trace_id: u128,
    pub span_id: u64,
    /// 0: a root span.
    pub parent_id: u64,
    pub name: &'static str,
    pub kind: Kind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Attributes,
    pub events: Vec<Event>,
    /// The span's operation failed (an error status).
    pub error: Option<String>,
}

pub enum Value {
    Str(String),
    Int(i64),
}

pub type Attributes = Vec<(&'static str, Value)>;

/// Something that happened during a span: its name, when, and its attributes.
pub type Event = (&'static str, SystemTime, Attributes);

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

/// Where finished spans go: the exporter's bounded queue, and the count of those dropped.
#[derive(Clone)]
pub struct SpanSink {
    queue: mpsc::Sender<Span>,
    dropped: IntCounter,
}

impl SpanSink {
    /// A sink and the receiving end the exporter drains.
    pub fn new(dropped: IntCounter) -> (Self, mpsc::Receiver<Span>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        (Self { queue, dropped }, rx)
    }

    /// Hands a span on; drops (and counts) it when the queue is full.
    pub fn send(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    /// Counts spans lost after they left the queue (an export that failed).
    pub fn lost(&self, n: usize) {
        self.dropped.inc_by(n as u64);
    }
}

/// Whether to record a trace: never without `tracing` or with `sample: 0`; as the sender's
/// sampled flag says when it continues one; else by the `sample` ratio.
pub fn sampled(settings: Option<&TracingSettings>, given: Option<&Traceparent>) -> bool {
    let Some(settings) = settings else {
        return false;
    };
    if settings.sample <= 0.0 {
        return false;
    }
    match given {
        Some(t) => t.sampled(),
        None => rand::random::<f64>() < settings.sample,
    }
}

/// A span being recorded: its ids and start, and where it goes when it ends.
#[derive(Clone)]
pub struct OpenSpan {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_id: u64,
    pub start: SystemTime,
    sink: SpanSink,
}

impl OpenSpan {
    /// A new span of `trace_id` under `parent_id` (0: a root).
    pub fn start(sink: &SpanSink, trace_id: u128, parent_id: u64, start: SystemTime) -> Self {
        Self {
            trace_id,
            span_id: new_span_id(),
            parent_id,
            start,
            sink: sink.clone(),
        }
    }

    /// The `traceparent` a hop under this span receives (recorded: sampled).
    pub fn traceparent(&self) -> Traceparent {
        Traceparent::recorded(self.trace_id, self.span_id)
    }

    /// A child span of this one, starting at `start`.
    pub fn child(&self, start: SystemTime) -> Self {
        Self::start(&self.sink, self.trace_id, self.span_id, start)
    }

    /// Ends it now and hands it to the exporter.
    pub fn finish(
        &self,
        name: &'static str,
        kind: Kind,
        attributes: Attributes,
        events: Vec<Event>,
        error: Option<String>,
    ) {
        self.sink.send(Span {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_id: self.parent_id,
            name,
            kind,
            start: self.start,
            end: SystemTime::now(),
            attributes,
            events,
            error,
        });
    }
}

/// A fresh span id (never 0, which means "none").
pub fn new_span_id() -> u64 {
    rand::random::<u64>() | 1
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

fn key_values(attributes: Attributes) -> Vec<KeyValue> {
    attributes
        .into_iter()
        .map(|(key, value)| KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(match value {
                    Value::Str(s) => any_value::Value::StringValue(s),
                    Value::Int(n) => any_value::Value::IntValue(n),
                }),
            }),
            ..Default::default()
        })
        .collect()
}

/// A batch of spans as one OTLP/HTTP protobuf request body.
pub fn encode(spans: Vec<Span>) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message as _;
    let spans = spans
        .into_iter()
        .map(|s| otlp::Span {
            trace_id: s.trace_id.to_be_bytes().to_vec(),
            span_id: s.span_id.to_be_bytes().to_vec(),
            parent_span_id: if s.parent_id == 0 {
                Vec::new()
            } else {
                s.parent_id.to_be_bytes().to_vec()
            },
            name: s.name.to_string(),
            kind: s.kind as i32,
            start_time_unix_nano: nanos(s.start),
            end_time_unix_nano: nanos(s.end),
            attributes: key_values(s.attributes),
            events: s
                .events
                .into_iter()
                .map(|(name, at, attributes)| otlp::span::Event {
                    time_unix_nano: nanos(at),
                    name: name.to_string(),
                    attributes: key_values(attributes),
                    dropped_attributes_count: 0,
                })
                .collect(),
            status: Some(match s.error {
                // STATUS_CODE_ERROR
                Some(message) => otlp::Status { message, code: 2 },
                // STATUS_CODE_UNSET
                None => otlp::Status::default(),
            }),
            ..Default::default()
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(Resource {
                attributes: key_values(vec![("service.name", "hookgate".into())]),
                ..Default::default()
            }),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "hookgate".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    request.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;

    fn span(parent_id: u64) -> Span {
        let t = SystemTime::now();
        Span {
            trace_id: 0x0af7651916cd43dd8448eb211c80319c,
            span_id: 7,
            parent_id,
            name: "hookgate.request",
            kind: Kind::Server,
            start: t,
            end: t,
            attributes: vec![
                ("hookgate.route", "imggo".into()),
                ("http.response.status_code", 200.into()),
            ],
            events: vec![("checked", t, vec![("outcome", "forwarded".into())])],
            error: None,
        }
    }

    #[test]
    fn a_batch_encodes_as_an_otlp_export_request() {
        let body = encode(vec![span(0xb7ad6b7169203331), span(0)]);
        let decoded = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let spans = &decoded.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        assert_eq!(
            spans[0].trace_id,
            0x0af7651916cd43dd8448eb211c80319cu128.to_be_bytes()
        );
        assert_eq!(spans[0].parent_span_id, 0xb7ad6b7169203331u64.to_be_bytes());
        assert!(
            spans[1].parent_span_id.is_empty(),
            "a root span has no parent"
        );
        assert_eq!(spans[0].kind, 2);
        assert_eq!(spans[0].attributes[0].key, "hookgate.route");
        assert_eq!(spans[0].events[0].name, "checked");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let dropped = IntCounter::new("d", "d").unwrap();
        let (sink, _rx) = SpanSink::new(dropped.clone());
        for _ in 0..QUEUE + 10 {
            sink.send(span(0));
        }
        assert_eq!(dropped.get(), 10);
    }
}
