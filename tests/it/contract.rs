//! PRODUCT.md §3, row by row: each refusal answers its status and code, and never reaches the app.

use crate::harness::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

async fn gateway(up: &Upstream, extra_routes: &str) -> Gateway {
    let routes = format!(
        "routes:\n{}{}{}",
        imggo_route("imggo", "/webhooks/imggo", &up.url(), ""),
        ImggoRoute::new("secure", "/webhooks/secure", &up.url())
            .https_only()
            .yaml(),
        extra_routes
    );
    Gateway::start(&routes).await
}

#[tokio::test(flavor = "multi_thread")]
async fn route_method_address_transport() {
    let up = Upstream::start().await;
    let allow = format!(
        "  - name: office\n    path: /webhooks/office\n    upstream: \"{}\"\n    https_only: false\n    allow_ips: [\"203.0.113.0/24\", \"2001:db8::/32\"]\n",
        up.url()
    );
    let gw = gateway(&up, &allow).await;
    let body = delivery("job.completed", "j1");

    let (s, code, _) = answer(post_signed(&gw.http_url("/webhooks/nope"), &body).await).await;
    assert_eq!((s, code.as_str()), (404, "route_not_found"));

    let resp = client()
        .get(gw.http_url("/webhooks/imggo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("allow").unwrap(), "POST");
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/json"
    );
    let (s, code, json) = answer(resp).await;
    assert_eq!((s, code.as_str()), (405, "method_not_allowed"));
    assert!(json["error"]["message"].as_str().unwrap().len() > 5);

    let (s, code, _) = answer(post_signed(&gw.http_url("/webhooks/office"), &body).await).await;
    assert_eq!((s, code.as_str()), (403, "ip_not_allowed"));

    let (s, code, _) = answer(post_signed(&gw.http_url("/webhooks/secure"), &body).await).await;
    assert_eq!(
        (s, code.as_str()),
        (403, "https_required"),
        "plain HTTP is refused, never redirected"
    );
    let (s, _, _) = answer(post_signed(&gw.https_url("/webhooks/secure"), &body).await).await;
    assert_eq!(s, 200, "the same delivery over HTTPS goes through");

    assert_eq!(up.count(), 1, "only the HTTPS delivery reached the app");
}

#[tokio::test(flavor = "multi_thread")]
async fn size_by_content_length_and_by_counting_chunks() {
    let up = Upstream::start().await;
    let gw = gateway(&up, "").await;
    // max_body is 256KiB in the test route.
    let big = vec![b' '; 300 * 1024];
    let (s, code, _) = answer(post_signed(&gw.http_url("/webhooks/imggo"), &big).await).await;
    assert_eq!((s, code.as_str()), (413, "payload_too_large"));

    // Chunked: no Content-Length, so the gateway must count.
    let head = b"POST /webhooks/imggo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-ImgGo-Signature: 00\r\n\r\n";
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
    let mut parts: Vec<&[u8]> = vec![head];
    for _ in 0..5 {
        parts.push(chunk.as_bytes());
    }
    parts.push(b"0\r\n\r\n");
    let out = raw_exchange(gw.http, &parts, Duration::ZERO).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out:.200}");
    assert!(out.contains("payload_too_large"));
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_body_times_out() {
    let up = Upstream::start().await;
    let gw = gateway(&up, "").await; // client_timeout: 2s
    let started = std::time::Instant::now();
    let out = raw_exchange(
        gw.http,
        &[b"POST /webhooks/imggo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-ImgGo-Signature: 00\r\n\r\n{\"event\""],
        Duration::ZERO,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out:.200}");
    assert!(out.contains("request_timeout"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn signature_missing_invalid_and_rotated() {
    let up = Upstream::start().await;
    let rotated = format!(
        "  - name: rotated\n    path: /webhooks/rotated\n    upstream: \"{}\"\n    https_only: false\n    signature: {{ scheme: imggo, secrets: [\"old-secret\", \"{SECRET}\"] }}\n",
        up.url()
    );
    let gw = gateway(&up, &rotated).await;
    let body = delivery("job.completed", "j1");
    let c = client();

    let r = c
        .post(gw.http_url("/webhooks/imggo"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer(r).await.1, "signature_missing");
    let r = c
        .post(gw.http_url("/webhooks/imggo"))
        .header("X-ImgGo-Signature", imggo_signature_with("wrong", &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let (s, code, _) = answer(r).await;
    assert_eq!((s, code.as_str()), (401, "signature_invalid"));
    // One byte changed after signing.
    let mut tampered = body.clone();
    tampered[2] ^= 1;
    let r = c
        .post(gw.http_url("/webhooks/imggo"))
        .header("X-ImgGo-Signature", imggo_signature(&body))
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(answer(r).await.1, "signature_invalid");
    assert_eq!(up.count(), 0);

    for secret in ["old-secret", SECRET] {
        let r = c
            .post(gw.http_url("/webhooks/rotated"))
            .header("X-ImgGo-Signature", imggo_signature_with(secret, &body))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "either rotated secret verifies");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn timestamp_outside_tolerance() {
    let up = Upstream::start().await;
    let stripe = format!(
        "  - name: stripe\n    path: /webhooks/stripe\n    upstream: \"{}\"\n    https_only: false\n    signature: {{ scheme: stripe, secrets: [\"whsec_it\"], tolerance: 5m }}\n",
        up.url()
    );
    let gw = gateway(&up, &stripe).await;
    let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sign = |t: i64| {
        use hmac::{Hmac, Mac};
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(b"whsec_it").unwrap();
        m.update(format!("{t}.").as_bytes());
        m.update(body);
        format!("t={t},v1={}", hex::encode(m.finalize().into_bytes()))
    };
    for (t, expect) in [(now - 600, 401), (now + 600, 401), (now - 10, 200)] {
        let r = client()
            .post(gw.http_url("/webhooks/stripe"))
            .header("Stripe-Signature", sign(t))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let (s, code, _) = answer(r).await;
        assert_eq!(s, expect, "t offset {}", t - now);
        if expect == 401 {
            assert_eq!(code, "timestamp_out_of_tolerance");
        }
    }
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn parse_schema_events() {
    let up = Upstream::start().await;
    let reject = ImggoRoute::new("strict", "/webhooks/strict", &up.url())
        .otherwise("reject")
        .yaml();
    let gw = gateway(&up, &reject).await;
    let url = gw.http_url("/webhooks/imggo");

    let (s, code, _) = answer(post_signed(&url, b"{not json").await).await;
    assert_eq!((s, code.as_str()), (400, "invalid_json"));

    let missing_job = br#"{"event":"job.completed","status":"completed","result":{}}"#;
    let (s, code, json) = answer(post_signed(&url, missing_job).await).await;
    assert_eq!((s, code.as_str()), (422, "schema_violation"));
    let details = json["error"]["details"].as_array().unwrap();
    assert!(details.iter().any(|d| d["path"] == "/job_id"), "{json}");
    assert!(details.iter().all(|d| d["message"].is_string()));

    let failed_without_error = br#"{"event":"job.failed","job_id":"j","status":"failed"}"#;
    let (s, _, json) = answer(post_signed(&url, failed_without_error).await).await;
    assert_eq!(s, 422);
    assert!(
        json["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["path"] == "/error"),
        "{json}"
    );

    // A detail echoes at most 100 characters of the sender's input, however long it is.
    let long = "x".repeat(5000);
    let long_status = format!(
        r#"{{"event":"job.completed","job_id":"j3","status":"{long}","result":{{"url":"https://a/b.png","width":1,"height":1}}}}"#
    );
    let resp = post_signed(&url, long_status.as_bytes()).await;
    let text = resp.text().await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["error"]["code"], "schema_violation", "{text:.300}");
    let details = json["error"]["details"].as_array().unwrap();
    assert!(!details.is_empty());
    for d in details {
        for field in ["path", "message"] {
            let n = d[field].as_str().unwrap().chars().count();
            assert!(n <= 101, "a {field} of {n} characters: {:.200}", d[field]);
        }
    }
    assert!(!text.contains(&"x".repeat(101)), "{text:.300}");

    let queued = delivery("job.queued", "j2");
    let resp = post_signed(&url, &queued).await;
    let (s, _, json) = answer(resp).await;
    assert_eq!((s, json), (200, serde_json::json!({"status": "ignored"})));
    let (s, code, _) = answer(post_signed(&gw.http_url("/webhooks/strict"), &queued).await).await;
    assert_eq!((s, code.as_str()), (422, "event_not_allowed"));

    assert_eq!(up.count(), 0, "nothing refused or ignored reached the app");
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_missing() {
    let up = Upstream::start().await;
    let by_header = format!(
        "  - name: svix\n    path: /webhooks/hdr\n    upstream: \"{}\"\n    https_only: false\n    signature: {{ scheme: imggo, secrets: [\"{SECRET}\"] }}\n    idempotency: {{ key: \"header:Webhook-Id\" }}\n",
        up.url()
    );
    let gw = gateway(&up, &by_header).await;
    let body = br#"{"job_id":"j"}"#;
    let (s, code, _) = answer(post_signed(&gw.http_url("/webhooks/hdr"), body).await).await;
    assert_eq!((s, code.as_str()), (422, "idempotency_key_missing"));
    let r = client()
        .post(gw.http_url("/webhooks/hdr"))
        .header("X-ImgGo-Signature", imggo_signature(body))
        .header("Webhook-Id", "msg_1")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_unreachable_and_slow() {
    let up = Upstream::start().await;
    let (_refusing, port) = refused_port();
    let dead = format!("http://127.0.0.1:{port}");
    let routes = format!(
        "routes:\n{}{}",
        imggo_route("dead", "/webhooks/dead", &dead, ""),
        imggo_route(
            "slow",
            "/webhooks/slow",
            &up.url(),
            "    upstream_timeout: 500ms\n"
        )
    );
    let gw = Gateway::start(&routes).await;
    let body = delivery("job.completed", "j1");
    let (s, code, _) = answer(post_signed(&gw.http_url("/webhooks/dead"), &body).await).await;
    assert_eq!((s, code.as_str()), (502, "upstream_unavailable"));

    up.then(200, Duration::from_secs(2));
    let (s, code, _) = answer(post_signed(&gw.http_url("/webhooks/slow"), &body).await).await;
    assert_eq!((s, code.as_str()), (504, "upstream_timeout"));
    // Both released their claims: the retry goes through.
    let (s, _, _) = answer(post_signed(&gw.http_url("/webhooks/slow"), &body).await).await;
    assert_eq!(s, 200);
}
