//! The Redis store (issue: many replicas, one memory): replicas sharing Redis forward a delivery
//! at most once; claims survive a crashed replica only until `lease`; outages answer per
//! `on_error` and recover without a restart.

use crate::harness::*;
use std::process::Command;
use std::time::Duration;

fn unique_prefix() -> String {
    format!("hookgate-it-{}", uuid::Uuid::new_v4().simple())
}

fn store(url: &str, prefix: &str, on_error: &str) -> String {
    if url == SHARED_REDIS {
        require_shared_redis();
    }
    format!("store: {{ url: \"{url}\", prefix: \"{prefix}\", on_error: {on_error} }}\n")
}

/// A gateway with one ImgGo route to `up`, keyed on a Redis of the test's own (its port, to
/// start it again), with `on_error` as given.
async fn on_private_redis(up: &Upstream, on_error: &str) -> (u16, PrivateRedis, Gateway) {
    let port = free_port();
    let redis = PrivateRedis::start_on(port);
    let config = format!(
        "{}routes:\n{}",
        store(&format!("redis://127.0.0.1:{port}/0"), "it", on_error),
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    );
    let gw = Gateway::start(&config).await;
    gw.wait_ready().await;
    (port, redis, gw)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_forward_a_delivery_at_most_once() {
    let up = Upstream::start().await;
    up.always(200, Duration::from_millis(300));
    let config = format!(
        "{}routes:\n{}",
        store(SHARED_REDIS, &unique_prefix(), "reject"),
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    );
    let (a, b) = tokio::join!(Gateway::start(&config), Gateway::start(&config));
    // Each replica connects to Redis in the background: wait until both serve.
    tokio::join!(a.wait_ready(), b.wait_ready());
    let body = delivery("job.completed", "concurrent");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = if i % 2 == 0 {
            a.http_url("/webhooks/imggo")
        } else {
            b.http_url("/webhooks/imggo")
        };
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            answer(post_signed(&url, &body).await).await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        let (status, code, _) = t.await.unwrap();
        outcomes.push((status, code));
    }
    let forwarded = outcomes
        .iter()
        .filter(|(s, c)| *s == 200 && c.is_empty())
        .count();
    assert_eq!(up.count(), 1, "the app saw the delivery once: {outcomes:?}");
    assert_eq!(forwarded, 1, "{outcomes:?}");
    for (s, c) in &outcomes {
        assert!(
            (*s == 200 && (c.is_empty() || c == "already_processed"))
                || (*s == 409 && c == "delivery_in_progress"),
            "unexpected answer {s} {c}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn release_after_upstream_500_is_seen_by_the_other_replica() {
    let up = Upstream::start().await;
    let config = format!(
        "{}routes:\n{}",
        store(SHARED_REDIS, &unique_prefix(), "reject"),
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    );
    let (a, b) = tokio::join!(Gateway::start(&config), Gateway::start(&config));
    // Each replica connects to Redis in the background: wait until both serve.
    tokio::join!(a.wait_ready(), b.wait_ready());
    let body = delivery("job.completed", "released");
    up.then(500, Duration::ZERO);
    assert_eq!(
        post_signed(&a.http_url("/webhooks/imggo"), &body)
            .await
            .status(),
        500
    );
    assert_eq!(
        post_signed(&b.http_url("/webhooks/imggo"), &body)
            .await
            .status(),
        200,
        "B forwards A's released key"
    );
    assert_eq!(
        answer(post_signed(&a.http_url("/webhooks/imggo"), &body).await)
            .await
            .1,
        "already_processed"
    );
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replicas_claim_expires_after_its_lease() {
    let up = Upstream::start().await;
    let extra = "    upstream_timeout: 1s\n";
    let route = ImggoRoute::new("imggo", "/webhooks/imggo", &up.url())
        .with(extra)
        .lease("2s")
        .yaml();
    let config = format!(
        "{}routes:\n{route}",
        store(SHARED_REDIS, &unique_prefix(), "reject")
    );
    let (a, b) = tokio::join!(Gateway::start(&config), Gateway::start(&config));
    // Each replica connects to Redis in the background: wait until both serve.
    tokio::join!(a.wait_ready(), b.wait_ready());
    let body = delivery("job.completed", "killed");
    up.then(200, Duration::from_secs(5));
    let url_a = a.http_url("/webhooks/imggo");
    let body_a = body.clone();
    let _in_flight = tokio::spawn(async move {
        client()
            .post(url_a)
            .header("X-ImgGo-Signature", imggo_signature(&body_a))
            .body(body_a)
            .send()
            .await
    });
    eventually("A's delivery to reach the app", || up.count() == 1).await;
    let claimed_at = std::time::Instant::now();
    Command::new("kill")
        .args(["-KILL", &a.pid().to_string()])
        .status()
        .unwrap();
    let (s, code, _) = answer(post_signed(&b.http_url("/webhooks/imggo"), &body).await).await;
    assert_eq!(
        (s, code.as_str()),
        (409, "delivery_in_progress"),
        "the dead replica's claim still holds"
    );
    tokio::time::sleep(Duration::from_millis(2200).saturating_sub(claimed_at.elapsed())).await;
    let (s, _, _) = answer(post_signed(&b.http_url("/webhooks/imggo"), &body).await).await;
    assert_eq!(s, 200, "after the lease the retry goes through");
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn outage_rejects_then_recovers_without_restart() {
    let up = Upstream::start().await;
    let (port, mut redis, gw) = on_private_redis(&up, "reject").await;
    let url = gw.http_url("/webhooks/imggo");
    let ready = || async {
        reqwest::get(format!("http://127.0.0.1:{}/readyz", gw.admin))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        post_signed(&url, &delivery("job.completed", "before"))
            .await
            .status(),
        200
    );
    assert_eq!(ready().await, 200);

    redis.stop();
    let resp = post_signed(&url, &delivery("job.completed", "during")).await;
    assert!(resp.headers().get("retry-after").is_some());
    let (s, code, _) = answer(resp).await;
    assert_eq!((s, code.as_str()), (503, "store_unavailable"));
    assert_eq!(ready().await, 503);
    assert_eq!(up.count(), 1, "nothing forwarded during the outage");
    assert!(
        gw.metric("hookgate_store_errors_total", &[("operation", "claim")])
            .await
            >= 1.0
    );

    let _redis = PrivateRedis::start_on(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = post_signed(&url, &delivery("job.completed", "during"))
            .await
            .status();
        if s == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not recover ({s})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready().await, 200);
    assert_eq!(
        answer(post_signed(&url, &delivery("job.completed", "during")).await)
            .await
            .1,
        "already_processed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outage_under_allow_forwards_without_dedupe() {
    let up = Upstream::start().await;
    let (_, mut redis, gw) = on_private_redis(&up, "allow").await;
    redis.stop();
    let body = delivery("job.completed", "allowed");
    assert_eq!(
        post_signed(&gw.http_url("/webhooks/imggo"), &body)
            .await
            .status(),
        200
    );
    assert_eq!(up.count(), 1);
    assert_eq!(
        gw.metric("hookgate_dedupe_skipped_total", &[("route", "imggo")])
            .await,
        1.0
    );
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", gw.admin))
        .await
        .unwrap()
        .status();
    assert_eq!(
        ready, 200,
        "allow keeps serving, so the replica stays ready"
    );
}

#[tokio::test]
async fn a_redis_down_at_start_does_not_stop_the_gateway() {
    // PRODUCT.md §7: serve, answer per on_error, report not ready, recover by itself.
    let up = Upstream::start().await;
    let port = free_port();
    let config = format!(
        "{}routes:\n{}",
        store(&format!("redis://127.0.0.1:{port}/0"), "it", "reject"),
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    );
    let gw = Gateway::start(&config).await;
    let url = gw.http_url("/webhooks/imggo");
    let ready = || async {
        reqwest::get(gw.admin_url("/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 503);
    let (status, code, _) = answer(post_signed(&url, &delivery("job.completed", "s1")).await).await;
    assert_eq!((status, code.as_str()), (503, "store_unavailable"));
    assert_eq!(up.count(), 0);

    let _redis = PrivateRedis::start_on(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while post_signed(&url, &delivery("job.completed", "s1"))
        .await
        .status()
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not connect once Redis came up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready().await, 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_restart_between_claim_and_complete_still_marks_the_delivery_delivered() {
    // The app holds the delivery while Redis restarts (losing every key); the gateway's
    // connection finds out only when it sends the complete. That complete is sent again on the
    // new connection, so the key is delivered and a redelivery is not forwarded a second time.
    let up = Upstream::start().await;
    up.always(200, Duration::from_millis(1500));
    let (port, mut redis, gw) = on_private_redis(&up, "reject").await;
    let url = gw.http_url("/webhooks/imggo");
    let body = delivery("job.completed", "restart-mid-delivery");
    let first = tokio::spawn({
        let (url, body) = (url.clone(), body.clone());
        async move { answer(post_signed(&url, &body).await).await }
    });
    eventually("the delivery at the app", || up.count() == 1).await;
    redis.stop();
    let _redis = PrivateRedis::start_on(port);
    assert_eq!(first.await.unwrap().0, 200);
    let (status, code, _) = answer(post_signed(&url, &body).await).await;
    assert_eq!((status, code.as_str()), (200, "already_processed"));
    assert_eq!(up.count(), 1, "the redelivery was not forwarded");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_redis_restart_no_request_fails_on_a_connection_redis_closed() {
    // Every serving thread holds a connection; Redis restarts while they are idle. The first
    // claims after it must go out on new connections, not fail with 503 on the closed ones (a
    // claim that failed is not sent again, since it may have claimed the key).
    let up = Upstream::start().await;
    let (port, mut redis, gw) = on_private_redis(&up, "reject").await;
    let url = gw.http_url("/webhooks/imggo");
    let burst = |name: &'static str| {
        let url = url.clone();
        async move {
            let sent: Vec<_> = (0..40)
                .map(|i| {
                    let (url, body) = (
                        url.clone(),
                        delivery("job.completed", &format!("{name}-{i}")),
                    );
                    tokio::spawn(async move { answer(post_signed(&url, &body).await).await })
                })
                .collect();
            let mut answers = Vec::new();
            for s in sent {
                let (status, code, _) = s.await.unwrap();
                answers.push((status, code));
            }
            answers
        }
    };
    let before = burst("before").await;
    assert!(before.iter().all(|(s, _)| *s == 200), "{before:?}");

    redis.stop();
    let _redis = PrivateRedis::start_on(port);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let after = burst("after").await;
    let refused: Vec<_> = after.iter().filter(|(s, _)| *s != 200).collect();
    assert!(refused.is_empty(), "refused after the restart: {refused:?}");
    assert_eq!(up.count(), 80);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rediss_url_reaches_redis_over_tls_and_checks_its_certificate() {
    // Managed Redis services speak TLS (rediss://). The certificate is checked like any
    // OpenSSL client's: against the system's roots, or SSL_CERT_FILE.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "redis");
    let port = free_port();
    let _redis = PrivateRedis::start_tls_on(port, &cert, &key);
    let cert = cert.display().to_string();
    let up = Upstream::start().await;
    let config = format!(
        "{}routes:\n{}",
        store(&format!("rediss://127.0.0.1:{port}/0"), "it", "reject"),
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    );

    let trusting = Gateway::start_with_env(&config, &[("SSL_CERT_FILE", &cert)]).await;
    let url = trusting.http_url("/webhooks/imggo");
    let body = delivery("job.completed", "over-tls");
    let (status, code, _) = answer(post_signed(&url, &body).await).await;
    assert_eq!(
        (status, code.as_str()),
        (200, ""),
        "forwarded with its key claimed over TLS"
    );
    let (status, code, _) = answer(post_signed(&url, &body).await).await;
    assert_eq!((status, code.as_str()), (200, "already_processed"));

    // A gateway that does not trust the certificate does not talk to that Redis: fail closed.
    let doubting = Gateway::start(&config).await;
    let other = delivery("job.completed", "unverified");
    let (status, code, _) =
        answer(post_signed(&doubting.http_url("/webhooks/imggo"), &other).await).await;
    assert_eq!((status, code.as_str()), (503, "store_unavailable"));
    let ready = reqwest::get(doubting.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503, "not ready without a store it trusts");
    assert_eq!(up.count(), 1);
}
