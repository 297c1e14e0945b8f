//! PRODUCT.md §8: SIGHUP reload swaps the config for new requests; an invalid file is refused.

use crate::harness::*;
use std::process::Command;

fn hup(gw: &Gateway) {
    Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_a_valid_config_and_refuses_an_invalid_one() {
    let up = Upstream::start().await;
    let route = imggo_route("imggo", "/webhooks/imggo", &up.url(), "");
    let gw = Gateway::start(&format!("routes:\n{route}")).await;
    let url = gw.http_url("/webhooks/imggo");
    let send = |secret: &'static str, job: &'static str| {
        let url = url.clone();
        async move {
            let body = delivery("job.completed", job);
            client()
                .post(url)
                .header("X-ImgGo-Signature", imggo_signature_with(secret, &body))
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(send(SECRET, "r1").await, 200);

    // Rotate the secret and add a route.
    let rotated = route.replace(SECRET, "rotated-secret");
    gw.rewrite(&format!(
        "routes:\n{rotated}{}",
        imggo_route("new", "/webhooks/new", &up.url(), "")
    ));
    hup(&gw);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while gw
        .metric("hookgate_config_reloads_total", &[("result", "ok")])
        .await
        < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "reload not counted:\n{}",
            gw.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(send("rotated-secret", "r2").await, 200);
    assert_eq!(send(SECRET, "r3").await, 401, "the old secret is gone");
    let body = delivery("job.completed", "r4");
    let new_route = client()
        .post(gw.http_url("/webhooks/new"))
        .header("X-ImgGo-Signature", imggo_signature(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(new_route.status(), 200);

    // An invalid file is refused; the previous config keeps serving.
    gw.rewrite("routes:\n  - name: broken\n    path: no-slash\n    upstream: nowhere\n");
    hup(&gw);
    while gw
        .metric("hookgate_config_reloads_total", &[("result", "error")])
        .await
        < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "refused reload not counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(send("rotated-secret", "r5").await, 200);
    assert!(gw.log().contains("config reload refused"));
}
