//! Hardening promises of PRODUCT.md §2, §3, §6: bounded memory before authentication, one client
//! deadline, malformed requests answered and counted, no spoofed client headers at the app,
//! typed and scoped keys, bounded error echoes, secrets from files, trace context.

use crate::harness::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn signed_head(path: &str, body: &[u8], extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nX-ImgGo-Signature: {}\r\nContent-Length: {}\r\n{extra}\r\n",
        imggo_signature(body),
        body.len()
    )
}

#[tokio::test]
async fn client_address_claims_from_an_untrusted_peer_never_reach_the_app() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await;
    let body = delivery("job.completed", "spoof1");
    let resp = client()
        .post(gw.http_url("/webhooks/imggo"))
        .header("X-ImgGo-Signature", imggo_signature(&body))
        .header("Forwarded", "for=6.6.6.6;proto=https")
        .header("X-Real-IP", "6.6.6.6")
        .header("True-Client-IP", "6.6.6.6")
        .header("X-Client-IP", "6.6.6.6")
        .header("CF-Connecting-IP", "6.6.6.6")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Port", "443")
        .header("X_Forwarded_For", "6.6.6.6")
        .header("X_Forwarded_Proto", "https")
        .header("X-Forwarded-For", "6.6.6.6")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = &up.received()[0];
    for (name, value) in &got.headers {
        assert!(
            !value.contains("6.6.6.6") && !value.contains("evil.example"),
            "{name}: {value} reached the app"
        );
    }
    assert_eq!(got.header("X-Forwarded-For"), Some("127.0.0.1"));
    assert_eq!(got.header("X-Forwarded-Proto"), Some("http"));
    assert!(got.header("X-Forwarded-Port").is_none());
}

