//! A destination's breaker (PRODUCT.md §9): an app down for far longer than the whole retry
//! schedule, with a backlog, gets a few probes rather than every retry, no delivery goes dead,
//! and the whole backlog arrives once it is back. Without a breaker the old behaviour holds.

use crate::harness::*;
use crate::queue::eventually_metric;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const BACKLOG: usize = 1000;
const FAILURES: usize = 5;
const MAX_IN_FLIGHT: usize = 4;
const COOLDOWN: Duration = Duration::from_millis(500);

fn route(app: &Upstream, breaker: &str, store: &str) -> String {
    format!(
        r#"store:
  url: "{store}"
routes:
  - name: q
    path: /webhooks/q
    mode: queue
    https_only: false
    upstreams:
      - name: app
        url: "{}"
    signature: {{ scheme: imggo, secrets: ["{SECRET}"] }}
    idempotency: {{ key: ["/job_id"] }}
    delivery:
      timeout: 1s
      retry: [100ms, 100ms, 100ms]
      jitter: 0%
      max_in_flight: {MAX_IN_FLIGHT}
{breaker}"#,
        app.url()
    )
}

/// Queues `n` deliveries, eight senders at a time.
async fn queue_many(gw: &Gateway, n: usize) {
    queue_many_named(gw, "b", n).await;
}

