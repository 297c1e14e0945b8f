//! The retry schedule of queue routes (PRODUCT.md §9) as an app sees it: a 2xx counts only within
//! `delivery.timeout`, `Retry-After` is honoured on 429 and 503 (up to an hour) and ignored on
//! other statuses, jitter moves each wait within its bounds; and what §7 counts of it.

use crate::harness::*;
use crate::queue::{eventually_metric, queue, queue_config};
use std::time::Duration;

const TOKEN: &str = "schedule-token";

/// The route of `queue::queue_config` (job.failed goes to `app` only), with the log's token.
async fn gateway(app: &Upstream, delivery: &str) -> Gateway {
    let analytics = Upstream::start().await;
    let cfg = queue_config(&app.url(), &analytics.url(), delivery);
    let gw = Gateway::start(&format!("  token: \"{TOKEN}\"\n{cfg}")).await;
    gw.wait_ready().await;
    gw
}

async fn detail(gw: &Gateway, id: &str) -> serde_json::Value {
    client()
        .get(gw.admin_url(&format!("/api/deliveries/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until the app's destination counts its one delivery delivered.
async fn delivered_once(gw: &Gateway) {
    eventually_metric(
        gw,
        "hookgate_deliveries_total",
        &[("destination", "app"), ("outcome", "delivered")],
        1.0,
    )
    .await;
}

fn attempt_numbers(app: &Upstream) -> Vec<String> {
    app.received()
        .iter()
        .map(|r| r.header("Hookgate-Attempt").unwrap_or("-").to_string())
        .collect()
}

#[tokio::test]
async fn an_answer_after_the_timeout_is_a_timeout_and_the_retry_delivers_it() {
    let app = Upstream::start().await;
    // The first attempt's 200 comes after the timeout: it must not count.
    app.then(200, Duration::from_millis(1500));
    let gw = gateway(
        &app,
        "      timeout: 300ms\n      retry: [100ms, 100ms]\n      jitter: 0%\n",
    )
    .await;
    let (_, _, id) = queue(&gw, &delivery("job.failed", "late")).await;
    let id = id.unwrap();
    delivered_once(&gw).await;
    assert_eq!(attempt_numbers(&app), ["1", "2"]);
    let timeouts = [("destination", "app"), ("result", "timeout")];
    assert_eq!(
        gw.metric("hookgate_delivery_attempts_total", &timeouts)
            .await,
        1.0
    );
    let ok = [("destination", "app"), ("result", "2xx")];
    assert_eq!(
        gw.metric("hookgate_delivery_attempts_total", &ok).await,
        1.0
    );
    // Accepted to delivered: at least the timeout and the retry's wait.
    let lag = [("route", "q"), ("destination", "app")];
    assert_eq!(
        gw.metric("hookgate_delivery_lag_seconds_count", &lag).await,
        1.0
    );
    let lag_sum = gw.metric("hookgate_delivery_lag_seconds_sum", &lag).await;
    assert!((0.4..5.0).contains(&lag_sum), "lag {lag_sum}");

    let d = detail(&gw, &id).await;
    let first = &d["attempts"][0];
    assert_eq!(first["destination"], "app", "{d}");
    assert_eq!(first["n"], 1, "{d}");
    assert!(first["status"].is_null(), "a timeout has no status: {d}");
    assert!(
        first["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{d}"
    );
    assert!(
        first["duration_ms"].as_u64().is_some_and(|ms| ms >= 300),
        "{d}"
    );
    assert!(first["started_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(d["attempts"][1]["status"], 200, "{d}");
    let app_state = &d["destinations"][0];
    assert_eq!(
        (app_state["state"].as_str(), app_state["attempts"].as_u64()),
        (Some("delivered"), Some(2)),
        "{d}"
    );
    assert_eq!(app_state["last_status"], 200, "{d}");
}

#[tokio::test]
async fn a_4xx_is_retried_and_counted_by_its_class() {
    let app = Upstream::start().await;
    app.then(404, Duration::ZERO);
    let gw = gateway(&app, "      retry: [100ms]\n      jitter: 0%\n").await;
    queue(&gw, &delivery("job.failed", "four")).await;
    delivered_once(&gw).await;
    assert_eq!(
        gw.metric(
            "hookgate_delivery_attempts_total",
            &[("destination", "app"), ("result", "4xx")]
        )
        .await,
        1.0
    );
    assert_eq!(attempt_numbers(&app), ["1", "2"]);
}

#[tokio::test]
async fn retry_after_is_honoured_on_429_and_ignored_on_500() {
    let app = Upstream::start().await;
    let gw = gateway(&app, "      retry: [100ms]\n      jitter: 0%\n").await;
    app.then_retry_after(429, 2);
    queue(&gw, &delivery("job.failed", "slow-down")).await;
    eventually("the retry after the 429", || app.count() == 2).await;
    let got = app.received();
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_secs(2),
        "retried {waited:?} after a 429 with Retry-After: 2"
    );

    app.then_retry_after(500, 3);
    queue(&gw, &delivery("job.failed", "broken")).await;
    eventually("the retry after the 500", || app.count() == 4).await;
    let got = app.received();
    let waited = got[3].at - got[2].at;
    assert!(
        waited < Duration::from_millis(1500),
        "a 500's Retry-After: 3 was honoured ({waited:?}); only 429 and 503 are"
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_an_hour_waits_an_hour() {
    let app = Upstream::start().await;
    let gw = gateway(&app, "      retry: [100ms]\n      jitter: 0%\n").await;
    app.then_retry_after(503, 7200);
    let (_, _, id) = queue(&gw, &delivery("job.failed", "two-hours")).await;
    let id = id.unwrap();
    let d = json_once(
        &gw.admin_url(&format!("/api/deliveries/{id}")),
        Some(TOKEN),
        |d| d["destinations"][0]["last_status"] == 503,
    )
    .await;
    let next = d["destinations"][0]["next_attempt_at"]
        .as_str()
        .unwrap_or_else(|| panic!("a next attempt: {d}"));
    let next = humantime::parse_rfc3339(next).unwrap();
    let wait = next
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        wait > Duration::from_secs(3600 - 60) && wait <= Duration::from_secs(3600),
        "the next attempt is {wait:?} away (Retry-After: 7200, capped at 1h)"
    );
    assert_eq!(app.count(), 1);
}

#[tokio::test]
async fn jitter_moves_each_wait_within_its_bounds() {
    const DELIVERIES: usize = 8;
    let app = Upstream::start().await;
    app.always(500, Duration::ZERO);
    // Each wait is 400 ms moved by up to 50% either way: 200 to 600 ms.
    let gw = gateway(
        &app,
        "      retry: [400ms, 400ms, 400ms]\n      jitter: 50%\n",
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..DELIVERIES {
        ids.push(
            queue(&gw, &delivery("job.failed", &format!("j{i}")))
                .await
                .2
                .unwrap(),
        );
    }
    eventually_within("every attempt", Duration::from_secs(20), || {
        app.count() == DELIVERIES * 4
    })
    .await;
    let received = app.received();
    let mut waits = Vec::new();
    for id in &ids {
        let at: Vec<_> = received
            .iter()
            .filter(|r| r.header("Hookgate-Delivery-Id") == Some(id))
            .map(|r| r.at)
            .collect();
        waits.extend(at.windows(2).map(|w| w[1] - w[0]));
    }
    let (shortest, longest) = (*waits.iter().min().unwrap(), *waits.iter().max().unwrap());
    assert!(
        shortest >= Duration::from_millis(200),
        "a wait of {shortest:?} is below 400 ms - 50%"
    );
    // 600 ms, plus the worker's wake-up on a busy machine.
    assert!(
        longest <= Duration::from_millis(900),
        "a wait of {longest:?} is above 400 ms + 50%"
    );
    assert!(
        longest - shortest >= Duration::from_millis(100),
        "{} waits all within {:?} of each other: no jitter",
        waits.len(),
        longest - shortest
    );
}