#[tokio::test]
async fn a_string_and_a_number_are_different_keys() {
    let up = Upstream::start().await;
    let route = "  - name: typed\n    path: /typed\n    upstream: \"UP\"\n    https_only: false\n    signature: { scheme: imggo, secrets: [\"it-secret\"] }\n    idempotency: { key: /id }\n"
        .replace("UP", &up.url());
    let gw = Gateway::start(&format!("routes:\n{route}")).await;
    for body in [
        &br#"{"id":"1795897348"}"#[..],
        br#"{"id":1795897348}"#,
        br#"{"id":"true"}"#,
        br#"{"id":true}"#,
    ] {
        let (status, code, _) = answer(post_signed(&gw.http_url("/typed"), body).await).await;
        assert_eq!(
            status,
            200,
            "{} answered {code}",
            String::from_utf8_lossy(body)
        );
        assert_ne!(code, "already_processed");
    }
    assert_eq!(up.count(), 4);
    let (_, code, _) =
        answer(post_signed(&gw.http_url("/typed"), br#"{"id":1795897348}"#).await).await;
    assert_eq!(code, "already_processed");
}

#[tokio::test]
async fn routes_naming_one_scope_share_keys() {
    let up = Upstream::start().await;
    let scoped = |name: &str, path: &str| {
        format!(
            "  - name: {name}\n    path: {path}\n    upstream: \"{}\"\n    https_only: false\n    signature: {{ scheme: imggo, secrets: [\"it-secret\"] }}\n    idempotency: {{ key: /job_id, scope: shared }}\n",
            up.url()
        )
    };
    let gw = Gateway::start(&format!(
        "routes:\n{}{}",
        scoped("a", "/a"),
        scoped("b", "/b")
    ))
    .await;
    let body = delivery("job.completed", "sc1");
    assert_eq!(
        answer(post_signed(&gw.http_url("/a"), &body).await).await.0,
        200
    );
    let (status, code, _) = answer(post_signed(&gw.http_url("/b"), &body).await).await;
    assert_eq!((status, code.as_str()), (200, "already_processed"));
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn the_client_timeout_covers_head_and_body_together() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await; // client_timeout: 2s
    let body = delivery("job.completed", "slow1");
    let head = signed_head("/webhooks/imggo", &body, "");
    let (first, rest) = body.split_at(10);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.http))
        .await
        .unwrap();
    // The head trickles in over 1.2 s, the body over another 1.2 s: each part alone is under
    // the 2 s timeout, the whole request is not.
    let (a, b) = head.as_bytes().split_at(20);
    s.write_all(a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.write_all(b).await.unwrap();
    s.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let _ = s.write_all(rest).await;
    let out = read_until_quiet(&mut s, Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("request_timeout"), "{out}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_missing_signature_is_answered_from_the_head_before_any_body() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.http))
        .await
        .unwrap();
    s.write_all(b"POST /webhooks/imggo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // No body byte is ever sent.
    let out = read_until_quiet(&mut s, Duration::from_secs(1)).await;
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(out.contains("signature_missing"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "waited for a body"
    );
}

#[tokio::test]
async fn malformed_requests_get_400_and_are_counted() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await;
    let body = delivery("job.completed", "m1");
    let conflicting = format!(
        "POST /webhooks/imggo HTTP/1.1\r\nHost: t\r\nX-ImgGo-Signature: {}\r\nContent-Length: {}\r\nContent-Length: 5\r\n\r\n",
        imggo_signature(&body),
        body.len()
    );
    let mut sent = conflicting.into_bytes();
    sent.extend_from_slice(&body);
    let out = exchange_until_closed(gw.http, &sent).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(
        out.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then close: {out}"
    );
    assert!(
        out.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{out}"
    );
    assert!(out.contains(r#""code":"bad_request""#), "{out}");

    let mut no_host = format!(
        "POST /webhooks/imggo HTTP/1.1\r\nX-ImgGo-Signature: {}\r\nContent-Length: {}\r\n\r\n",
        imggo_signature(&body),
        body.len()
    )
    .into_bytes();
    no_host.extend_from_slice(&body);
    let out = exchange_until_closed(gw.http, &no_host).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("bad_request"), "{out}");
    assert_eq!(up.count(), 0);

    let counted = gw
        .metric(
            "hookgate_requests_total",
            &[("route", "-"), ("outcome", "bad_request")],
        )
        .await;
    assert!(counted >= 1.0, "bad requests are counted ({counted})");
}

#[tokio::test]
async fn a_repeated_content_length_over_max_body_is_refused_before_100_continue() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await; // max_body: 256KiB
    let head = format!(
        "POST /webhooks/imggo HTTP/1.1\r\nHost: t\r\nX-ImgGo-Signature: {}\r\nContent-Length: 2000000, 2000000\r\nExpect: 100-continue\r\n\r\n",
        "ab".repeat(32)
    );
    let out = raw_exchange(gw.http, &[head.as_bytes()], Duration::ZERO).await;
    assert!(!out.contains("100 Continue"), "{out}");
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
}

#[tokio::test]
async fn bodies_in_flight_are_bounded_and_others_still_get_through() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "max_inflight_body: 1MiB\nroutes:\n{}",
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    ))
    .await;
    // Five senders each declare 200 KiB (the route's max_body is 256 KiB) and send only a
    // little of it: together they hold 1000 KiB of the 1 MiB budget. Each waits for its
    // 100 Continue, which the gateway sends only once the declared length is reserved.
    let declared = 200 * 1024;
    let mut holders = Vec::new();
    for _ in 0..5 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.http))
            .await
            .unwrap();
        let head = format!(
            "POST /webhooks/imggo HTTP/1.1\r\nHost: t\r\nX-ImgGo-Signature: {}\r\nContent-Length: {declared}\r\nExpect: 100-continue\r\n\r\n",
            "ab".repeat(32)
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let interim = read_head(&mut s, Duration::from_secs(5)).await;
        assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
        s.write_all(&vec![b' '; 1000]).await.unwrap();
        holders.push(s);
    }
    // The sixth would exceed 1 MiB.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.http))
        .await
        .unwrap();
    let head = format!(
        "POST /webhooks/imggo HTTP/1.1\r\nHost: t\r\nX-ImgGo-Signature: {}\r\nContent-Length: {declared}\r\n\r\n",
        "ab".repeat(32)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let out = read_until_quiet(&mut s, Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("overloaded"), "{out}");
    assert!(out.to_ascii_lowercase().contains("retry-after:"), "{out}");
    // Without its signature header it is refused for that first (§3: signature present comes
    // before capacity), from the head alone.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.http))
        .await
        .unwrap();
    let unsigned =
        format!("POST /webhooks/imggo HTTP/1.1\r\nHost: t\r\nContent-Length: {declared}\r\n\r\n");
    s.write_all(unsigned.as_bytes()).await.unwrap();
    let out = read_until_quiet(&mut s, Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(out.contains("signature_missing"), "{out}");
    // A small valid delivery still fits.
    let ok = post_signed(
        &gw.http_url("/webhooks/imggo"),
        &delivery("job.completed", "b1"),
    )
    .await;
    assert_eq!(ok.status(), 200);
    drop(holders);
}

#[tokio::test]
async fn schema_details_echo_at_most_100_characters() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await;
    let huge = "x".repeat(200_000);
    let body = format!(
        r#"{{"event":"job.completed","job_id":"j","status":"completed","result":{{"url":"{huge}","width":"wide","height":1}}}}"#
    );
    let resp = post_signed(&gw.http_url("/webhooks/imggo"), body.as_bytes()).await;
    let (status, code, json) = answer(resp).await;
    assert_eq!((status, code.as_str()), (422, "schema_violation"));
    let text = json.to_string();
    assert!(text.len() < 5_000, "a {} byte error body", text.len());
    for d in json["error"]["details"].as_array().unwrap() {
        assert!(d["message"].as_str().unwrap().chars().count() <= 101);
    }
}

