//! `order_by` (PRODUCT.md §9): deliveries with the same value reach a destination one at a time,
//! in acceptance order, each waiting until the one before is delivered or dead; other values are
//! not held up. Across a kill -9, and across two replicas on Postgres.

use crate::harness::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Each answer takes this long, so attempts of one key that overlapped would arrive closer
/// together than this.
const ANSWER_TAKES: Duration = Duration::from_millis(40);

fn route(app: &Upstream, store: &str) -> String {
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
      timeout: 2s
      retry: [150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms, 150ms]
      jitter: 0%
      order_by: /pattern_id
"#,
        app.url()
    )
}

/// A delivery without the pointer: not ordered.
fn plain(job: &str) -> Vec<u8> {
    format!(r#"{{"event":"job.completed","job_id":"{job}"}}"#).into_bytes()
}

fn body(job: &str, pattern: &str) -> Vec<u8> {
    format!(r#"{{"event":"job.completed","job_id":"{job}","pattern_id":"{pattern}"}}"#).into_bytes()
}

async fn queue_to(gw: &Gateway, body: &[u8]) {
    let (status, code, _) = answer(post_signed(&gw.http_url("/webhooks/q"), body).await).await;
    assert_eq!((status, code.as_str()), (200, "queued"));
}

/// The job ids the app received, in arrival order, with when, for one pattern.
fn arrivals(app: &Upstream, pattern: &str) -> Vec<(String, Instant)> {
    let needle = format!("\"pattern_id\":\"{pattern}\"");
    app.received()
        .into_iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains(&needle))
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            (v["job_id"].as_str().unwrap().to_string(), r.at)
        })
        .collect()
}

/// No two attempts of one key at once: each arrives after the one before was answered.
fn assert_one_at_a_time(got: &[(String, Instant)]) {
    for pair in got.windows(2) {
        let gap = pair[1].1.duration_since(pair[0].1);
        assert!(
            gap >= ANSWER_TAKES,
            "{} arrived {gap:?} after {} began: attempts overlapped ({got:?})",
            pair[1].0,
            pair[0].0
        );
    }
}

/// The jobs in the order their last (delivering) attempt began.
fn delivered_order(got: &[(String, Instant)]) -> Vec<String> {
    let mut last: HashMap<&str, Instant> = HashMap::new();
    for (job, at) in got {
        last.insert(job, *at);
    }
    let mut jobs: Vec<(&str, Instant)> = last.into_iter().collect();
    jobs.sort_by_key(|(_, at)| *at);
    jobs.into_iter().map(|(j, _)| j.to_string()).collect()
}

#[tokio::test]
async fn a_failing_key_holds_back_only_its_own_deliveries_in_order_across_a_kill_9() {
    let app = Upstream::start().await;
    app.always(200, ANSWER_TAKES);
    app.fail_when("\"pattern_id\":\"A\"", 500);
    let mut gw = Gateway::start(&route(&app, "file:state.db")).await;
    for i in 1..=3 {
        queue_to(&gw, &body(&format!("a{i}"), "A")).await;
        queue_to(&gw, &body(&format!("b{i}"), "B")).await;
    }

    eventually("the other key's deliveries, meanwhile", || {
        arrivals(&app, "B").len() == 3
    })
    .await;
    assert_eq!(delivered_order(&arrivals(&app, "B")), ["b1", "b2", "b3"]);
    eventually("a1 retried while it fails", || {
        arrivals(&app, "A").len() >= 3
    })
    .await;
    assert!(
        arrivals(&app, "A").iter().all(|(job, _)| job == "a1"),
        "a2 and a3 wait while a1 fails: {:?}",
        arrivals(&app, "A")
    );

    let before_kill = arrivals(&app, "A");
    gw.restart().await;
    // The attempt the killed process had at the app is taken again at once by the new one
    // (at least once): only that pair may overlap, so the check starts after the restart.
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        arrivals(&app, "A").iter().all(|(job, _)| job == "a1"),
        "still held after the restart: {:?}",
        arrivals(&app, "A")
    );
    app.heal();
    eventually("every A delivery", || {
        let jobs = delivered_order(&arrivals(&app, "A"));
        jobs.len() == 3
    })
    .await;
    let got = arrivals(&app, "A");
    assert_eq!(
        delivered_order(&got),
        ["a1", "a2", "a3"],
        "acceptance order"
    );
    assert_one_at_a_time(&before_kill);
    let after: Vec<_> = got.into_iter().filter(|(_, at)| *at > restarted).collect();
    assert_one_at_a_time(&after);
}

#[tokio::test]
async fn deliveries_without_the_pointer_are_not_held() {
    let app = Upstream::start().await;
    app.fail_when("\"job_id\":\"first\"", 500);
    let gw = Gateway::start(&route(&app, "file:state.db")).await;
    // Neither has the pointer: the first failing does not hold the second.
    queue_to(&gw, &plain("first")).await;
    queue_to(&gw, &plain("second")).await;
    eventually("the second, while the first fails", || {
        app.received()
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("\"second\""))
    })
    .await;
}

#[tokio::test]
async fn two_replicas_on_postgres_never_attempt_two_deliveries_of_one_key_at_once() {
    let db = TestDatabase::create();
    let app = Upstream::start().await;
    app.always(200, ANSWER_TAKES);
    let cfg = route(&app, &db.url());
    let (a, b) = tokio::join!(Gateway::start(&cfg), Gateway::start(&cfg));
    a.wait_ready().await;
    b.wait_ready().await;
    let keys = ["K1", "K2", "K3"];
    let mut expected: HashMap<&str, Vec<String>> = HashMap::new();
    for i in 0..6 {
        for (k, key) in keys.iter().enumerate() {
            let job = format!("{key}-{i}");
            let via = if (i + k) % 2 == 0 { &a } else { &b };
            queue_to(via, &body(&job, key)).await;
            expected.entry(key).or_default().push(job);
        }
    }
    eventually_within("every delivery", Duration::from_secs(30), || {
        app.count() == keys.len() * 6
    })
    .await;
    for key in keys {
        let got = arrivals(&app, key);
        assert_one_at_a_time(&got);
        assert_eq!(
            delivered_order(&got),
            expected[key],
            "acceptance order of {key}"
        );
    }
}
