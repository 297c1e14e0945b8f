//! Hostile input: slow clients, smuggling shapes, huge and deep bodies, odd headers. Nothing
//! ambiguous or refused reaches the app, and the gateway keeps serving others.

use crate::harness::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_is_cut_off_while_others_are_served() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await; // client_timeout: 2s
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", gw.http))
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let head = b"POST /webhooks/imggo HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in head.iter() {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut buf = [0u8; 1024];
        // The gateway must have closed (or answered) by now.
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await;
        started.elapsed()
    });
    // Meanwhile deliveries are served.
    for i in 0..5 {
        let body = delivery("job.completed", &format!("fast{i}"));
        assert_eq!(
            post_signed(&gw.http_url("/webhooks/imggo"), &body)
                .await
                .status(),
            200
        );
    }
    let cut_after = trickle.await.unwrap();
    assert!(
        cut_after < Duration::from_secs(6),
        "slow client held on for {cut_after:?}"
    );
    assert_eq!(up.count(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn content_length_with_transfer_encoding_is_never_forwarded_ambiguously() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await;
    let body = delivery("job.completed", "smuggle");
    // The smuggled request is a validly signed delivery of another job: only the framing could
    // stop it, not the signature.
    let inner = delivery("job.completed", "smuggled-inner");
    let smuggled = format!(
        "POST /webhooks/imggo HTTP/1.1\r\nHost: x\r\nX-ImgGo-Signature: {}\r\nContent-Length: {}\r\n\r\n{}",
        imggo_signature(&inner),
        inner.len(),
        String::from_utf8_lossy(&inner)
    );
    let chunked = format!(
        "{:x}\r\n{}\r\n0\r\n\r\n{smuggled}",
        body.len(),
        String::from_utf8_lossy(&body)
    );
    let head = format!(
        "POST /webhooks/imggo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nX-ImgGo-Signature: {}\r\n\r\n",
        imggo_signature(&body)
    );
    let out = exchange_until_closed(gw.http, format!("{head}{chunked}").as_bytes()).await;
    // CL + TE is refused as malformed: one answer, then the connection is closed, so the
    // smuggled request is never read as a request of its own.
    assert!(out.starts_with("HTTP/1.1 400"), "{out:.200}");
    assert_eq!(
        out.matches("HTTP/1.1 ").count(),
        1,
        "one answer on the socket: {out:.300}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !up.received().iter().any(|r| r.body == inner),
        "the smuggled delivery reached the app"
    );
    assert_eq!(up.count(), 0);

    // Two Content-Length headers that disagree, on a validly signed delivery.
    let head = format!(
        "POST /webhooks/imggo HTTP/1.1\r\nHost: x\r\nX-ImgGo-Signature: {}\r\nContent-Length: {}\r\nContent-Length: 40\r\n\r\n",
        imggo_signature(&body),
        body.len()
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(&body);
    let out = exchange_until_closed(gw.http, &raw).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out:.200}");
    assert!(out.contains("bad_request"), "{out:.200}");
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_megabyte_chunked_body_is_refused_promptly() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await; // max_body: 256KiB
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.http))
        .await
        .unwrap();
    s.write_all(b"POST /webhooks/imggo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-ImgGo-Signature: 00\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "x".repeat(1 << 20));
    // Read while writing, as a sender does: the answer comes while the body is still going out.
    let (mut rx, mut tx) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), rx.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    for _ in 0..50 {
        if tx.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let out = reader.await.unwrap();
    assert!(out.starts_with("HTTP/1.1 413"), "{out:.200}");
    assert!(out.contains("payload_too_large"), "{out:.200}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(up.count(), 0);
    // Still serving.
    assert_eq!(
        post_signed(
            &gw.http_url("/webhooks/imggo"),
            &delivery("job.completed", "after")
        )
        .await
        .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_json_odd_and_huge_headers() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (s, code, _) =
        answer(post_signed(&gw.http_url("/webhooks/imggo"), deep.as_bytes()).await).await;
    assert_eq!((s, code.as_str()), (400, "invalid_json"));

    // A non-UTF-8 signature header is just an invalid signature.
    let body = delivery("job.completed", "odd");
    // Raw 0xFF 0xFE bytes (obs-text), not their UTF-8 encoding.
    let head = format!(
        "POST /webhooks/imggo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nX-ImgGo-Signature: ",
        body.len()
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(&[0xff, 0xfe]);
    raw.extend_from_slice(b"\r\n\r\n");
    raw.extend_from_slice(&body);
    let out = raw_exchange(gw.http, &[&raw], Duration::ZERO).await;
    assert!(out.starts_with("HTTP/1.1 401"), "{out:.200}");
    assert!(out.contains("signature_invalid"));

    // A 200 KB header on a validly signed delivery is refused by the HTTP layer: 400, not
    // forwarded.
    let huge = format!(
        "POST /webhooks/imggo HTTP/1.1\r\nHost: x\r\nX-ImgGo-Signature: {}\r\nX-Big: {}\r\nContent-Length: {}\r\n\r\n{}",
        imggo_signature(&body),
        "a".repeat(200_000),
        body.len(),
        String::from_utf8_lossy(&body)
    );
    let out = exchange_until_closed(gw.http, huge.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out:.200}");
    assert_eq!(up.count(), 0);
    assert_eq!(
        post_signed(&gw.http_url("/webhooks/imggo"), &body)
            .await
            .status(),
        200,
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_upgrade_refuses_nothing() {
    let up = Upstream::start().await;
    let mut gw = Gateway::imggo(&up).await;
    let url = gw.http_url("/webhooks/imggo");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for w in 0..4 {
        let (url, stop) = (url.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let c = client();
            let (mut ok, mut failed) = (0, Vec::new());
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = delivery("job.completed", &format!("w{w}-{i}"));
                i += 1;
                match c
                    .post(&url)
                    .header("X-ImgGo-Signature", imggo_signature(&body))
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old_exited = gw.upgrade().await;
    // Keep sending until the old process has finished its grace period and exited.
    tokio::time::timeout(Duration::from_secs(15), old_exited)
        .await
        .expect("the old process did not exit")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for s in senders {
        let (o, f) = s.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the upgrade: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 20, "only {ok} requests ran");
    // The new process is the one serving now, and the old one handed over and left.
    assert_eq!(
        post_signed(&url, &delivery("job.completed", "after-upgrade"))
            .await
            .status(),
        200
    );
    let new_log = gw.upgraded_log_containing("hookgate::request").await;
    assert!(
        new_log.contains("hookgate::request"),
        "the new process served nothing:\n{new_log}"
    );
    assert_eq!(
        up.count(),
        ok + 1,
        "every 200 was a delivery the app received, once"
    );
}