#[tokio::test]
async fn a_secret_may_come_from_a_file_and_is_reread_on_reload() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("imggo-secret");
    std::fs::write(&secret_file, "from-a-file\n").unwrap();
    let route = format!(
        "  - name: f\n    path: /f\n    upstream: \"{}\"\n    https_only: false\n    signature: {{ scheme: imggo, secrets: [\"file:{}\"] }}\n",
        up.url(),
        secret_file.display()
    );
    let gw = Gateway::start(&format!("routes:\n{route}")).await;
    let body = delivery("job.completed", "sf1");
    let send = |secret: &'static str| {
        let url = gw.http_url("/f");
        let body = body.clone();
        async move {
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
    assert_eq!(
        send("from-a-file").await,
        200,
        "one trailing newline is dropped"
    );
    std::fs::write(&secret_file, "rotated").unwrap();
    assert_eq!(send("rotated").await, 401, "read at start");
    std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while send("rotated").await != 200 {
        assert!(
            Instant::now() < deadline,
            "the reload did not re-read the secret file"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !gw.settled_log().await.contains("rotated"),
        "a secret was logged"
    );
}

#[tokio::test]
async fn trace_context_is_kept_or_made_and_logged() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await;
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let body = delivery("job.completed", "t1");
    client()
        .post(gw.http_url("/webhooks/imggo"))
        .header("X-ImgGo-Signature", imggo_signature(&body))
        .header("traceparent", given)
        .header("tracestate", "vendor=1")
        .body(body)
        .send()
        .await
        .unwrap();
    let body = delivery("job.completed", "t2");
    client()
        .post(gw.http_url("/webhooks/imggo"))
        .header("X-ImgGo-Signature", imggo_signature(&body))
        .header("traceparent", "not-a-trace")
        .body(body)
        .send()
        .await
        .unwrap();
    let got = up.received();
    assert_eq!(got[0].header("traceparent"), Some(given));
    assert_eq!(got[0].header("tracestate"), Some("vendor=1"));
    let made = got[1].header("traceparent").unwrap();
    assert_ne!(made, "not-a-trace");
    assert_eq!(made.len(), 55);
    let trace_id = &made[3..35];
    eventually("both trace ids in the log", || {
        let log = gw.log();
        log.contains("4bf92f3577b34da6a3ce929d0e0e4736") && log.contains(trace_id)
    })
    .await;
}

