//! PRODUCT.md §3 idempotency: claimed only after every check, delivered only on an upstream 2xx,
//! released otherwise, per route, and decided by the app's answer even if the sender hangs up.

use crate::harness::*;
use std::time::{Duration, Instant};

async fn two_routes(up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        "routes:\n{}{}",
        imggo_route("a", "/webhooks/a", &up.url(), ""),
        imggo_route("b", "/webhooks/b", &up.url(), "")
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivery_is_answered_already_processed() {
    let up = Upstream::start().await;
    let gw = two_routes(&up).await;
    let body = delivery("job.completed", "dup");
    assert_eq!(
        post_signed(&gw.http_url("/webhooks/a"), &body)
            .await
            .status(),
        200
    );
    let resp = post_signed(&gw.http_url("/webhooks/a"), &body).await;
    assert_eq!(
        resp.headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    let (s, _, json) = answer(resp).await;
    assert_eq!(
        (s, json),
        (200, serde_json::json!({"status": "already_processed"}))
    );
    // The key is (event, job_id): a different event of the same job is a new delivery.
    let failed = delivery("job.failed", "dup");
    assert_eq!(
        post_signed(&gw.http_url("/webhooks/a"), &failed)
            .await
            .status(),
        200
    );
    // Keys are scoped to their route.
    assert_eq!(
        post_signed(&gw.http_url("/webhooks/b"), &body)
            .await
            .status(),
        200
    );
    assert_eq!(up.count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failure_releases_the_claim() {
    let up = Upstream::start().await;
    let gw = two_routes(&up).await;
    let body = delivery("job.completed", "retry");
    up.then(500, Duration::ZERO);
    let (s, _, json) = answer(post_signed(&gw.http_url("/webhooks/a"), &body).await).await;
    assert_eq!(
        (s, json),
        (500, serde_json::json!({"upstream_status": 500})),
        "the app's 500 is relayed"
    );
    assert_eq!(
        post_signed(&gw.http_url("/webhooks/a"), &body)
            .await
            .status(),
        200,
        "the retry is forwarded"
    );
    assert_eq!(
        answer(post_signed(&gw.http_url("/webhooks/a"), &body).await)
            .await
            .1,
        "already_processed"
    );
    assert_eq!(up.count(), 2);
}

/// Every refusal before the app's 2xx leaves the key free: a check that claimed it first would
/// answer the real delivery `already_processed` and the app would never get it.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_delivery_claims_nothing_and_the_real_one_goes_through() {
    let (reserved, port) = refused_port();
    let gw = Gateway::start(&format!(
        "routes:\n{}",
        imggo_route("a", "/webhooks/a", &format!("http://127.0.0.1:{port}"), "")
    ))
    .await;
    let url = gw.http_url("/webhooks/a");
    let body = delivery("job.completed", "same");
    let send = |signature: Option<String>, body: Vec<u8>| {
        let url = url.clone();
        async move {
            let mut req = client()
                .post(&url)
                .header("Content-Type", "application/json")
                .body(body);
            if let Some(s) = signature {
                req = req.header("X-ImgGo-Signature", s);
            }
            let (status, code, _) = answer(req.send().await.unwrap()).await;
            (status, code)
        }
    };
    assert_eq!(
        send(None, body.clone()).await,
        (401, "signature_missing".into())
    );
    assert_eq!(
        send(Some(imggo_signature_with("wrong", &body)), body.clone()).await,
        (401, "signature_invalid".into())
    );
    // The same key in a body the schema refuses (a completed job needs its result).
    let invalid = br#"{"event":"job.completed","job_id":"same","status":"completed"}"#.to_vec();
    assert_eq!(
        send(Some(imggo_signature(&invalid)), invalid).await,
        (422, "schema_violation".into())
    );
    // Admitted, but the app cannot be reached: released (§3, 502).
    assert_eq!(
        send(Some(imggo_signature(&body)), body.clone()).await,
        (502, "upstream_unavailable".into())
    );

    let app = Upstream::start_on_reserved(reserved);
    let (status, _, _) = answer(post_signed(&url, &body).await).await;
    assert_eq!(status, 200, "the real delivery is forwarded");
    assert_eq!(app.count(), 1);
    assert_eq!(
        answer(post_signed(&url, &body).await).await.1,
        "already_processed"
    );
    assert_eq!(app.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_key_answers_409_with_retry_after() {
    let up = Upstream::start().await;
    let gw = two_routes(&up).await;
    let body = delivery("job.completed", "slow");
    up.then(200, Duration::from_millis(1500));
    let url = gw.http_url("/webhooks/a");
    let first = tokio::spawn({
        let (url, body) = (url.clone(), body.clone());
        async move { post_signed(&url, &body).await.status() }
    });
    eventually("the first delivery to reach the app", || up.count() == 1).await;
    let resp = post_signed(&url, &body).await;
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let (s, code, _) = answer(resp).await;
    assert_eq!((s, code.as_str()), (409, "delivery_in_progress"));
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        answer(post_signed(&url, &body).await).await.1,
        "already_processed"
    );
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sender_hanging_up_does_not_abort_the_delivery() {
    let up = Upstream::start().await;
    let gw = two_routes(&up).await;
    let body = delivery("job.completed", "hangup");
    up.then(200, Duration::from_millis(800));
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let r = quick
        .post(gw.http_url("/webhooks/a"))
        .header("X-ImgGo-Signature", imggo_signature(&body))
        .body(body.clone())
        .send()
        .await;
    assert!(r.is_err(), "the sender gave up before the app answered");
    // The app's answer was 2xx, so the key is delivered and a retry is a duplicate; until the
    // gateway has that answer, a retry is told the delivery is in progress.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        let code = answer(post_signed(&gw.http_url("/webhooks/a"), &body).await)
            .await
            .1;
        if code != "delivery_in_progress" || std::time::Instant::now() > deadline {
            break code;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, "already_processed");
    assert_eq!(up.count(), 1, "the app saw the delivery exactly once");
}

#[tokio::test]
async fn keys_the_memory_store_forgets_early_are_counted() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "store:\n  url: memory\n  max_keys: 50\nroutes:\n{}",
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    ))
    .await;
    for i in 0..200 {
        let r = post_signed(
            &gw.http_url("/webhooks/imggo"),
            &delivery("job.completed", &format!("ev{i}")),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let evicted = gw
        .metric(
            "hookgate_idempotency_evictions_total",
            &[("route", "imggo")],
        )
        .await;
    assert!(
        evicted >= 100.0,
        "{evicted} early evictions counted of 150+"
    );
    assert!(
        gw.settled_log().await.contains("store.max_keys"),
        "the eviction is logged"
    );
}

/// A delivered key is remembered for `ttl` and then forgotten (PRODUCT.md §2), on every store a
/// forward route can use: the memory store, Redis, the file store and Postgres.
#[tokio::test(flavor = "multi_thread")]
async fn a_delivered_key_is_forgotten_after_its_ttl_on_every_store() {
    require_shared_redis();
    let db = TestDatabase::create();
    let prefix = format!("ttl{}", rand_u64());
    let stores = [
        ("memory", String::new()),
        (
            "redis",
            format!("store: {{ url: \"redis://127.0.0.1:6379/0\", prefix: \"{prefix}\" }}\n"),
        ),
        ("file", "store: { url: \"file:state.db\" }\n".to_string()),
        ("postgres", format!("store: {{ url: \"{}\" }}\n", db.url())),
    ];
    for (name, store) in stores {
        let up = Upstream::start().await;
        let route = ImggoRoute::new("a", "/webhooks/a", &up.url()).ttl("1s");
        let gw = Gateway::start(&format!("{store}routes:\n{}", route.yaml())).await;
        gw.wait_ready().await;
        let url = gw.http_url("/webhooks/a");
        let body = delivery("job.completed", "short-lived");
        assert_eq!(
            answer(post_signed(&url, &body).await).await.0,
            200,
            "{name}"
        );
        assert_eq!(
            answer(post_signed(&url, &body).await).await.1,
            "already_processed",
            "{name}: remembered within its ttl"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, code, _) = answer(post_signed(&url, &body).await).await;
            if status == 200 && code != "already_processed" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: still remembered after 10 s ({code})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(up.count(), 2, "{name}: forwarded again once forgotten");
    }
}
