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
    eventually_async_reload(&gw).await;
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

async fn eventually_async_reload(gw: &Gateway) {
    for _ in 0..200 {
        if gw
            .metric("hookgate_config_reloads_total", &[("result", "ok")])
            .await
            >= 1.0
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the reload was not applied:\n{}", gw.log());
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