/// A signed delivery for `job` on a kept-alive connection of its own; returns the connection
/// with the answer read (or, when `wait` is short, whatever arrived by then).
async fn keep_alive_delivery(
    port: u16,
    job: &str,
    wait: Duration,
) -> (tokio::net::TcpStream, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let body = delivery("job.completed", job);
    s.write_all(signed_head("/webhooks/imggo", &body, "").as_bytes())
        .await
        .unwrap();
    s.write_all(&body).await.unwrap();
    let out = read_until_quiet(&mut s, wait).await;
    (s, out)
}

#[tokio::test]
async fn beyond_max_connections_a_connection_waits_until_one_closes() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "max_connections: 2\nroutes:\n{}",
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    ))
    .await;
    // Two kept-alive connections fill the listener.
    let (first, a) = keep_alive_delivery(gw.http, "c1", Duration::from_secs(5)).await;
    let (_second, b) = keep_alive_delivery(gw.http, "c2", Duration::from_secs(5)).await;
    assert!(
        a.starts_with("HTTP/1.1 200") && b.starts_with("HTTP/1.1 200"),
        "{a}\n{b}"
    );
    // The third is not served while both stay open...
    let (mut third, c) = keep_alive_delivery(gw.http, "c3", Duration::from_secs(1)).await;
    assert_eq!(
        c, "",
        "a third connection was served beyond max_connections: 2"
    );
    assert_eq!(up.count(), 2);
    // ...and is as soon as one closes.
    drop(first);
    let c = read_until_quiet(&mut third, Duration::from_secs(10)).await;
    assert!(c.starts_with("HTTP/1.1 200"), "{c}");
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn failed_tls_handshakes_free_their_slot_are_counted_and_logged_quietly() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "max_connections: 2\nroutes:\n{}",
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    ))
    .await;
    // Five clients that speak no TLS to the TLS listener: each handshake fails.
    for _ in 0..5 {
        let out = raw_exchange(
            gw.https,
            &[b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".as_slice()],
            Duration::ZERO,
        )
        .await;
        assert!(!out.starts_with("HTTP/1.1 2"), "{out}");
    }
    // Their slots were given back: a real TLS delivery is served at once.
    let body = delivery("job.completed", "tls-after-junk");
    let ok = tokio::time::timeout(
        Duration::from_secs(10),
        client()
            .post(gw.https_url("/webhooks/imggo"))
            .header("X-ImgGo-Signature", imggo_signature(&body))
            .header("Content-Type", "application/json")
            .body(body)
            .send(),
    )
    .await
    .expect("a TLS delivery waited: failed handshakes kept their connection slots")
    .unwrap();
    assert_eq!(ok.status(), 200);
    let failures = gw
        .metric("hookgate_tls_handshake_failures_total", &[])
        .await;
    assert_eq!(failures, 5.0);
    // Counted, not shouted: no ERROR line about them in the log.
    let log = gw.settled_log().await;
    assert!(
        !log.lines()
            .any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("handshake")),
        "{log}"
    );
}

