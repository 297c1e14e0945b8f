//! Queue mode (PRODUCT.md §9): accepted durably, delivered in the background to every destination
//! with retries, dead after the last delay, nothing lost across kill -9. Retry delays are scaled
//! down to milliseconds; the logic is the production one.

use crate::harness::*;
use std::time::{Duration, Instant};

/// A queue route `q` on `/webhooks/q` fanning out to `app` (every event) and `analytics`
/// (job.completed only), on a file store in the test's folder.
pub fn queue_config(app: &str, analytics: &str, delivery: &str) -> String {
    format!(
        r#"store:
  url: "file:state.db"
routes:
  - name: q
    path: /webhooks/q
    mode: queue
    https_only: false
    upstreams:
      - name: app
        url: "{app}"
      - name: analytics
        url: "{analytics}"
        events: [job.completed]
    signature: {{ scheme: imggo, secrets: ["{SECRET}"] }}
    schema: SCHEMA
    events: {{ pointer: /event, allow: [job.completed, job.failed] }}
    idempotency: {{ key: ["/event", "/job_id"] }}
    delivery:
{delivery}"#
    )
}

const FAST: &str = "      timeout: 2s\n      retry: [100ms, 200ms, 300ms]\n      jitter: 0%\n";

/// Posts a signed delivery and returns (status, code or status field, delivery id).
pub async fn queue(gw: &Gateway, body: &[u8]) -> (u16, String, Option<String>) {
    let (status, code, json) = answer(post_signed(&gw.http_url("/webhooks/q"), body).await).await;
    let id = json["delivery_id"].as_str().map(str::to_string);
    (status, code, id)
}

#[tokio::test]
async fn a_queued_delivery_reaches_each_destination_its_event_goes_to() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let gw = Gateway::start(&queue_config(&app.url(), &analytics.url(), FAST)).await;

    let completed = delivery("job.completed", "j1");
    let (status, code, id) = queue(&gw, &completed).await;
    assert_eq!((status, code.as_str()), (200, "queued"));
    let id = id.expect("a queued answer names its delivery_id");
    let failed = delivery("job.failed", "j2");
    let (_, _, failed_id) = queue(&gw, &failed).await;
    let failed_id = failed_id.unwrap();

    eventually("both deliveries at the app", || app.count() == 2).await;
    eventually("the completed one at analytics", || analytics.count() == 1).await;
    let at_app = app.received_with("Hookgate-Delivery-Id", &id);
    assert_eq!(at_app.len(), 1);
    assert_eq!(at_app[0].body, completed, "the exact body bytes");
    assert_eq!(at_app[0].method, "POST");
    assert_eq!(at_app[0].target, "/webhooks/q");
    assert_eq!(at_app[0].header("Hookgate-Attempt"), Some("1"));
    assert!(
        at_app[0].header("X-ImgGo-Signature").is_some(),
        "the app can verify it itself"
    );
    assert_eq!(at_app[0].header("X-Forwarded-For"), Some("127.0.0.1"));
    assert!(at_app[0].header("traceparent").is_some());
    assert_eq!(
        analytics.received()[0].header("Hookgate-Delivery-Id"),
        Some(id.as_str())
    );
    assert_eq!(
        app.received_with("Hookgate-Delivery-Id", &failed_id).len(),
        1
    );

    // A redelivery of an accepted key, whatever became of it.
    let resp = post_signed(&gw.http_url("/webhooks/q"), &completed).await;
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    let (status, code, _) = answer(resp).await;
    assert_eq!((status, code.as_str()), (200, "already_processed"));

    // The same refusals as a forward route, and nothing of them stored.
    let resp = client()
        .post(gw.http_url("/webhooks/q"))
        .header("X-ImgGo-Signature", "00")
        .body(delivery("job.completed", "j3"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(resp).await.1, "signature_invalid");

    eventually_metric(
        &gw,
        "hookgate_deliveries_total",
        &[
            ("route", "q"),
            ("destination", "app"),
            ("outcome", "delivered"),
        ],
        2.0,
    )
    .await;
    let queued = [("route", "q"), ("outcome", "queued")];
    assert_eq!(gw.metric("hookgate_requests_total", &queued).await, 2.0);
    let to_analytics = [
        ("route", "q"),
        ("destination", "analytics"),
        ("result", "2xx"),
    ];
    assert_eq!(
        gw.metric("hookgate_delivery_attempts_total", &to_analytics)
            .await,
        1.0
    );
    let pending = [("route", "q"), ("destination", "app"), ("state", "pending")];
    assert_eq!(gw.metric("hookgate_queue_deliveries", &pending).await, 0.0);
}

