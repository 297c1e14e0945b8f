//! The delivery log (PRODUCT.md §10): the admin API, its token rules, paging, and the
//! `hookgate deliveries` commands against a running gateway.

use crate::harness::*;
use crate::queue::{eventually_metric, queue, queue_config};
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "s3cret-token";

async fn gateway_with_token(app: &Upstream, analytics: &Upstream, delivery: &str) -> Gateway {
    // The line continues the harness's `admin:` mapping.
    let body = format!(
        "  token: \"{TOKEN}\"\n{}",
        queue_config(&app.url(), &analytics.url(), delivery)
    );
    Gateway::start(&body).await
}

async fn get(gw: &Gateway, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = client().get(gw.admin_url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn every_api_call_needs_the_token_when_one_is_set() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let gw = gateway_with_token(&app, &analytics, "      retry: [50ms]\n").await;
    let (_, _, id) = queue(&gw, &delivery("job.completed", "a1")).await;
    let id = id.unwrap();
    for path in [
        "/api/deliveries".to_string(),
        format!("/api/deliveries/{id}"),
        format!("/api/deliveries/{id}/body"),
        "/api/destinations".to_string(),
    ] {
        let (status, json) = get(&gw, &path, None).await;
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
        assert_eq!(get(&gw, &path, Some("wrong")).await.0, 401, "{path}");
    }
    for call in [
        format!("/api/deliveries/{id}/retry"),
        "/api/deliveries/retry?route=q&state=dead".to_string(),
        "/api/deliveries/replay?route=q&since=1h".to_string(),
    ] {
        assert_eq!(admin_post(&gw, &call, None).await.0, 401, "{call}");
        assert_eq!(admin_post(&gw, &call, Some("wrong")).await.0, 401, "{call}");
    }
    // Metrics and probes stay open for Prometheus and Kubernetes.
    assert_eq!(
        reqwest::get(gw.admin_url("/metrics"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(gw.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );

    let (status, one) = get(&gw, &format!("/api/deliveries/{id}"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["route"], "q");
    assert_eq!(one["event"], "job.completed");
    assert!(one["key"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(one["received_at"].as_str().unwrap().ends_with('Z'));
    let names: Vec<_> = one["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "analytics"]);

    let body = client()
        .get(gw.admin_url(&format!("/api/deliveries/{id}/body")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        &body[..],
        &delivery("job.completed", "a1")[..],
        "the exact stored bytes"
    );

    let (status, json) = get(&gw, "/api/deliveries/dlv_00000000000000ff", Some(TOKEN)).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (404, Some("delivery_not_found"))
    );
    assert_eq!(
        get(&gw, "/api/deliveries/nonsense", Some(TOKEN)).await.0,
        404
    );
    assert_eq!(
        admin_post(
            &gw,
            "/api/deliveries/dlv_00000000000000ff/retry",
            Some(TOKEN)
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn without_a_token_reads_are_served_and_retries_refused() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let gw = Gateway::start(&queue_config(
        &app.url(),
        &analytics.url(),
        "      retry: [50ms]\n",
    ))
    .await;
    let (_, _, id) = queue(&gw, &delivery("job.completed", "n1")).await;
    let id = id.unwrap();
    assert_eq!(
        get(&gw, &format!("/api/deliveries/{id}"), None).await.0,
        200
    );
    assert_eq!(get(&gw, "/api/destinations", None).await.0, 200);
    for call in [
        format!("/api/deliveries/{id}/retry"),
        "/api/deliveries/retry?route=q&state=dead".to_string(),
        "/api/deliveries/replay?route=q&since=1h".to_string(),
    ] {
        let (status, json) = admin_post(&gw, &call, None).await;
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (403, Some("admin_token_required")),
            "{call}"
        );
    }
}

#[tokio::test]
async fn pages_are_newest_first_without_gaps_or_duplicates_while_deliveries_arrive() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let gw = gateway_with_token(&app, &analytics, "      retry: [50ms]\n").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            queue(&gw, &delivery("job.failed", &format!("p{i}")))
                .await
                .2
                .unwrap(),
        );
    }
    let (_, first) = get(&gw, "/api/deliveries?limit=3", Some(TOKEN)).await;
    let mut seen: Vec<String> = first["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    let mut next = first["next"].as_str().map(str::to_string);
    // New deliveries arrive between pages: they belong before the first page, not in later ones.
    for i in 0..3 {
        queue(&gw, &delivery("job.failed", &format!("late{i}"))).await;
    }
    while let Some(cursor) = next {
        let (status, page) = get(
            &gw,
            &format!("/api/deliveries?limit=3&before={cursor}"),
            Some(TOKEN),
        )
        .await;
        assert_eq!(status, 200);
        for d in page["deliveries"].as_array().unwrap() {
            seen.push(d["id"].as_str().unwrap().to_string());
        }
        next = page["next"].as_str().map(str::to_string);
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());

    let (status, json) = get(&gw, "/api/deliveries?state=sideways", Some(TOKEN)).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
}

#[tokio::test]
async fn filters_and_bulk_retry_of_a_routes_dead_deliveries() {
    filters_and_bulk_retry_on("file:state.db").await;
}

/// The log's filters by route, destination and each state, and a route's bulk retry, on the
/// store at `store_url`.
pub async fn filters_and_bulk_retry_on(store_url: &str) {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    app.always(500, Duration::ZERO);
    let body = format!(
        "  token: \"{TOKEN}\"\n{}",
        queue_config(
            &app.url(),
            &analytics.url(),
            "      retry: [20ms]\n      jitter: 0%\n"
        )
        .replace("file:state.db", store_url)
    );
    let gw = Gateway::start(&body).await;
    gw.wait_ready().await;
    let (_, _, done) = queue(&gw, &delivery("job.completed", "b0")).await;
    for i in 1..=3 {
        queue(&gw, &delivery("job.failed", &format!("b{i}"))).await;
    }
    eventually_metric(
        &gw,
        "hookgate_queue_deliveries",
        &[("route", "q"), ("destination", "app"), ("state", "dead")],
        4.0,
    )
    .await;

    let (_, dead) = get(&gw, "/api/deliveries?route=q&state=dead", Some(TOKEN)).await;
    assert_eq!(dead["deliveries"].as_array().unwrap().len(), 4);
    let (_, to_analytics) = get(&gw, "/api/deliveries?destination=analytics", Some(TOKEN)).await;
    let only: Vec<_> = to_analytics["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        only,
        [done.unwrap().as_str()],
        "only job.completed goes to analytics"
    );
    let (_, other_route) = get(&gw, "/api/deliveries?route=nope", Some(TOKEN)).await;
    assert_eq!(other_route["deliveries"].as_array().unwrap().len(), 0);

    app.always(200, Duration::ZERO);
    let before = app.count();
    let (status, json) =
        admin_post(&gw, "/api/deliveries/retry?route=q&state=dead", Some(TOKEN)).await;
    assert_eq!((status, json["requeued"].as_u64()), (202, Some(4)));
    eventually("four hand retries at the app", || app.count() == before + 4).await;
    eventually_metric(
        &gw,
        "hookgate_queue_deliveries",
        &[("route", "q"), ("destination", "app"), ("state", "dead")],
        0.0,
    )
    .await;
    let delivered = json_once(
        &gw.admin_url("/api/deliveries?state=delivered"),
        Some(TOKEN),
        |d| d["deliveries"].as_array().map_or(0, Vec::len) == 4,
    )
    .await;
    assert_eq!(delivered["deliveries"].as_array().unwrap().len(), 4);

    // One more, held at the app: pending until it answers, and listed only as pending.
    app.always(200, Duration::from_secs(15));
    let (_, _, held) = queue(&gw, &delivery("job.failed", "b4")).await;
    let held = held.unwrap();
    eventually("the held delivery at the app", || app.count() == before + 5).await;
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, pending) = get(&gw, "/api/deliveries?state=pending", Some(TOKEN)).await;
    assert_eq!(ids(&pending), std::slice::from_ref(&held));
    let (_, delivered) = get(&gw, "/api/deliveries?state=delivered", Some(TOKEN)).await;
    assert_eq!(delivered["deliveries"].as_array().unwrap().len(), 4);
    assert!(!ids(&delivered).contains(&held));
    let (_, dead) = get(&gw, "/api/deliveries?state=dead", Some(TOKEN)).await;
    assert_eq!(dead["deliveries"].as_array().unwrap().len(), 0);
}

/// A gateway with the token whose app answers 500 until told otherwise, and one delivery (of
/// `job`) already dead there after its single 20 ms retry.
async fn one_dead_delivery(job: &str) -> (Upstream, Upstream, Gateway, String) {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    app.always(500, Duration::ZERO);
    let gw = gateway_with_token(&app, &analytics, "      retry: [20ms]\n").await;
    let (_, _, id) = queue(&gw, &delivery("job.failed", job)).await;
    let id = id.unwrap();
    eventually_metric(
        &gw,
        "hookgate_queue_deliveries",
        &[("route", "q"), ("destination", "app"), ("state", "dead")],
        1.0,
    )
    .await;
    (app, analytics, gw, id)
}

fn cli(gw: &Gateway, args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    cmd.arg("deliveries").args(args).arg("-c").arg(&gw.config);
    match token {
        Some(t) => cmd.env("HOOKGATE_ADMIN_TOKEN", t),
        None => cmd.env_remove("HOOKGATE_ADMIN_TOKEN"),
    };
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_deliveries_commands_list_show_and_retry() {
    let (app, _analytics, gw, id) = one_dead_delivery("c1").await;

    let (code, out, err) = cli(&gw, &["list", "--state", "dead"], Some(TOKEN));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATE"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&id) && lines[1].contains("dead"),
        "{out}"
    );

    let (code, out, _) = cli(&gw, &["list", "--json"], Some(TOKEN));
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["deliveries"][0]["id"], id.as_str());

    let (code, out, _) = cli(&gw, &["show", &id], Some(TOKEN));
    assert_eq!(code, 0);
    assert!(out.contains("the app answered 500"), "{out}");

    let (code, _, err) = cli(&gw, &["list"], None);
    assert_eq!(code, 1);
    assert!(err.contains("401") && err.contains("unauthorized"), "{err}");

    app.always(200, Duration::ZERO);
    let (code, out, err) = cli(&gw, &["retry", &id], Some(TOKEN));
    assert_eq!((code, out.trim()), (0, "requeued 1"), "{err}");
    eventually("the retried delivery at the app", || {
        app.received()
            .last()
            .and_then(|r| r.header("Hookgate-Delivery-Id").map(str::to_string))
            == Some(id.clone())
            && app.count() == 3
    })
    .await;
    let (code, _, err) = cli(&gw, &["show", "dlv_00000000000000ff"], Some(TOKEN));
    assert_eq!(code, 1);
    assert!(err.contains("delivery_not_found"), "{err}");
}

#[tokio::test]
async fn the_list_pages_by_50_and_the_commands_take_admin_route_limit_and_destination() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    app.always(500, Duration::ZERO);
    analytics.always(500, Duration::ZERO);
    let gw = gateway_with_token(&app, &analytics, "      retry: [20ms]\n").await;
    for i in 0..52 {
        queue(&gw, &delivery("job.failed", &format!("p{i}"))).await;
    }
    // job.completed also goes to analytics.
    let (_, _, both) = queue(&gw, &delivery("job.completed", "both")).await;
    let both = both.unwrap();
    eventually_metric(
        &gw,
        "hookgate_queue_deliveries",
        &[("route", "q"), ("destination", "app"), ("state", "dead")],
        53.0,
    )
    .await;

    // The API's default page is 50, with a cursor to the rest.
    let (status, page) = get(&gw, "/api/deliveries", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 50);
    assert!(page["next"].is_string(), "{}", page["next"]);

    let (code, out, err) = cli(
        &gw,
        &["list", "--route", "q", "--limit", "2", "--json"],
        Some(TOKEN),
    );
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["deliveries"].as_array().unwrap().len(), 2);
    assert_eq!(json["deliveries"][0]["id"], both.as_str(), "newest first");
    let (_, out, _) = cli(&gw, &["list", "--route", "other", "--json"], Some(TOKEN));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["deliveries"], serde_json::json!([]));

    // --admin instead of the config's address: from a folder with no config at all.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["deliveries", "show", &both, "--json", "--admin"])
        .arg(gw.admin_url(""))
        .current_dir(elsewhere.path())
        .env("HOOKGATE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], both.as_str());

    // Only the named destination is attempted again.
    analytics.always(200, Duration::ZERO);
    let (app_before, analytics_before) = (app.count(), analytics.count());
    let (code, out, err) = cli(
        &gw,
        &["retry", &both, "--destination", "analytics"],
        Some(TOKEN),
    );
    assert_eq!((code, out.trim()), (0, "requeued 1"), "{err}");
    let d = json_once(
        &gw.admin_url(&format!("/api/deliveries/{both}")),
        Some(TOKEN),
        |d| d["destinations"][1]["state"] == "delivered",
    )
    .await;
    assert_eq!(d["destinations"][1]["name"], "analytics", "{d}");
    assert_eq!(d["destinations"][1]["state"], "delivered", "{d}");
    assert_eq!(d["destinations"][0]["state"], "dead", "{d}");
    assert_eq!(analytics.count(), analytics_before + 1);
    assert_eq!(app.count(), app_before, "app was not retried");
    // A fresh schedule: the retried destination's attempts go on from its count.
    assert_eq!(
        analytics
            .received()
            .last()
            .unwrap()
            .header("Hookgate-Attempt"),
        Some("3")
    );
}

#[tokio::test]
async fn the_page_is_served_from_the_binary() {
    let app = Upstream::start().await;
    let analytics = Upstream::start().await;
    let gw = gateway_with_token(&app, &analytics, "      retry: [50ms]\n").await;
    let resp = reqwest::get(gw.admin_url("/ui/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    // Only the page's own script and style run, nothing is framed or fetched from elsewhere
    // (the browser tests show the page still works under it).
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    for directive in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let page = resp.text().await.unwrap();
    assert!(page.contains("/api/deliveries"));
    // Nothing fetched from outside the binary.
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "external reference"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_retries_a_dead_delivery_from_the_page_in_a_real_browser() {
    let (app, _analytics, gw, id) = one_dead_delivery("ui1").await;
    app.always(200, Duration::ZERO);

    // UI_SCREENSHOT=docs/delivery-log.png refreshes the README's picture; otherwise a temp file.
    let shots = tempfile::tempdir().unwrap();
    let screenshot = std::env::var("UI_SCREENSHOT").map_or_else(
        |_| shots.path().join("delivery-log.png"),
        |p| Path::new(env!("CARGO_MANIFEST_DIR")).join(p),
    );
    // Off the test's runtime: the stand-in apps must keep answering while the browser runs.
    let (admin, delivery_id) = (gw.admin_url(""), id.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/ui/delivery_log.py"
            ))
            .arg(admin)
            .arg(TOKEN)
            .arg(delivery_id)
            .arg(screenshot)
            .output()
            .expect(
                "python3 with selenium, and Debian's chromium + chromium-driver (scripts/setup.sh)",
            )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}\napp received {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        app.count(),
        gw.log()
    );
    assert_eq!(
        app.received_with("Hookgate-Delivery-Id", &id).len(),
        3,
        "two failed attempts, then the retry from the page"
    );
}
