//! Replay (PRODUCT.md §10): every delivery of a route received in a window, delivered ones too,
//! is attempted again, to its destinations or to a named one, which is how a destination added
//! by reload is backfilled. On the file store and on Postgres.

use crate::harness::*;
use std::process::Command;

const TOKEN: &str = "replay-token";

fn config(store: &str, destinations: &[(&str, String)]) -> String {
    let mut list = String::new();
    for (name, url) in destinations {
        list.push_str(&format!("      - name: {name}\n        url: \"{url}\"\n"));
    }
    format!(
        r#"  token: "{TOKEN}"
store:
  url: "{store}"
routes:
  - name: q
    path: /webhooks/q
    mode: queue
    https_only: false
    upstreams:
{list}    signature: {{ scheme: imggo, secrets: ["{SECRET}"] }}
    events: {{ pointer: /event, allow: [job.completed, job.failed] }}
    idempotency: {{ key: ["/event", "/job_id"] }}
    delivery:
      timeout: 2s
      retry: [100ms]
      jitter: 0%
"#
    )
}

async fn replay_scenario(store: &str) {
    let app = Upstream::start().await;
    let gw = Gateway::start(&config(store, &[("app", app.url())])).await;
    gw.wait_ready().await;
    let mut ids = Vec::new();
    for job in ["r1", "r2", "r3"] {
        let (status, code, json) =
            answer(post_signed(&gw.http_url("/webhooks/q"), &delivery("job.completed", job)).await)
                .await;
        assert_eq!((status, code.as_str()), (200, "queued"));
        ids.push(json["delivery_id"].as_str().unwrap().to_string());
    }
    eventually("the first attempts", || app.count() == 3).await;
    for id in &ids {
        let url = gw.admin_url(&format!("/api/deliveries/{id}"));
        let d = json_once(&url, Some(TOKEN), |d| d["state"] == "delivered").await;
        assert_eq!(d["state"], "delivered", "{d}");
    }

    // Bad input and the token, before anything is replayed.
    let (status, json) = admin_post(&gw, "/api/deliveries/replay?since=1h", Some(TOKEN)).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (status, json) = admin_post(
        &gw,
        "/api/deliveries/replay?route=q&since=yesterday",
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (status, json) = admin_post(&gw, "/api/deliveries/replay?route=q", Some(TOKEN)).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (status, json) = admin_post(&gw, "/api/deliveries/replay?route=q&since=1h", None).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    // A route or destination the running config does not have: nothing to replay it with.
    for (call, code) in [
        (
            "/api/deliveries/replay?route=nope&since=1h",
            "route_not_found",
        ),
        (
            "/api/deliveries/replay?route=q&since=1h&destination=nope",
            "destination_not_found",
        ),
        (
            "/api/deliveries/retry?route=nope&state=dead",
            "route_not_found",
        ),
    ] {
        let (status, json) = admin_post(&gw, call, Some(TOKEN)).await;
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (404, Some(code)),
            "{call}: {json}"
        );
    }
    // A window that ended before the deliveries came: nothing.
    let (status, json) = admin_post(
        &gw,
        "/api/deliveries/replay?route=q&since=2h&until=1h",
        Some(TOKEN),
    )
    .await;
    assert_eq!((status, json["requeued"].as_u64()), (202, Some(0)));
    assert_eq!(app.count(), 3);

    // Delivered deliveries replayed: each arrives again, as its second attempt.
    let (status, json) =
        admin_post(&gw, "/api/deliveries/replay?route=q&since=1h", Some(TOKEN)).await;
    assert_eq!(
        (status, json["requeued"].as_u64()),
        (202, Some(3)),
        "{json}"
    );
    eventually("the replayed attempts", || app.count() == 6).await;
    for id in &ids {
        let got = app.received_with("Hookgate-Delivery-Id", id);
        let attempts: Vec<_> = got.iter().map(|r| r.header("Hookgate-Attempt")).collect();
        assert_eq!(attempts, [Some("1"), Some("2")], "{id}");
    }

    // A destination added by reload, backfilled by the command line.
    let late = Upstream::start().await;
    gw.rewrite(&config(store, &[("app", app.url()), ("late", late.url())]));
    hup(&gw);
    reload_counted(&gw, "ok").await;
    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args([
            "deliveries",
            "replay",
            "--route",
            "q",
            "--since",
            "1h",
            "--destination",
            "late",
            "-c",
        ])
        .arg(&gw.config)
        .env("HOOKGATE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "requeued 3");
    eventually("the backfill", || late.count() == 3).await;
    for id in &ids {
        let got = late.received_with("Hookgate-Delivery-Id", id);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].header("Hookgate-Attempt"), Some("1"));
        let url = gw.admin_url(&format!("/api/deliveries/{id}"));
        let d = json_once(&url, Some(TOKEN), |d| {
            d["state"] == "delivered" && d["destinations"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
        let names: Vec<_> = d["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["name"].clone(), x["state"].clone()))
            .collect();
        assert!(
            names.contains(&("late".into(), "delivered".into())),
            "the destination is added to the delivery: {d}"
        );
    }
    assert_eq!(
        app.count(),
        6,
        "a replay to one destination leaves the others alone"
    );
}

#[tokio::test]
async fn replay_resends_delivered_deliveries_and_backfills_an_added_destination_on_the_file_store()
{
    replay_scenario("file:state.db").await;
}

#[tokio::test]
async fn replay_resends_delivered_deliveries_and_backfills_an_added_destination_on_postgres() {
    let db = TestDatabase::create();
    replay_scenario(&db.url()).await;
}

/// The gateway's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The deliveries of a big window are requeued a page at a time: the call's memory does not grow
/// with the window. The deliveries are accepted with a destination whose condition selects none
/// of them, so that they are stored and finished without sending, and the replay names it: each
/// of the 100,000 gets it added and due.
#[tokio::test(flavor = "multi_thread")]
async fn replaying_a_window_of_100000_deliveries_does_not_grow_the_gateways_memory() {
    const DELIVERIES: usize = 100_000;
    let app = Upstream::start().await;
    // The app holds each attempt, so what the replay requeues stays pending while it is measured.
    app.always(200, std::time::Duration::from_secs(60));
    let cfg = config("file:state.db", &[("app", app.url())])
        .replace("        url:", "        when: \"false\"\n        url:")
        .replace(
            "      jitter: 0%\n",
            "      jitter: 0%\n      max_in_flight: 1\n",
        );
    let gw = Gateway::start(&cfg).await;
    gw.wait_ready().await;
    let started = std::time::Instant::now();
    let url = gw.http_url("/webhooks/q");
    let mut senders = Vec::new();
    for t in 0..16 {
        let url = url.clone();
        senders.push(tokio::spawn(async move {
            let client = client();
            for i in (t..DELIVERIES).step_by(16) {
                let body = delivery("job.completed", &format!("w{i}"));
                let resp = client
                    .post(&url)
                    .header("X-ImgGo-Signature", imggo_signature(&body))
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    eprintln!("accepted {DELIVERIES} in {:?}", started.elapsed());
    assert_eq!(app.count(), 0, "the condition sent none");

    // Settled: what accepting them grew is in the baseline, not the replay's growth.
    let before = rss_kib(gw.pid());
    let (status, json) = admin_post(
        &gw,
        "/api/deliveries/replay?route=q&since=1h&destination=app",
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (status, json["requeued"].as_u64()),
        (202, Some(DELIVERIES as u64))
    );
    let after = rss_kib(gw.pid());
    eprintln!("RSS {before} KiB before the replay, {after} KiB after");
    assert!(
        after <= before + 8 * 1024,
        "replaying {DELIVERIES} deliveries grew the gateway from {before} KiB to {after} KiB"
    );
    let pending = gw
        .metric(
            "hookgate_queue_deliveries",
            &[("destination", "app"), ("state", "pending")],
        )
        .await;
    assert!(
        pending >= (DELIVERIES - 1) as f64,
        "{pending} pending after the replay"
    );
}
