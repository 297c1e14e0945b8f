//! The Postgres store (PRODUCT.md §2, §9): queue routes shared by replicas, forward-route keys
//! with the same at-most-once promise as Redis, outages, crashes and migrations. Each test makes
//! a database of its own on the machine's Postgres and drops it afterwards; the outage test runs
//! a private server it can stop.

use crate::harness::*;
use crate::queue::{eventually_metric, queue};
use std::collections::HashMap;
use std::time::Duration;

fn queue_route_on(db_url: &str, app: &str, analytics: &str, delivery: &str) -> String {
    crate::queue::queue_config(app, analytics, delivery).replace("file:state.db", db_url)
}

fn ids_per_delivery(up: &Upstream) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in up.received() {
        if let Some(id) = r.header("Hookgate-Delivery-Id") {
            *seen.entry(id.to_string()).or_default() += 1;
        }
    }
    seen
}

#[tokio::test]
async fn three_replicas_share_one_queue_and_deliver_each_delivery_once() {
    let db = TestDatabase::create();
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let cfg = queue_route_on(
        &db.url(),
        &app.url(),
        &analytics.url(),
        "      retry: [100ms, 100ms]\n",
    );
    // Started together on an empty database: one migrates, the others wait on its lock.
    let (a, b, c) = tokio::join!(
        Gateway::start(&cfg),
        Gateway::start(&cfg),
        Gateway::start(&cfg)
    );
    let replicas = [a, b, c];
    for r in &replicas {
        r.wait_ready().await;
    }
    // Each migration applied once, though three replicas started on it.
    assert_eq!(
        db.query("SELECT count(*) FROM hookgate_schema_migrations"),
        "3"
    );

    let mut accepted = Vec::new();
    for i in 0..60 {
        let gw = &replicas[i % 3];
        let (status, code, id) = queue(gw, &delivery("job.completed", &format!("pg{i}"))).await;
        assert_eq!((status, code.as_str()), (200, "queued"));
        accepted.push(id.unwrap());
    }
    // A redelivery through another replica is recognised.
    let (_, code, _) = queue(&replicas[1], &delivery("job.completed", "pg0")).await;
    assert_eq!(code, "already_processed");

    for (name, up) in [("app", &app), ("analytics", &analytics)] {
        eventually_within(name, Duration::from_secs(20), || {
            let seen = ids_per_delivery(up);
            accepted.iter().all(|id| seen.contains_key(id))
        })
        .await;
        let seen = ids_per_delivery(up);
        let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            doubled.is_empty(),
            "{name} got deliveries twice without any crash: {doubled:?}"
        );
    }

    // Each delivery is finished once both destinations are (what the purge goes by), however
    // the two records interleave.
    eventually_within("every delivery finished", Duration::from_secs(10), || {
        db.query(
            "SELECT count(*) FROM hookgate_deliveries d WHERE NOT EXISTS (
                SELECT 1 FROM hookgate_finished f WHERE f.delivery_id = d.id)",
        ) == "0"
    })
    .await;

    // The log is the same through every replica.
    let list: serde_json::Value = reqwest::get(replicas[2].admin_url("/api/deliveries?limit=100"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["deliveries"].as_array().unwrap().len(), 60);
    let id = &accepted[7];
    let one = json_once(
        &replicas[0].admin_url(&format!("/api/deliveries/{id}")),
        None,
        |d| d["state"] == "delivered",
    )
    .await;
    assert_eq!(one["state"], "delivered");
    let body = reqwest::get(replicas[1].admin_url(&format!("/api/deliveries/{id}/body")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body[..], &delivery("job.completed", "pg7")[..]);
}

#[tokio::test]
async fn a_killed_replicas_attempts_are_taken_over_after_the_lease() {
    let db = TestDatabase::create();
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    // Attempts hang long enough for the kill to land while they are in progress.
    app.always(200, Duration::from_secs(3));
    let cfg = queue_route_on(
        &db.url(),
        &app.url(),
        &analytics.url(),
        "      timeout: 2s\n      retry: [100ms]\n",
    );
    let mut first = Gateway::start(&cfg).await;
    first.wait_ready().await;
    let mut accepted = Vec::new();
    for i in 0..5 {
        accepted.push(
            queue(&first, &delivery("job.failed", &format!("kill{i}")))
                .await
                .2
                .unwrap(),
        );
    }
    eventually("the attempts in progress at the app", || app.count() == 5).await;
    first.kill9();
    app.always(200, Duration::ZERO);
    let second = Gateway::start(&cfg).await;
    second.wait_ready().await;
    // Taken up again after delivery.timeout + 30s (PRODUCT.md §9), by the surviving replica.
    eventually_within(
        "every delivery again, after the lease",
        Duration::from_secs(45),
        || {
            let seen = ids_per_delivery(&app);
            accepted
                .iter()
                .all(|id| seen.get(id).copied().unwrap_or(0) >= 2)
        },
    )
    .await;
    // Not before: a live replica may still be in the attempt, and a slow app would get it twice.
    // The lease starts when the attempt was taken, just before the app had its body.
    for id in &accepted {
        let at: Vec<_> = app
            .received()
            .iter()
            .filter(|r| r.header("Hookgate-Delivery-Id") == Some(id))
            .map(|r| r.at)
            .collect();
        let numbers: Vec<_> = app
            .received()
            .iter()
            .filter(|r| r.header("Hookgate-Delivery-Id") == Some(id))
            .map(|r| r.header("Hookgate-Attempt").unwrap_or("-").to_string())
            .collect();
        assert_eq!(numbers[..2], ["1", "2"], "attempts started are counted");
        let gap = at[1] - at[0];
        assert!(
            gap >= Duration::from_millis(31_500),
            "{id} was taken over {gap:?} after its attempt began (lease: 2s + 30s)"
        );
    }
    eventually_metric(
        &second,
        "hookgate_deliveries_total",
        &[
            ("route", "q"),
            ("destination", "app"),
            ("outcome", "delivered"),
        ],
        5.0,
    )
    .await;
}

#[tokio::test]
async fn forward_routes_on_postgres_forward_a_delivery_at_most_once() {
    let db = TestDatabase::create();
    let up = Upstream::start().await;
    up.always(200, Duration::from_millis(300));
    let cfg = format!(
        "store:\n  url: \"{}\"\nroutes:\n{}",
        db.url(),
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    );
    let (a, b) = tokio::join!(Gateway::start(&cfg), Gateway::start(&cfg));
    a.wait_ready().await;
    b.wait_ready().await;
    let body = delivery("job.completed", "fwd-pg");
    let (url_a, url_b) = (a.http_url("/webhooks/imggo"), b.http_url("/webhooks/imggo"));
    let (ra, rb) = tokio::join!(post_signed(&url_a, &body), post_signed(&url_b, &body));
    let mut codes = vec![answer(ra).await.0, answer(rb).await.0];
    codes.sort();
    assert_eq!(
        codes,
        [200, 409],
        "one forwarded, the other told it is in progress"
    );
    assert_eq!(up.count(), 1);
    let (_, code, _) = answer(post_signed(&b.http_url("/webhooks/imggo"), &body).await).await;
    assert_eq!(code, "already_processed");

    // An upstream failure releases the claim: the retry through the other replica goes through.
    up.always(200, Duration::ZERO);
    up.then(500, Duration::ZERO);
    let body = delivery("job.completed", "fwd-pg-2");
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
        200
    );
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn a_postgres_outage_is_503_then_recovers_and_nothing_accepted_is_lost() {
    let mut pg = PrivatePostgres::start();
    let db = TestDatabase::create_on(pg.port);
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let cfg = queue_route_on(
        &db.url(),
        &app.url(),
        &analytics.url(),
        "      retry: [200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms]\n",
    );
    let gw = Gateway::start(&cfg).await;
    gw.wait_ready().await;
    // Accepted while the app is down, so it is still pending when Postgres goes.
    app.always(503, Duration::ZERO);
    let (_, _, before) = queue(&gw, &delivery("job.failed", "out0")).await;
    let before = before.unwrap();

    pg.stop();
    let resp = post_signed(&gw.http_url("/webhooks/q"), &delivery("job.failed", "out1")).await;
    assert!(resp.headers().contains_key("retry-after"));
    let (status, code, _) = answer(resp).await;
    assert_eq!((status, code.as_str()), (503, "store_unavailable"));
    assert_eq!(
        reqwest::get(gw.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        503
    );

    pg.resume();
    app.always(200, Duration::ZERO);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let (status, _, id) = queue(&gw, &delivery("job.failed", "out1")).await;
        if status == 200 {
            break id.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery after Postgres came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    gw.wait_ready().await;
    eventually_within(
        "both deliveries at the app",
        Duration::from_secs(20),
        || {
            let seen = ids_per_delivery(&app);
            seen.contains_key(&before) && seen.contains_key(&after)
        },
    )
    .await;
}

#[tokio::test]
async fn a_gateway_started_before_postgres_serves_once_it_answers() {
    let mut pg = PrivatePostgres::start();
    let db = TestDatabase::create_on(pg.port);
    pg.stop();
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let cfg = queue_route_on(&db.url(), &app.url(), &analytics.url(), "");
    let gw = Gateway::start(&cfg).await;
    assert_eq!(
        reqwest::get(gw.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        queue(&gw, &delivery("job.failed", "late0")).await.1,
        "store_unavailable"
    );
    pg.resume();
    gw.wait_ready().await;
    // Migrated on the empty database by the gateway that waited for it; a restart finds it done.
    assert_eq!(
        db.query("SELECT max(version) FROM hookgate_schema_migrations"),
        "3"
    );
    assert_eq!(
        queue(&gw, &delivery("job.failed", "late0")).await.1,
        "queued"
    );
    eventually("the delivery at the app", || app.count() == 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acceptances_committed_together_keep_one_delivery_per_key() {
    // Forty senders at once, ten copies of each of four deliveries: acceptances arriving together
    // share a commit, and within it a key still goes in once.
    let db = TestDatabase::create();
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let gw = Gateway::start(&queue_route_on(
        &db.url(),
        &app.url(),
        &analytics.url(),
        "      retry: [100ms]\n",
    ))
    .await;
    gw.wait_ready().await;
    let mut senders = Vec::new();
    for copy in 0..10 {
        for job in 0..4 {
            let url = gw.http_url("/webhooks/q");
            senders.push(tokio::spawn(async move {
                let body = delivery("job.completed", &format!("group-{job}"));
                let (status, code, json) = answer(post_signed(&url, &body).await).await;
                (
                    job,
                    copy,
                    status,
                    code,
                    json["delivery_id"].as_str().map(str::to_string),
                )
            }));
        }
    }
    let mut queued: HashMap<usize, Vec<String>> = HashMap::new();
    for s in senders {
        let (job, copy, status, code, id) = s.await.unwrap();
        match (status, code.as_str()) {
            (200, "queued") => queued.entry(job).or_default().push(id.unwrap()),
            // A redelivery of an accepted key is a duplicate (PRODUCT.md §9), also when the
            // other writer committed it at the same moment.
            (200, "already_processed") => {}
            other => panic!("copy {copy} of job {job}: unexpected {other:?}"),
        }
    }
    for job in 0..4 {
        assert_eq!(
            queued.get(&job).map_or(0, Vec::len),
            1,
            "job {job}: {queued:?}"
        );
    }
    eventually("each delivery once at the app", || {
        let seen = ids_per_delivery(&app);
        seen.len() == 4 && seen.values().all(|&n| n == 1)
    })
    .await;
}

#[tokio::test]
async fn a_dead_delivery_is_logged_retried_by_hand_and_purged_after_its_retention() {
    let db = TestDatabase::create();
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    app.always(500, Duration::ZERO);
    let token = "pg-token";
    let delivery_cfg =
        "      retry: [100ms]\n      jitter: 0%\n      max_queued: 1\n      retention: 1s\n";
    // The line continues the harness's `admin:` mapping.
    let cfg = format!(
        "  token: \"{token}\"\n{}",
        queue_route_on(&db.url(), &app.url(), &analytics.url(), delivery_cfg)
    );
    let gw = Gateway::start(&cfg).await;
    gw.wait_ready().await;
    let (status, code, id) = queue(&gw, &delivery("job.completed", "dead1")).await;
    assert_eq!((status, code.as_str()), (200, "queued"));
    let id = id.unwrap();
    // One delivery is open: `max_queued: 1` turns the next one away, the sender keeps it.
    let (status, code, _) = queue(&gw, &delivery("job.completed", "dead2")).await;
    assert_eq!((status, code.as_str()), (503, "queue_full"));

    // The app fails its first attempt and the one retry: dead there, delivered to analytics.
    let url = gw.admin_url(&format!("/api/deliveries/{id}"));
    let dead = json_once(&url, Some(token), |d| d["state"] == "dead").await;
    let numbers = |d: &serde_json::Value, name: &str| -> Vec<u64> {
        d["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["destination"] == name)
            .map(|a| a["n"].as_u64().unwrap())
            .collect()
    };
    // Each attempt is logged with the number the app saw in Hookgate-Attempt.
    let sent: Vec<u64> = app
        .received()
        .iter()
        .map(|r| r.header("Hookgate-Attempt").unwrap().parse().unwrap())
        .collect();
    assert_eq!(sent, [1, 2]);
    assert_eq!(numbers(&dead, "app"), sent);
    assert_eq!(numbers(&dead, "analytics"), [1]);

    // A retry by hand reopens it; the app now answers and gets attempt 3.
    app.always(200, Duration::ZERO);
    let resp = client()
        .post(gw.admin_url(&format!("/api/deliveries/{id}/retry")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let delivered = json_once(&url, Some(token), |d| d["state"] == "delivered").await;
    assert_eq!(numbers(&delivered, "app"), [1, 2, 3]);

    // Finished again, it is purged once its retention has passed (the purge runs every 10 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = client()
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        if status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not purged after its retention"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(db.query("SELECT count(*) FROM hookgate_attempts"), "0");
}

#[tokio::test]
async fn the_delivery_logs_filters_and_bulk_retry_work_on_postgres() {
    let db = TestDatabase::create();
    crate::delivery_log::filters_and_bulk_retry_on(&db.url()).await;
}

/// `sslmode` (PRODUCT.md §2, README "Postgres"): against a server that takes only TLS, with a
/// certificate for `localhost`: `verify-full` goes through when the certificate is trusted
/// (`SSL_CERT_FILE`) and the name is the one connected to, and is refused otherwise;
/// `verify-ca` checks the chain and not the name; `require` encrypts without checking;
/// `disable` is refused by the server, which proves the others were encrypted.
#[tokio::test]
async fn postgres_over_tls_checks_the_certificate_as_sslmode_says() {
    let certs = tempfile::tempdir().unwrap();
    // Named `localhost` only: reached as 127.0.0.1, only the name check refuses it.
    let (cert, key) = make_cert_for(certs.path(), "pg-tls", "DNS:localhost");
    let cert_file = cert.to_str().unwrap();
    let pg = PrivatePostgres::start_with_tls(&cert, &key);
    let db = TestDatabase::create_on(pg.port);
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let on_host = |host: &str, mode: &str| {
        queue_route_on(
            &format!("{}?sslmode={mode}", db.url().replace("127.0.0.1", host)),
            &app.url(),
            &analytics.url(),
            "",
        )
    };

    let delivered = |gw: Gateway, job: &'static str| {
        let app = &app;
        async move {
            gw.wait_ready().await;
            let (status, code, id) = queue(&gw, &delivery("job.completed", job)).await;
            assert_eq!((status, code.as_str()), (200, "queued"), "{}", gw.log());
            let id = id.unwrap();
            eventually("the delivery at the app", || {
                ids_per_delivery(app).contains_key(&id)
            })
            .await;
        }
    };
    let with_mode = |mode: &str| on_host("127.0.0.1", mode);
    delivered(
        Gateway::start_with_env(
            &on_host("localhost", "verify-full"),
            &[("SSL_CERT_FILE", cert_file)],
        )
        .await,
        "tls-full",
    )
    .await;
    // The chain is trusted; the name is not the one connected to.
    delivered(
        Gateway::start_with_env(&with_mode("verify-ca"), &[("SSL_CERT_FILE", cert_file)]).await,
        "tls-ca",
    )
    .await;
    delivered(Gateway::start(&with_mode("require")).await, "tls-require").await;

    let refused = |gw: Gateway, why: &'static str| async move {
        eventually_within(why, Duration::from_secs(20), || {
            gw.log().contains("Postgres does not answer")
        })
        .await;
        let (status, code, _) = queue(&gw, &delivery("job.completed", "never")).await;
        assert_eq!((status, code.as_str()), (503, "store_unavailable"), "{why}");
        assert_eq!(
            reqwest::get(gw.admin_url("/readyz"))
                .await
                .unwrap()
                .status(),
            503,
            "{why}"
        );
        gw.log()
    };
    let log = refused(
        Gateway::start_with_env(&with_mode("verify-full"), &[("SSL_CERT_FILE", cert_file)]).await,
        "verify-full refuses a certificate for another name than 127.0.0.1",
    )
    .await;
    assert!(log.contains("certificate"), "{log}");
    let log = refused(
        Gateway::start(&with_mode("verify-ca")).await,
        "verify-ca refuses a certificate no root signed",
    )
    .await;
    assert!(log.contains("certificate"), "{log}");
    refused(
        Gateway::start(&with_mode("disable")).await,
        "the server refuses a client that does not encrypt",
    )
    .await;
    assert!(!ids_per_delivery(&app).is_empty());
}

/// PRODUCT.md §9: `on_error: allow` does not apply to queue routes. With the store down, a
/// forward route of the same gateway forwards without dedupe, as `allow` says, while the queue
/// route answers 503 `store_unavailable` and nothing of it reaches its app.
#[tokio::test]
async fn on_error_allow_forwards_without_dedupe_but_never_lets_a_queue_route_skip_the_store() {
    let mut pg = PrivatePostgres::start();
    let db = TestDatabase::create_on(pg.port);
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let forwarded = Upstream::start().await;
    let cfg = queue_route_on(&db.url(), &app.url(), &analytics.url(), "").replacen(
        "routes:\n",
        "  on_error: allow\nroutes:\n",
        1,
    ) + &imggo_route("fwd", "/webhooks/fwd", &forwarded.url(), "");
    let gw = Gateway::start(&cfg).await;
    gw.wait_ready().await;
    pg.stop();

    let (status, code, _) = queue(&gw, &delivery("job.completed", "down1")).await;
    assert_eq!((status, code.as_str()), (503, "store_unavailable"));
    let resp = post_signed(
        &gw.http_url("/webhooks/fwd"),
        &delivery("job.completed", "down1"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(forwarded.count(), 1);
    eventually_metric(
        &gw,
        "hookgate_dedupe_skipped_total",
        &[("route", "fwd")],
        1.0,
    )
    .await;
    assert_eq!(app.count() + analytics.count(), 0);
}
