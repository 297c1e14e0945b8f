//! Spans to an OpenTelemetry collector (PRODUCT.md §7): one trace per delivery, from the sender's
//! `traceparent` through the request, the enqueue and every attempt, received here by a stand-in
//! OTLP/HTTP collector that decodes the protobuf. A collector that is down costs no delivery and
//! is counted; `sample: 0` sends nothing.

use crate::harness::*;
use crate::queue::eventually_metric;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use std::time::Duration;

const SENDER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const SENDER_SPAN: &str = "b7ad6b7169203331";

fn route(app: &Upstream, analytics: &Upstream, tracing: &str) -> String {
    format!(
        r#"{tracing}store:
  url: "file:state.db"
routes:
  - name: q
    path: /webhooks/q
    mode: queue
    https_only: false
    upstreams:
      - name: app
        url: "{}"
      - name: analytics
        url: "{}"
    signature: {{ scheme: imggo, secrets: ["{SECRET}"] }}
    idempotency: {{ key: ["/job_id"] }}
    delivery:
      timeout: 2s
      retry: [100ms, 100ms]
      jitter: 0%
"#,
        app.url(),
        analytics.url()
    )
}

async fn send_traced(gw: &Gateway, job: &str) -> serde_json::Value {
    let body = delivery("job.completed", job);
    let resp = client()
        .post(gw.http_url("/webhooks/q"))
        .header("X-ImgGo-Signature", imggo_signature(&body))
        .header("traceparent", format!("00-{SENDER_TRACE}-{SENDER_SPAN}-01"))
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, code, json) = answer(resp).await;
    assert_eq!((status, code.as_str()), (200, "queued"));
    json
}

/// Every span the collector received, decoded.
fn spans(collector: &Upstream) -> Vec<Span> {
    collector
        .received()
        .iter()
        .inspect(|r| {
            assert_eq!(r.target, "/v1/traces");
            assert_eq!(r.header("Content-Type"), Some("application/x-protobuf"));
        })
        .flat_map(|r| {
            ExportTraceServiceRequest::decode(r.body.as_slice())
                .expect("an OTLP protobuf export")
                .resource_spans
        })
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(n) => n.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn one_queued_delivery_is_one_trace_from_the_sender_to_every_attempt() {
    let collector = Upstream::start().await;
    let (app, analytics) = (Upstream::start().await, Upstream::start().await);
    analytics.then(500, Duration::ZERO);
    let gw = Gateway::start(&route(
        &app,
        &analytics,
        &format!("tracing: {{ otlp: \"{}\", sample: 1 }}\n", collector.url()),
    ))
    .await;
    let id = send_traced(&gw, "t1").await["delivery_id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("both destinations delivered", || {
        app.count() == 1 && analytics.count() == 2
    })
    .await;
    eventually_within(
        "five spans at the collector",
        Duration::from_secs(10),
        || spans(&collector).len() >= 5,
    )
    .await;
    let spans = spans(&collector);
    assert_eq!(spans.len(), 5, "{spans:#?}");
    for s in &spans {
        assert_eq!(hex(&s.trace_id), SENDER_TRACE, "one trace: {}", s.name);
    }
    let named = |n: &str| spans.iter().filter(|s| s.name == n).collect::<Vec<_>>();
    let request = named("hookgate.request");
    assert_eq!(request.len(), 1);
    let request = request[0];
    assert_eq!(
        hex(&request.parent_span_id),
        SENDER_SPAN,
        "a child of the sender's span"
    );
    assert_eq!(attr(request, "hookgate.route").as_deref(), Some("q"));
    assert_eq!(attr(request, "hookgate.outcome").as_deref(), Some("queued"));
    assert_eq!(
        attr(request, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(!request.events.is_empty(), "the checks as events");

    let enqueue = named("hookgate.enqueue");
    assert_eq!(enqueue.len(), 1);
    assert_eq!(enqueue[0].parent_span_id, request.span_id);
    assert_eq!(
        attr(enqueue[0], "hookgate.delivery_id").as_deref(),
        Some(id.as_str())
    );

    let mut attempts: Vec<(String, String, Option<String>)> = named("hookgate.attempt")
        .iter()
        .map(|s| {
            assert_eq!(s.parent_span_id, request.span_id, "linked to the request");
            assert_eq!(
                attr(s, "hookgate.delivery_id").as_deref(),
                Some(id.as_str())
            );
            (
                attr(s, "hookgate.destination").unwrap(),
                attr(s, "hookgate.attempt").unwrap(),
                attr(s, "http.response.status_code"),
            )
        })
        .collect();
    attempts.sort();
    assert_eq!(
        attempts,
        [
            ("analytics".into(), "1".into(), Some("500".into())),
            ("analytics".into(), "2".into(), Some("200".into())),
            ("app".into(), "1".into(), Some("200".into())),
        ]
    );
    // The app's traceparent names its attempt's span.
    let got = app.received()[0].header("traceparent").unwrap().to_string();
    let app_span = spans
        .iter()
        .find(|s| {
            s.name == "hookgate.attempt"
                && attr(s, "hookgate.destination").as_deref() == Some("app")
        })
        .unwrap();
    assert_eq!(
        got,
        format!("00-{SENDER_TRACE}-{}-01", hex(&app_span.span_id))
    );
    let body = String::from_utf8_lossy(&collector.received()[0].body).to_string();
    assert!(!body.contains(SECRET), "no secret in a span");
    assert!(!body.contains("job.completed"), "no body in a span");
}

#[tokio::test]
async fn a_collector_that_is_down_costs_no_delivery_and_its_spans_are_counted() {
    let (app, analytics) = (Upstream::start().await, Upstream::start().await);
    let (_reserved, refused) = refused_port();
    let gw = Gateway::start(&route(
        &app,
        &analytics,
        &format!("tracing: {{ otlp: \"http://127.0.0.1:{refused}\" }}\n"),
    ))
    .await;
    for i in 0..3 {
        send_traced(&gw, &format!("d{i}")).await;
    }
    eventually("every delivery, collector or not", || {
        app.count() == 3 && analytics.count() == 3
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw.metric("hookgate_spans_dropped_total", &[]).await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no span counted as dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sample_zero_sends_nothing() {
    let collector = Upstream::start().await;
    let (app, analytics) = (Upstream::start().await, Upstream::start().await);
    let gw = Gateway::start(&route(
        &app,
        &analytics,
        &format!("tracing: {{ otlp: \"{}\", sample: 0 }}\n", collector.url()),
    ))
    .await;
    send_traced(&gw, "z1").await;
    eventually_metric(
        &gw,
        "hookgate_deliveries_total",
        &[("destination", "analytics"), ("outcome", "delivered")],
        1.0,
    )
    .await;
    // Longer than a batch waits to fill, twice over.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(collector.count(), 0, "sample: 0 exports no span");
    assert_eq!(
        app.received()[0]
            .header("traceparent")
            .map(|t| t.starts_with(&format!("00-{SENDER_TRACE}-{SENDER_SPAN}"))),
        Some(true),
        "the sender's traceparent is passed on as it came"
    );
}

#[test]
fn check_names_a_bad_tracing_block_by_field() {
    let (code, err) = check_config(
        "listen: [{ addr: \"127.0.0.1:18080\" }]\ntracing: { otlp: \"collector\", sample: 2 }\nroutes:\n  - name: r\n    path: /r\n    upstream: \"http://127.0.0.1:5000\"\n",
    );
    assert_eq!(code, Some(1));
    for expected in [
        "tracing.sample: 2 is not a share from 0 to 1",
        "tracing.otlp:",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}
