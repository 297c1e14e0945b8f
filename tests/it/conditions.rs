//! A destination's `when` (PRODUCT.md §9): each app gets exactly the deliveries its CEL
//! condition selects, over nested body fields, headers and the event; a condition that cannot be
//! evaluated counts as false; a delivery no destination wants is accepted and delivered to none.

use crate::harness::*;

fn route(big: &str, eu: &str, failed: &str) -> String {
    format!(
        r#"store:
  url: "file:state.db"
routes:
  - name: q
    path: /webhooks/q
    mode: queue
    https_only: false
    upstreams:
      - name: big
        url: "{big}"
        when: 'body.result.total_amount > 1000.0'
      - name: eu
        url: "{eu}"
        when: "headers['x-region'] == 'eu' && body.result.tags.exists(t, t == 'vip')"
      - name: failed
        url: "{failed}"
        when: "event == 'job.failed'"
    signature: {{ scheme: imggo, secrets: ["{SECRET}"] }}
    events: {{ pointer: /event, allow: [job.completed, job.failed] }}
    idempotency: {{ key: ["/event", "/job_id"] }}
    delivery:
      timeout: 2s
      retry: [100ms]
      jitter: 0%
"#
    )
}

async fn send(gw: &Gateway, body: &serde_json::Value, region: &str) -> (u16, String, String) {
    let body = serde_json::to_vec(body).unwrap();
    let resp = client()
        .post(gw.http_url("/webhooks/q"))
        .header("X-ImgGo-Signature", imggo_signature(&body))
        .header("X-Region", region)
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, code, json) = answer(resp).await;
    (
        status,
        code,
        json["delivery_id"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn each_destination_gets_exactly_what_its_condition_selects() {
    let (big, eu, failed) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let gw = Gateway::start(&route(&big.url(), &eu.url(), &failed.url())).await;
    let job = |id: &str, event: &str, amount: serde_json::Value, tags: &[&str]| serde_json::json!({"event": event, "job_id": id, "result": {"total_amount": amount, "tags": tags}});
    let cases = [
        // (body, region, big, eu, failed)
        (
            job("1", "job.completed", 1500.0.into(), &[]),
            "us",
            true,
            false,
            false,
        ),
        (
            job("2", "job.completed", 10.0.into(), &["vip"]),
            "eu",
            false,
            true,
            false,
        ),
        (
            job("3", "job.failed", 2000.0.into(), &["vip"]),
            "eu",
            true,
            true,
            true,
        ),
        (
            job("4", "job.failed", 5.0.into(), &["vip"]),
            "us",
            false,
            false,
            true,
        ),
    ];
    let mut ids = Vec::new();
    for (body, region, ..) in &cases {
        let (status, code, id) = send(&gw, body, region).await;
        assert_eq!((status, code.as_str()), (200, "queued"));
        ids.push(id);
    }
    // The amount as a string cannot be compared: an evaluation error, counted as false.
    let (status, code, odd) = send(&gw, &job("5", "job.completed", "lots".into(), &[]), "us").await;
    assert_eq!(
        (status, code.as_str()),
        (200, "queued"),
        "accepted all the same"
    );

    let want = |pick: fn(&(serde_json::Value, &str, bool, bool, bool)) -> bool| {
        cases.iter().filter(|c| pick(c)).count()
    };
    eventually("every selected delivery arrived", || {
        big.count() == want(|c| c.2)
            && eu.count() == want(|c| c.3)
            && failed.count() == want(|c| c.4)
    })
    .await;
    for (i, (_, _, to_big, to_eu, to_failed)) in cases.iter().enumerate() {
        let id = &ids[i];
        assert_eq!(
            big.received_with("Hookgate-Delivery-Id", id).len(),
            *to_big as usize
        );
        assert_eq!(
            eu.received_with("Hookgate-Delivery-Id", id).len(),
            *to_eu as usize
        );
        assert_eq!(
            failed.received_with("Hookgate-Delivery-Id", id).len(),
            *to_failed as usize
        );
    }

    // The delivery no destination selected: delivered to none, and a copy is a duplicate.
    let url = gw.admin_url(&format!("/api/deliveries/{odd}"));
    let detail = json_once(&url, None, |d| d["state"].is_string()).await;
    assert_eq!(detail["state"], "delivered", "{detail}");
    assert_eq!(detail["destinations"], serde_json::json!([]), "{detail}");
    let (status, code, _) = send(&gw, &job("5", "job.completed", "lots".into(), &[]), "us").await;
    assert_eq!((status, code.as_str()), (200, "already_processed"));
    let log = gw.settled_log().await;
    assert!(
        log.contains("a destination's when could not be evaluated") && log.contains(&odd),
        "the failed condition is logged with the delivery id: {log}"
    );
    assert!(!log.contains("lots"), "a body value is never logged");
    assert_eq!(big.count() + eu.count() + failed.count(), 6);
}