/// On `threads: 1` the listener, the worker and the admin API run on tokio's single-threaded
/// scheduler: queued deliveries still arrive, and none is lost to a kill -9 after the first ten.
#[tokio::test]
async fn on_one_thread_queued_deliveries_arrive_and_survive_kill_9() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let mut gw =
        Gateway::start_on_one_thread(&queue_config(&app.url(), &analytics.url(), FAST)).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        let (status, code, id) = queue(&gw, &delivery("job.failed", &format!("t{n}"))).await;
        assert_eq!((status, code.as_str()), (200, "queued"));
        ids.push(id.unwrap());
        if n == 9 {
            gw.restart().await;
        }
    }
    eventually("every accepted delivery at the app", || {
        ids.iter()
            .all(|id| !app.received_with("Hookgate-Delivery-Id", id).is_empty())
    })
    .await;
}

/// Polls a metric until it reaches `want`.
pub async fn eventually_metric(gw: &Gateway, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = gw.metric(name, labels).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is {got}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failing_destination_is_retried_without_delaying_the_other() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    app.then(500, Duration::ZERO);
    app.then(503, Duration::ZERO);
    let gw = Gateway::start(&queue_config(&app.url(), &analytics.url(), FAST)).await;
    let (_, _, id) = queue(&gw, &delivery("job.completed", "r1")).await;
    let id = id.unwrap();

    eventually("analytics at once", || analytics.count() == 1).await;
    eventually("the app after two retries", || app.count() == 3).await;
    let attempts: Vec<_> = app
        .received_with("Hookgate-Delivery-Id", &id)
        .iter()
        .map(|r| r.header("Hookgate-Attempt").unwrap().to_string())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    let got = app.received();
    // The waits are the retry delays (100ms, then 200ms), never shorter.
    assert!(got[1].at - got[0].at >= Duration::from_millis(100));
    assert!(got[2].at - got[1].at >= Duration::from_millis(200));
    assert!(
        analytics.received()[0].at <= got[1].at,
        "analytics did not wait for the app's retries"
    );

    // The delivery log shows every attempt.
    eventually_metric(
        &gw,
        "hookgate_deliveries_total",
        &[
            ("route", "q"),
            ("destination", "app"),
            ("outcome", "delivered"),
        ],
        1.0,
    )
    .await;
    let detail = json_once(&gw.admin_url(&format!("/api/deliveries/{id}")), None, |d| {
        d["state"] == "delivered"
    })
    .await;
    assert_eq!(detail["state"], "delivered");
    let statuses: Vec<_> = detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["destination"] == "app")
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 503, 200]);
}

#[tokio::test]
async fn retry_after_on_503_is_honoured_when_longer() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    app.then_retry_after(503, 2);
    let gw = Gateway::start(&queue_config(&app.url(), &analytics.url(), FAST)).await;
    queue(&gw, &delivery("job.failed", "ra1")).await;
    eventually("the retry", || app.count() == 2).await;
    let got = app.received();
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, before Retry-After: 2"
    );
}