#[tokio::test]
async fn a_tls_handshake_not_finished_within_the_client_timeout_is_closed_and_counted() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await; // client_timeout: 2s
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", gw.https))
        .await
        .unwrap();
    // Says nothing: no ClientHello. The gateway closes it once client_timeout has passed.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("a connection that never began its handshake was kept open for 10 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "closed after {waited:?}, before client_timeout"
    );
    // Counted as the connection ends, which may be a moment after the client saw the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let failures = gw
            .metric("hookgate_tls_handshake_failures_total", &[])
            .await;
        if failures >= 1.0 || Instant::now() > deadline {
            assert_eq!(failures, 1.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gateway's resident and peak memory (VmRSS, VmHWM), in bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn a_flood_of_unfinished_bodies_stays_within_the_budget() {
    // 400 connections each declaring ~1 MB and sending a quarter of it, with a bogus signature:
    // 400 MB if each were held. The budget (32 MiB) admits 33 of them; the rest are answered
    // 503 at once. The peak memory stays within the budget plus what the connections cost
    // themselves (Pingora reads a body through a 64 KiB buffer per connection, and a refused
    // body is drained through it so the sender reads the 503) plus 20 MiB, and a valid
    // delivery from another client is still served.
    const CONNECTIONS: usize = 400;
    const DECLARED: usize = 1_000_000;
    const BUDGET: u64 = 32 << 20;
    const ALLOWANCE: u64 = CONNECTIONS as u64 * (64 << 10) + (20 << 20);
    let up = Upstream::start().await;
    let gw = Gateway::start_with_env(
        &format!(
            "max_inflight_body: 32MiB\nroutes:\n{}",
            ImggoRoute::new("imggo", "/webhooks/imggo", &up.url())
                .max_body("1MiB")
                .yaml()
        ),
        // As the Dockerfile and the systemd unit run it.
        &[("MIMALLOC_ARENA_EAGER_COMMIT", "0")],
    )
    .await;
    let (baseline, _) = memory_of(gw.pid());
    let head = format!(
        "POST /webhooks/imggo HTTP/1.1\r\nHost: t\r\nX-ImgGo-Signature: {}\r\nContent-Length: {DECLARED}\r\n\r\n",
        "ab".repeat(32)
    );
    let quarter = vec![b' '; DECLARED / 4];
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        let head = head.clone();
        let quarter = quarter.clone();
        let port = gw.http;
        senders.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            s.write_all(head.as_bytes()).await.ok()?;
            // A refused sender may be cut off mid-write; what it was told is what counts.
            let _ = s.write_all(&quarter).await;
            let answer = read_until_quiet(&mut s, Duration::from_secs(2)).await;
            Some((s, answer))
        }));
    }
    let mut held = Vec::new();
    let mut overloaded = 0;
    for sender in senders {
        if let Some((s, answer)) = sender.await.unwrap() {
            if answer.starts_with("HTTP/1.1 503") && answer.contains("overloaded") {
                overloaded += 1;
            }
            held.push(s);
        }
    }
    let admitted = (BUDGET as usize) / DECLARED;
    assert!(
        overloaded >= CONNECTIONS - admitted,
        "{overloaded} of {CONNECTIONS} were refused as overloaded; at most {admitted} fit the budget"
    );
    let valid = delivery("job.completed", "during-flood");
    let ok = post_signed(&gw.http_url("/webhooks/imggo"), &valid).await;
    assert_eq!(ok.status(), 200);
    let (_, peak) = memory_of(gw.pid());
    eprintln!(
        "flood: baseline {} MiB, peak {} MiB, {overloaded} of {CONNECTIONS} refused as overloaded",
        baseline >> 20,
        peak >> 20
    );
    assert!(
        peak < baseline + BUDGET + ALLOWANCE,
        "peak memory {} MiB over a baseline of {} MiB: more than the {} MiB budget plus {} MiB",
        peak >> 20,
        baseline >> 20,
        BUDGET >> 20,
        ALLOWANCE >> 20
    );
    drop(held);
}

/// Reads one answer's head (to its blank line) from `s`, within `limit`.
async fn read_head(s: &mut tokio::net::TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = tokio::time::Instant::now() + limit;
    while !out.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, s.read(&mut byte)).await {
            Ok(Ok(1)) => out.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