/// Queues `n` deliveries whose job ids start with `prefix`, eight senders at a time.
async fn queue_many_named(gw: &Gateway, prefix: &str, n: usize) {
    let url = gw.http_url("/webhooks/q");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (url, prefix) = (url.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            for i in (t..n).step_by(8) {
                let body = delivery("job.completed", &format!("{prefix}{i}"));
                let (status, code, _) = answer(post_signed(&url, &body).await).await;
                assert_eq!((status, code.as_str()), (200, "queued"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_breaker_holds_a_down_app_with_a_few_probes_and_loses_none_of_its_backlog() {
    held_by_a_breaker("file:state.db").await;
}

#[tokio::test]
async fn a_breaker_holds_a_down_app_on_postgres_too() {
    let db = TestDatabase::create();
    held_by_a_breaker(&db.url()).await;
}

async fn held_by_a_breaker(store: &str) {
    let app = Upstream::start().await;
    app.always(500, Duration::ZERO);
    let gw = Gateway::start(&route(
        &app,
        &format!(
            "      breaker: {{ failures: {FAILURES}, cooldown: {}ms }}\n",
            COOLDOWN.as_millis()
        ),
        store,
    ))
    .await;
    gw.wait_ready().await;
    let down_since = Instant::now();
    queue_many(&gw, BACKLOG).await;
    eventually_metric(
        &gw,
        "hookgate_destination_open",
        &[("route", "q"), ("destination", "app")],
        1.0,
    )
    .await;
    // Down for ten times the whole retry schedule (300 ms) after the backlog is in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let down_for = down_since.elapsed();
    let while_down = app.count();
    // The attempts that opened it, those already running then, and one probe per cooldown.
    let most =
        FAILURES + MAX_IN_FLIGHT + (down_for.as_millis() / COOLDOWN.as_millis()) as usize + 1;
    assert!(
        while_down <= most,
        "the app got {while_down} attempts in {down_for:?} while down (at most {most})"
    );
    assert!(
        while_down > FAILURES,
        "the breaker probed the app: {while_down} attempts"
    );
    assert_eq!(
        gw.metric(
            "hookgate_deliveries_total",
            &[("destination", "app"), ("outcome", "dead")]
        )
        .await,
        0.0,
        "no delivery went dead while the app was down"
    );

    app.always(200, Duration::ZERO);
    eventually_metric(
        &gw,
        "hookgate_deliveries_total",
        &[("destination", "app"), ("outcome", "delivered")],
        BACKLOG as f64,
    )
    .await;
    let delivered: HashSet<String> = app.received()[while_down..]
        .iter()
        .filter_map(|r| r.header("Hookgate-Delivery-Id").map(str::to_string))
        .collect();
    assert_eq!(
        delivered.len(),
        BACKLOG,
        "every delivery arrived once it was back"
    );
    assert_eq!(
        gw.series(
            "hookgate_destination_open",
            &[("route", "q"), ("destination", "app")]
        )
        .await,
        Some(0.0)
    );
    assert_eq!(
        gw.series(
            "hookgate_queue_deliveries",
            &[("destination", "app"), ("state", "dead")]
        )
        .await,
        Some(0.0)
    );
}

#[tokio::test]
async fn replicas_on_postgres_share_a_breaker_and_one_probe_per_cooldown_speaks_for_all() {
    const COOLDOWN: Duration = Duration::from_millis(250);
    const FAILURES: usize = 3;
    let db = TestDatabase::create();
    let app = Upstream::start().await;
    app.always(500, Duration::ZERO);
    let cfg = route(
        &app,
        &format!(
            "      breaker: {{ failures: {FAILURES}, cooldown: {}ms }}\n",
            COOLDOWN.as_millis()
        ),
        &db.url(),
    );
    let (a, b) = tokio::join!(Gateway::start(&cfg), Gateway::start(&cfg));
    a.wait_ready().await;
    b.wait_ready().await;
    let down_since = Instant::now();
    tokio::join!(
        queue_many_named(&a, "a", 100),
        queue_many_named(&b, "b", 100)
    );
    for gw in [&a, &b] {
        eventually_metric(
            gw,
            "hookgate_destination_open",
            &[("route", "q"), ("destination", "app")],
            1.0,
        )
        .await;
    }

    // While held, both replicas' delivery logs say so.
    let held = |gw: &Gateway| {
        let url = gw.admin_url("/api/destinations");
        async move {
            let list: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            let d = &list["destinations"][0];
            assert_eq!(
                (d["route"].as_str(), d["name"].as_str()),
                (Some("q"), Some("app"))
            );
            assert_eq!(d["dead"], 0);
            d["breaker"].clone()
        }
    };
    for gw in [&a, &b] {
        let breaker = held(gw).await;
        let state = breaker["state"].as_str().unwrap_or_default();
        assert!(
            state == "open" || state == "probing",
            "held while the app is down: {breaker}"
        );
        if state == "open" {
            let until = breaker["until"].as_str().unwrap();
            humantime::parse_rfc3339(until).expect("until is RFC 3339");
        }
    }
    let list: serde_json::Value = reqwest::get(a.admin_url("/api/deliveries?limit=1"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["deliveries"][0]["id"].as_str().unwrap().to_string();
    let detail: serde_json::Value = reqwest::get(b.admin_url(&format!("/api/deliveries/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let state = detail["destinations"][0]["breaker"]["state"].clone();
    assert!(
        state == "open" || state == "probing",
        "a held delivery's detail shows its destination's breaker: {detail}"
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    let down_for = down_since.elapsed();
    let while_down = app.count();
    // The attempts that opened it, those running on both replicas then, and one probe per
    // cooldown between them: a breaker per replica would probe twice as often.
    let probes = (down_for.as_millis() / COOLDOWN.as_millis()) as usize + 1;
    let most = FAILURES + 2 * MAX_IN_FLIGHT + probes;
    assert!(
        while_down <= most,
        "the app got {while_down} attempts in {down_for:?} while down (at most {most})"
    );

    app.always(200, Duration::ZERO);
    let delivered = || async {
        let mut n = 0.0;
        for gw in [&a, &b] {
            n += gw
                .metric(
                    "hookgate_deliveries_total",
                    &[("destination", "app"), ("outcome", "delivered")],
                )
                .await;
        }
        n
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered().await < 200.0 {
        assert!(Instant::now() < deadline, "the backlog was not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: HashSet<String> = app.received()[while_down..]
        .iter()
        .filter_map(|r| r.header("Hookgate-Delivery-Id").map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 200, "every delivery arrived once it was back");
    for gw in [&a, &b] {
        assert_eq!(
            held(gw).await,
            serde_json::json!({ "state": "closed", "failures": 0 }),
            "one replica's successful probe closed it for both"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_names_a_held_destination_in_a_real_browser() {
    let app = Upstream::start().await;
    app.always(500, Duration::ZERO);
    let gw = Gateway::start(&route(
        &app,
        "      breaker: { failures: 2, cooldown: 1h }\n",
        "file:state.db",
    ))
    .await;
    queue_many(&gw, 8).await;
    eventually_metric(
        &gw,
        "hookgate_destination_open",
        &[("route", "q"), ("destination", "app")],
        1.0,
    )
    .await;
    // Off the test's runtime: the stand-in app must keep answering while the browser runs.
    let admin = gw.admin_url("");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/ui/held_destination.py"
            ))
            .args([admin.as_str(), "q", "app"])
            .output()
            .expect(
                "python3 with selenium, and Debian's chromium + chromium-driver (scripts/setup.sh)",
            )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn without_a_breaker_a_down_app_gets_every_retry_and_deliveries_go_dead() {
    let app = Upstream::start().await;
    app.always(500, Duration::ZERO);
    let gw = Gateway::start(&route(&app, "", "file:state.db")).await;
    queue_many(&gw, 20).await;
    eventually_metric(
        &gw,
        "hookgate_deliveries_total",
        &[("destination", "app"), ("outcome", "dead")],
        20.0,
    )
    .await;
    assert_eq!(app.count(), 20 * 4, "each delivery's four attempts");
    assert_eq!(
        gw.series(
            "hookgate_destination_open",
            &[("route", "q"), ("destination", "app")]
        )
        .await,
        Some(0.0)
    );
}

#[test]
fn check_names_a_bad_breaker_by_field() {
    let app = "http://127.0.0.1:5000";
    let (code, err) = check_config(&format!(
        "listen: [{{ addr: \"127.0.0.1:18080\" }}]\nstore: {{ url: \"file:state.db\" }}\nroutes:\n  - name: q\n    path: /q\n    mode: queue\n    upstreams: [{{ name: app, url: \"{app}\" }}]\n    delivery:\n      breaker: {{ failures: 0, cooldown: 0s }}\n"
    ));
    assert_eq!(code, Some(1));
    for expected in [
        "routes[q].delivery.breaker.failures: must be at least 1",
        "routes[q].delivery.breaker.cooldown: must be more than 0",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}