#[tokio::test]
async fn past_the_last_delay_a_destination_is_dead_until_retried_by_hand() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    app.always(500, Duration::ZERO);
    let delivery_cfg = "      timeout: 2s\n      retry: [50ms]\n      jitter: 0%\n";
    let body = format!(
        "  token: \"t0ken\"\n{}",
        queue_config(&app.url(), &analytics.url(), delivery_cfg)
    );
    let gw = Gateway::start(&body).await;
    let (_, _, id) = queue(&gw, &delivery("job.failed", "d1")).await;
    let id = id.unwrap();

    eventually_metric(
        &gw,
        "hookgate_deliveries_total",
        &[("route", "q"), ("destination", "app"), ("outcome", "dead")],
        1.0,
    )
    .await;
    assert_eq!(app.count(), 2, "the first attempt and one retry, then dead");
    eventually_metric(
        &gw,
        "hookgate_queue_deliveries",
        &[("route", "q"), ("destination", "app"), ("state", "dead")],
        1.0,
    )
    .await;

    let api = |path: &str| gw.admin_url(path);
    let auth = |r: reqwest::RequestBuilder| r.header("Authorization", "Bearer t0ken");
    let list: serde_json::Value = auth(client().get(api("/api/deliveries?state=dead")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["deliveries"][0]["id"], id.as_str());
    assert_eq!(list["deliveries"][0]["state"], "dead");

    // Without the token: 401; with it: requeued, attempted again now.
    let refused = client()
        .post(api(&format!("/api/deliveries/{id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    app.always(200, Duration::ZERO);
    let requeued = auth(client().post(api(&format!("/api/deliveries/{id}/retry"))))
        .send()
        .await
        .unwrap();
    assert_eq!(requeued.status(), 202);
    let n: serde_json::Value = requeued.json().await.unwrap();
    assert_eq!(n["requeued"], 1);
    eventually("the hand retry at the app", || app.count() == 3).await;
    assert_eq!(app.received()[2].header("Hookgate-Attempt"), Some("3"));
    eventually_metric(
        &gw,
        "hookgate_queue_deliveries",
        &[("route", "q"), ("destination", "app"), ("state", "dead")],
        0.0,
    )
    .await;
}

#[tokio::test]
async fn nothing_accepted_is_lost_across_kill_9() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    // Slow answers, so kills land while attempts are in progress too.
    app.always(200, Duration::from_millis(30));
    let cfg = "      timeout: 1s\n      retry: [100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms]\n";
    let mut gw = Gateway::start(&queue_config(&app.url(), &analytics.url(), cfg)).await;
    // More than any round can send before its kill, however fast the machine: each stream is
    // cut by the kill rather than ending before it.
    const PER_ROUND: usize = 400;
    let (accepted, refused_during_kill) =
        accepted_across_kill_9(&mut gw, "/webhooks/q", 4, PER_ROUND).await;
    assert!(accepted.len() >= 40, "only {} accepted", accepted.len());
    assert!(
        refused_during_kill > 0 || accepted.len() < 4 * PER_ROUND,
        "no kill landed during the stream"
    );
    eventually_within(
        "every accepted delivery at the app",
        Duration::from_secs(60),
        || {
            let received = app.received();
            accepted.iter().all(|id| {
                received
                    .iter()
                    .any(|r| r.header("Hookgate-Delivery-Id") == Some(id))
            })
        },
    )
    .await;
    eventually_within("and at analytics", Duration::from_secs(60), || {
        let received = analytics.received();
        accepted.iter().all(|id| {
            received
                .iter()
                .any(|r| r.header("Hookgate-Delivery-Id") == Some(id))
        })
    })
    .await;
}

#[tokio::test]
async fn deliveries_wait_while_the_app_is_down_and_arrive_when_it_is_back() {
    // The app's address: bound (so nobody else takes the port) but not listening yet.
    let (reserved, port) = refused_port();
    let addr = format!("127.0.0.1:{port}");
    let analytics = Upstream::start().await;
    let cfg = "      timeout: 1s\n      retry: [100ms, 200ms, 400ms, 400ms, 400ms, 400ms, 400ms, 400ms, 400ms, 400ms]\n";
    let mut gw = Gateway::start(&queue_config(
        &format!("http://{addr}"),
        &analytics.url(),
        cfg,
    ))
    .await;
    let (_, _, id) = queue(&gw, &delivery("job.failed", "down1")).await;
    let id = id.unwrap();
    eventually_metric(
        &gw,
        "hookgate_delivery_attempts_total",
        &[
            ("route", "q"),
            ("destination", "app"),
            ("result", "unavailable"),
        ],
        2.0,
    )
    .await;
    // The gateway restarts meanwhile; the delivery is still due.
    gw.restart().await;
    let app = Upstream::start_on_reserved(reserved);
    eventually_within(
        "the delivery once the app is back",
        Duration::from_secs(20),
        || app.received_with("Hookgate-Delivery-Id", &id).len() == 1,
    )
    .await;
}

#[tokio::test]
async fn a_forward_route_on_the_file_store_remembers_keys_across_a_restart() {
    let up = Upstream::start().await;
    let cfg = format!(
        "store:\n  url: \"file:state.db\"\nroutes:\n{}",
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    );
    let mut gw = Gateway::start(&cfg).await;
    let body = delivery("job.completed", "fwd1");
    assert_eq!(
        answer(post_signed(&gw.http_url("/webhooks/imggo"), &body).await)
            .await
            .0,
        200
    );
    gw.restart().await;
    let (status, code, _) = answer(post_signed(&gw.http_url("/webhooks/imggo"), &body).await).await;
    assert_eq!((status, code.as_str()), (200, "already_processed"));
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn max_in_flight_and_rate_hold_at_the_app() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    app.always(200, Duration::from_millis(100));
    let cfg = "      max_in_flight: 1\n";
    let gw = Gateway::start(&queue_config(&app.url(), &analytics.url(), cfg)).await;
    for i in 0..5 {
        queue(&gw, &delivery("job.failed", &format!("mif{i}"))).await;
    }
    eventually("five at the app", || app.count() == 5).await;
    let at: Vec<Instant> = app.received().iter().map(|r| r.at).collect();
    for pair in at.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(95),
            "two attempts overlapped: {:?}",
            pair[1] - pair[0]
        );
    }

    let app = Upstream::start().await;
    let cfg = "      rate: 4/s\n";
    let gw = Gateway::start(&queue_config(&app.url(), &analytics.url(), cfg)).await;
    for i in 0..12 {
        queue(&gw, &delivery("job.failed", &format!("rate{i}"))).await;
    }
    eventually("twelve at the app", || app.count() == 12).await;
    let at: Vec<Instant> = app.received().iter().map(|r| r.at).collect();
    let spread = at[11] - at[0];
    // A burst of 4, then 8 more at 4 per second: at least ~2 s.
    assert!(
        spread >= Duration::from_millis(1800),
        "12 attempts in {spread:?} at 4/s"
    );
}

