//! PRODUCT.md §6: the app receives the exact bytes and the right headers, whatever the framing.

use crate::harness::*;
use std::time::Duration;

/// A valid ImgGo delivery padded to about `size` bytes with insignificant whitespace, so the
/// exact-bytes check would catch any re-serialisation.
fn padded(job: &str, size: usize) -> Vec<u8> {
    let mut body = delivery("job.completed", job);
    let close = body.pop().unwrap();
    body.extend(std::iter::repeat_n(
        b' ',
        size.saturating_sub(body.len() + 1),
    ));
    body.push(close);
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_bytes_and_headers_reach_the_app_and_its_answer_comes_back() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await;
    let body = padded("big", 200 * 1024);
    up.then(201, Duration::ZERO);
    // HTTP/1.1 on purpose: over HTTP/2 the client itself would drop `Connection` and the header
    // it names, and the hop-by-hop check below would pass whatever the gateway did.
    let http1 = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .build()
        .unwrap();
    let resp = http1
        .post(gw.https_url("/webhooks/imggo?source=it&x=1"))
        .header("X-ImgGo-Signature", imggo_signature(&body))
        .header("Content-Type", "application/json")
        .header("X-Custom", "kept")
        .header("X-Forwarded-For", "198.51.100.66") // spoofed by an untrusted peer
        .header("X-Request-Id", "req-from-sender")
        .header("Connection", "keep-alive, X-Hop")
        .header("X-Hop", "dropped")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 201, "the app's own status is relayed");
    assert_eq!(
        resp.headers().get("x-upstream").unwrap(),
        "recorded",
        "the app's headers are relayed"
    );
    assert_eq!(resp.text().await.unwrap(), r#"{"upstream_status":201}"#);

    let got = up.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/webhooks/imggo?source=it&x=1");
    assert_eq!(
        r.body, body,
        "exact bytes above Pingora's 64 KiB retry buffer"
    );
    assert_eq!(
        r.header("x-imggo-signature"),
        Some(imggo_signature(&body).as_str()),
        "the app can verify too"
    );
    assert_eq!(r.header("x-custom"), Some("kept"));
    assert_eq!(
        r.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "spoofed entries never reach the app"
    );
    assert_eq!(r.header("x-forwarded-proto"), Some("https"));
    assert_eq!(r.header("x-request-id"), Some("req-from-sender"));
    assert_eq!(
        r.header("x-hop"),
        None,
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(
        r.header("content-length"),
        Some(body.len().to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_and_expect_continue_bodies_arrive_whole() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await;

    let body = padded("chunked", 150 * 1024);
    let head = format!(
        "POST /webhooks/imggo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-ImgGo-Signature: {}\r\n\r\n",
        imggo_signature(&body)
    );
    let mut chunks = Vec::new();
    for piece in body.chunks(40_000) {
        chunks.push(format!("{:x}\r\n", piece.len()).into_bytes());
        chunks.push(piece.to_vec());
        chunks.push(b"\r\n".to_vec());
    }
    chunks.push(b"0\r\n\r\n".to_vec());
    let mut parts: Vec<&[u8]> = vec![head.as_bytes()];
    parts.extend(chunks.iter().map(Vec::as_slice));
    let out = raw_exchange(gw.http, &parts, Duration::from_millis(5)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out:.300}");
    assert_eq!(up.received()[0].body, body);
    assert_eq!(up.received()[0].header("transfer-encoding"), None);

    // Expect: 100-continue: the gateway must say 100 before the sender uploads.
    let body = padded("continue", 80 * 1024);
    let head = format!(
        "POST /webhooks/imggo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\nX-ImgGo-Signature: {}\r\n\r\n",
        body.len(),
        imggo_signature(&body)
    );
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.http))
        .await
        .unwrap();
    use tokio::io::AsyncWriteExt;
    s.write_all(head.as_bytes()).await.unwrap();
    let interim = read_until_quiet(&mut s, Duration::from_secs(3)).await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim:.200}");
    s.write_all(&body).await.unwrap();
    let out = read_until_quiet(&mut s, Duration::from_secs(5)).await;
    assert!(out.contains("HTTP/1.1 200"), "{out:.300} {}", gw.log());
    let r = &up.received()[1];
    assert_eq!(r.body, body);
    assert_eq!(
        r.header("expect"),
        None,
        "Expect was answered by the gateway"
    );

    // A refused head is answered without 100: the sender never uploads.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.http))
        .await
        .unwrap();
    s.write_all(
        b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let out = read_until_quiet(&mut s, Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 404"), "{out:.200}");
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_over_tls() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await;
    let body = padded("h2", 100 * 1024);
    let h2 = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(gw.https_url("/webhooks/imggo"))
        .header("X-ImgGo-Signature", imggo_signature(&body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let got = &up.received()[0];
    assert_eq!(got.body, body);
    assert!(
        got.header("host")
            .is_some_and(|h| h.starts_with("localhost")),
        "{:?}",
        got.header("host")
    );
    let (s, code, _) = answer(
        h2.post(gw.https_url("/webhooks/imggo"))
            .header("X-ImgGo-Signature", "00")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, code.as_str()), (401, "signature_invalid"));
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_proxy_chain() {
    let up = Upstream::start().await;
    let routes = format!(
        "trusted_proxies: [\"127.0.0.1/32\"]\nroutes:\n{}",
        ImggoRoute::new("imggo", "/webhooks/imggo", &up.url())
            .https_only()
            .with("    allow_ips: [\"203.0.113.0/24\"]\n")
            .yaml()
    );
    let gw = Gateway::start(&routes).await;
    let body = delivery("job.completed", "j1");
    let send = |xff: &'static str, proto: &'static str| {
        let body = body.clone();
        let url = gw.http_url("/webhooks/imggo");
        async move {
            client()
                .post(url)
                .header("X-ImgGo-Signature", imggo_signature(&body))
                .header("X-Forwarded-For", xff)
                .header("X-Forwarded-Proto", proto)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    // The right-most untrusted entry is the client; the LB said https.
    let (s, _, _) = answer(send("198.51.100.1, 203.0.113.5", "https").await).await;
    assert_eq!(s, 200);
    let got = &up.received()[0];
    assert_eq!(
        got.header("x-forwarded-for"),
        Some("198.51.100.1, 203.0.113.5, 127.0.0.1")
    );
    assert_eq!(got.header("x-forwarded-proto"), Some("https"));
    // A spoofed left-most entry does not help a client outside the allowlist.
    let (s, code, _) = answer(send("203.0.113.5, 198.51.100.1", "https").await).await;
    assert_eq!((s, code.as_str()), (403, "ip_not_allowed"));
    let (s, code, _) = answer(send("203.0.113.5", "http").await).await;
    assert_eq!((s, code.as_str()), (403, "https_required"));
    assert_eq!(up.count(), 1);
}
