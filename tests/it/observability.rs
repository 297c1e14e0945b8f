//! PRODUCT.md §7: metrics after a known mix, health, readiness, one log event per request.

use crate::harness::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_a_known_mix() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "routes:\n{}",
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    ))
    .await;
    let url = gw.http_url("/webhooks/imggo");
    let body = delivery("job.completed", "m1");
    post_signed(&url, &body).await; // forwarded
    post_signed(&url, &body).await; // duplicate
    post_signed(&url, &delivery("job.queued", "m2")).await; // ignored
    client().post(&url).body(body.clone()).send().await.unwrap(); // signature_missing
    post_signed(&gw.http_url("/x/secret-path"), &body).await; // route_not_found
    up.then(503, Duration::ZERO);
    post_signed(&url, &delivery("job.completed", "m3")).await; // forwarded (5xx)

    let m = |outcome: &'static str, route: &'static str| {
        let gw = &gw;
        async move {
            gw.metric(
                "hookgate_requests_total",
                &[("route", route), ("outcome", outcome)],
            )
            .await
        }
    };
    assert_eq!(m("forwarded", "imggo").await, 2.0);
    assert_eq!(m("duplicate", "imggo").await, 1.0);
    assert_eq!(m("ignored", "imggo").await, 1.0);
    assert_eq!(m("signature_missing", "imggo").await, 1.0);
    assert_eq!(m("route_not_found", "-").await, 1.0);
    assert_eq!(
        gw.metric(
            "hookgate_upstream_responses_total",
            &[("route", "imggo"), ("class", "2xx")]
        )
        .await,
        1.0
    );
    assert_eq!(
        gw.metric(
            "hookgate_upstream_responses_total",
            &[("route", "imggo"), ("class", "5xx")]
        )
        .await,
        1.0
    );
    assert_eq!(
        gw.metric(
            "hookgate_request_duration_seconds_count",
            &[("route", "imggo")]
        )
        .await,
        5.0
    );
    assert_eq!(
        gw.metric(
            "hookgate_upstream_duration_seconds_count",
            &[("route", "imggo")]
        )
        .await,
        2.0
    );
    // m1 delivered; m3 released after the 503.
    assert_eq!(
        gw.metric("hookgate_idempotency_keys", &[("route", "imggo")])
            .await,
        1.0
    );
    let text = gw.metrics().await;
    assert!(
        !text.contains("secret-path"),
        "labels never carry raw paths"
    );
    assert!(!text.contains("127.0.0.1"), "labels never carry addresses");

    // Health and readiness.
    let admin = |p: &str| reqwest::get(format!("http://127.0.0.1:{}{p}", gw.admin));
    assert_eq!(admin("/healthz").await.unwrap().status(), 200);
    assert_eq!(admin("/readyz").await.unwrap().status(), 200);
    // The admin paths are not served on the webhook listener.
    assert_eq!(
        client()
            .get(gw.http_url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // One structured event per request, with no secret, signature or body in it.
    // Each event is written before its answer leaves; the poll only absorbs the log file's
    // buffering.
    let request_events = || {
        gw.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "hookgate::request")
            .collect::<Vec<_>>()
    };
    eventually("7 request log events", || request_events().len() >= 7).await;
    let log = gw.log();
    let events = request_events();
    assert_eq!(events.len(), 7, "{log}");
    let e = events.iter().find(|e| e["outcome"] == "duplicate").unwrap();
    for field in ["request_id", "route", "client", "status", "duration_ms"] {
        assert!(!e[field].is_null(), "{field} missing in {e}");
    }
    assert_eq!(
        events.iter().find(|e| e["outcome"] == "forwarded").unwrap()["upstream_status"],
        200
    );
    assert!(!log.contains(SECRET));
    assert!(!log.contains(&imggo_signature(&body)));
    assert!(!log.contains("cdn.example"), "bodies are never logged");
}