#[tokio::test]
async fn max_queued_answers_queue_full_and_the_sender_keeps_it() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    app.always(500, Duration::ZERO);
    let cfg = "      retry: [10s]\n      max_queued: 2\n";
    let mut gw = Gateway::start(&queue_config(&app.url(), &analytics.url(), cfg)).await;
    assert_eq!(queue(&gw, &delivery("job.failed", "f1")).await.1, "queued");
    assert_eq!(queue(&gw, &delivery("job.failed", "f2")).await.1, "queued");
    let resp = post_signed(&gw.http_url("/webhooks/q"), &delivery("job.failed", "f3")).await;
    assert!(resp.headers().contains_key("retry-after"));
    let (status, code, _) = answer(resp).await;
    assert_eq!((status, code.as_str()), (503, "queue_full"));
    // Idempotency comes before capacity (§3): a redelivery of an accepted key is answered as
    // such, not refused as if it were new.
    let (status, code, _) = queue(&gw, &delivery("job.failed", "f1")).await;
    assert_eq!((status, code.as_str()), (200, "already_processed"));
    // The count of undelivered deliveries is made again from the file after a restart.
    gw.restart().await;
    let (status, code, _) = queue(&gw, &delivery("job.failed", "f3")).await;
    assert_eq!((status, code.as_str()), (503, "queue_full"));

    // Both wait their 10 s retry: the gauges show them pending and ageing.
    let pending = [("route", "q"), ("destination", "app"), ("state", "pending")];
    eventually_metric(&gw, "hookgate_queue_deliveries", &pending, 2.0).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let oldest = gw
        .metric(
            "hookgate_queue_oldest_pending_seconds",
            &[("route", "q"), ("destination", "app")],
        )
        .await;
    assert!((1.0..10.0).contains(&oldest), "oldest pending {oldest} s");
}

/// A small file system of the test's own, unmounted on drop (needs root, as CI and this
/// project's machines run the tests).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a small tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_is_503_with_nothing_half_stored_and_recovers_once_there_is_room() {
    let disk = SmallDisk::mount("8m");
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let store = disk.dir.path().join("state.db");
    let cfg = queue_config(&app.url(), &analytics.url(), FAST)
        .replace("file:state.db", &format!("file:{}", store.display()))
        .replace("max_body: 256KiB", "max_body: 1MiB");
    let cfg = cfg.replace("    schema: SCHEMA\n", "");
    let gw = Gateway::start(&cfg).await;
    // Fill the disk, then give back a little room: a few deliveries fit, then none.
    let filler = disk.dir.path().join("filler");
    let out = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "count=1000"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the filler should hit the end of the disk"
    );
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(1 << 20)).unwrap();
    drop(file);

    let big = |i: usize| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&delivery("job.failed", &format!("full{i}"))).unwrap();
        v["padding"] = serde_json::json!("p".repeat(300_000));
        serde_json::to_vec(&v).unwrap()
    };
    let mut refused = None;
    let mut queued = Vec::new();
    for i in 0..40 {
        let (status, code, id) = queue(&gw, &big(i)).await;
        match (status, code.as_str()) {
            (200, "queued") => queued.push(id.unwrap()),
            (503, "store_unavailable") => {
                refused = Some(i);
                break;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let refused = refused.expect("a full disk must refuse a delivery");
    let log = gw.settled_log().await;
    assert!(
        log.contains("store full"),
        "the log names the full disk:\n{log}"
    );
    // Nothing of the refused delivery was kept: it is not in the log, and never delivered.
    // The log may answer 503 store_unavailable while the file is reopened after the failed
    // write; it answers again once it is.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed: serde_json::Value = reqwest::get(gw.admin_url("/api/deliveries?limit=500"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if listed["error"]["code"] != "store_unavailable" || Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let count = listed["deliveries"].as_array().map_or(0, Vec::len);
    assert_eq!(
        count,
        queued.len(),
        "only what was answered queued is stored: {listed}\n{}",
        gw.log()
    );

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let again = loop {
        let (status, _, id) = queue(&gw, &big(refused)).await;
        if status == 200 {
            break id.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the store did not recover once there was room"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    queued.push(again);
    eventually("every queued delivery at the app", || {
        queued
            .iter()
            .all(|id| !app.received_with("Hookgate-Delivery-Id", id).is_empty())
    })
    .await;
}

#[tokio::test]
async fn delivered_deliveries_are_purged_after_retention_and_their_key_is_kept() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let cfg = "      retention: 1s\n";
    let gw = Gateway::start(&queue_config(&app.url(), &analytics.url(), cfg)).await;
    let body = delivery("job.completed", "purge1");
    let (_, _, id) = queue(&gw, &body).await;
    let id = id.unwrap();
    eventually("delivered to both", || {
        app.count() == 1 && analytics.count() == 1
    })
    .await;
    let detail = |path: String| {
        let url = gw.admin_url(&path);
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(detail(format!("/api/deliveries/{id}")).await, 200);
    // The purge runs every 10 s; after it the delivery, its body and attempts are gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while detail(format!("/api/deliveries/{id}")).await != 404 {
        assert!(Instant::now() < deadline, "not purged after its retention");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(detail(format!("/api/deliveries/{id}/body")).await, 404);
    // The key lives its own ttl (24h): a redelivery is still recognised, never delivered again.
    let (status, code, _) = queue(&gw, &body).await;
    assert_eq!((status, code.as_str()), (200, "already_processed"));
    assert_eq!(app.count(), 1);
}

/// `retention` purges dead deliveries as it does delivered ones, and never a pending one, however
/// old (PRODUCT.md §9).
#[tokio::test]
async fn retention_purges_dead_deliveries_and_keeps_pending_ones() {
    retention_scenario("file:state.db").await;
}

#[tokio::test]
async fn retention_purges_dead_deliveries_and_keeps_pending_ones_on_postgres() {
    let db = TestDatabase::create();
    retention_scenario(&db.url()).await;
}

async fn retention_scenario(store: &str) {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let gw = Gateway::start(
        &queue_config(
            &app.url(),
            &analytics.url(),
            "      retention: 1s\n      retry: [50ms]\n      jitter: 0%\n",
        )
        .replace("file:state.db", store),
    )
    .await;
    gw.wait_ready().await;
    // Told to come back in an hour: pending all along, and older than the dead one below, so a
    // purge that ignored the state would take it first.
    app.then_retry_after(503, 3600);
    let (_, _, pending) = queue(&gw, &delivery("job.failed", "keep1")).await;
    let pending = pending.unwrap();
    eventually("the pending one's first attempt", || app.count() == 1).await;
    // Two failed attempts: dead.
    app.then(500, Duration::ZERO);
    app.then(500, Duration::ZERO);
    let (_, _, dead) = queue(&gw, &delivery("job.failed", "dead1")).await;
    let dead = dead.unwrap();
    eventually_metric(
        &gw,
        "hookgate_queue_deliveries",
        &[("destination", "app"), ("state", "dead")],
        1.0,
    )
    .await;

    let status = |id: &str| {
        let url = gw.admin_url(&format!("/api/deliveries/{id}"));
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    // The purge runs every 10 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&dead).await != 404 {
        assert!(
            Instant::now() < deadline,
            "the dead delivery was not purged"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status(&pending).await, 200, "a pending delivery was purged");
    let d: serde_json::Value = reqwest::get(gw.admin_url(&format!("/api/deliveries/{pending}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["state"], "pending", "{d}");
}

/// SIGTERM (PRODUCT.md §9): the attempt in progress gets `grace_period` (1 s in the harness) to
/// finish and is recorded; the deliveries not yet attempted stay stored and go out after the
/// restart; none is lost and the finished one is not sent again.
#[tokio::test]
async fn sigterm_lets_the_attempt_in_progress_finish_and_keeps_the_rest_for_the_restart() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    app.always(200, Duration::from_millis(400));
    let mut gw = Gateway::start(&queue_config(
        &app.url(),
        &analytics.url(),
        "      max_in_flight: 1\n      retry: [100ms]\n      jitter: 0%\n",
    ))
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            queue(&gw, &delivery("job.failed", &format!("term{i}")))
                .await
                .2
                .unwrap(),
        );
    }
    eventually("an attempt in progress", || app.count() == 1).await;
    let status = gw.terminate().await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(app.count(), 1, "an attempt started after SIGTERM");
    let log = gw.log();
    assert!(log.contains("hookgate stopped"), "{log}");

    gw.start_again().await;
    eventually_within(
        "every delivery after the restart",
        Duration::from_secs(20),
        || {
            let received = app.received();
            ids.iter().all(|id| {
                received
                    .iter()
                    .any(|r| r.header("Hookgate-Delivery-Id") == Some(id))
            })
        },
    )
    .await;
    // The first was answered within the grace period and recorded: not sent again.
    let first = app.received()[0]
        .header("Hookgate-Delivery-Id")
        .unwrap()
        .to_string();
    // The restarted gateway delivered the other four (its counters start at zero).
    eventually_metric(
        &gw,
        "hookgate_deliveries_total",
        &[("destination", "app"), ("outcome", "delivered")],
        4.0,
    )
    .await;
    assert_eq!(
        app.received_with("Hookgate-Delivery-Id", &first).len(),
        1,
        "the attempt that finished during the grace period was delivered again"
    );
    assert_eq!(app.count(), 5);
}

/// `Hookgate-Attempt` counts attempts started (PRODUCT.md §9): the attempt a kill -9 cut off
/// counts, so the one after the restart is number 2, not 1 again.
#[tokio::test]
async fn the_attempt_after_a_kill_9_is_numbered_after_the_one_it_cut_off() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    app.always(200, Duration::from_secs(5));
    let mut gw = Gateway::start(&queue_config(
        &app.url(),
        &analytics.url(),
        "      timeout: 10s\n      retry: [100ms]\n",
    ))
    .await;
    let (_, _, id) = queue(&gw, &delivery("job.failed", "cut")).await;
    let id = id.unwrap();
    eventually("the attempt in progress", || app.count() == 1).await;
    // The file store syncs an attempt's count within 100 ms of its start (PRODUCT.md §9); the
    // kill comes after that, while the app still holds the attempt.
    tokio::time::sleep(Duration::from_millis(400)).await;
    gw.kill9();
    app.always(200, Duration::ZERO);
    gw.start_again().await;
    eventually("the attempt after the restart", || app.count() == 2).await;
    let numbers: Vec<_> = app
        .received_with("Hookgate-Delivery-Id", &id)
        .iter()
        .map(|r| r.header("Hookgate-Attempt").unwrap_or("-").to_string())
        .collect();
    assert_eq!(numbers, ["1", "2"]);
}

/// Copies of one delivery sent at once (a sender's retry racing its original) are stored once
/// (PRODUCT.md §3, §9): one is `queued`, every other is answered as a redelivery or as in
/// progress, and the app gets the delivery once.
#[tokio::test(flavor = "multi_thread")]
async fn copies_of_one_key_sent_at_once_are_queued_once() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let gw = Gateway::start(&queue_config(&app.url(), &analytics.url(), FAST)).await;
    let body = delivery("job.failed", "copies");
    let url = gw.http_url("/webhooks/q");
    let sends: Vec<_> = (0..16)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move { answer(post_signed(&url, &body).await).await })
        })
        .collect();
    let mut codes = Vec::new();
    for s in sends {
        let (status, code, _) = s.await.unwrap();
        codes.push((status, code));
    }
    let queued = codes.iter().filter(|(_, c)| c == "queued").count();
    assert_eq!(queued, 1, "{codes:?}");
    assert!(
        codes.iter().all(|(s, c)| c == "queued"
            || (*s == 200 && c == "already_processed")
            || (*s == 409 && c == "delivery_in_progress")),
        "{codes:?}"
    );
    eventually_metric(
        &gw,
        "hookgate_deliveries_total",
        &[("destination", "app"), ("outcome", "delivered")],
        1.0,
    )
    .await;
    assert_eq!(app.count(), 1);
}
