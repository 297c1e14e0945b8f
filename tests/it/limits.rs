//! A route's `limit` (PRODUCT.md §3): a client address over it gets 429 `rate_limited` with
//! `Retry-After` from the head, before its body is sent; other addresses are not held up; memory
//! stays bounded for any number of addresses.

use crate::harness::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn limited_route(up: &Upstream, limit: &str) -> String {
    format!(
        "trusted_proxies: [\"127.0.0.1/32\"]\nroutes:\n{}",
        ImggoRoute::new("imggo", "/webhooks/imggo", &up.url())
            .with(&format!("    limit: {limit}\n"))
            .yaml()
    )
}

/// Sends a signed delivery as if from `client` (through the trusted proxy 127.0.0.1).
async fn send_from(gw: &Gateway, client_addr: &str, job: &str) -> reqwest::Response {
    let body = delivery("job.completed", job);
    client()
        .post(gw.http_url("/webhooks/imggo"))
        .header("X-ImgGo-Signature", imggo_signature(&body))
        .header("X-Forwarded-For", client_addr)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_address_over_its_limit_is_refused_from_the_head_and_served_again_after_the_wait() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&limited_route(&up, "{ rate: 1/s, burst: 2 }")).await;

    for job in ["a", "b"] {
        assert_eq!(send_from(&gw, "198.51.100.7", job).await.status(), 200);
    }

    // The third request's head only: the answer comes without a byte of body sent.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.http))
        .await
        .unwrap();
    s.write_all(
        b"POST /webhooks/imggo HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 198.51.100.7\r\n\
          X-ImgGo-Signature: 00\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered before the body was sent")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"),
        "{head}"
    );
    assert!(head.contains("\"code\":\"rate_limited\""), "{head}");

    // Another address is not held up.
    assert_eq!(send_from(&gw, "203.0.113.9", "c").await.status(), 200);

    let refused = send_from(&gw, "198.51.100.7", "d").await;
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_, code, _) = answer(refused).await;
    assert_eq!(code, "rate_limited");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(send_from(&gw, "198.51.100.7", "e").await.status(), 200);

    assert_eq!(up.count(), 4, "no refused request reached the app");
    assert_eq!(
        gw.metric(
            "hookgate_requests_total",
            &[("route", "imggo"), ("outcome", "rate_limited")]
        )
        .await,
        2.0
    );
    let log = gw.settled_log().await;
    assert!(log.contains("rate_limited"), "{log}");
}

/// The gateway's resident memory, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Sends wrongly signed empty requests from `count` distinct forwarded addresses starting at
/// `first`, one after another on each of a few keep-alive connections (each is refused 401
/// once the limit admitted it).
async fn from_many(gw: &Gateway, first: u32, count: u32) {
    let per = count / 4;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let port = gw.http;
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let mut buf = vec![0u8; 4096];
            for i in 0..per {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + first + t * per + i);
                let request = format!(
                    "POST /webhooks/imggo HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: {ip}\r\n\
                     X-ImgGo-Signature: 00\r\nContent-Length: 0\r\n\r\n"
                );
                s.write_all(request.as_bytes()).await.unwrap();
                // One answer: its head, then its Content-Length's worth of body.
                let mut got = Vec::new();
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the gateway closed the connection");
                    got.extend_from_slice(&buf[..n]);
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn hundreds_of_thousands_of_addresses_leave_memory_bounded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&limited_route(&up, "{ rate: 10/s }")).await;
    let started = Instant::now();
    // The first rounds fill the bounded cache (and the allocator's pools); the last one shows
    // whether 100,000 more addresses still cost memory. An unbounded map of buckets would grow
    // by about 9 MB per round.
    from_many(&gw, 0, 100_000).await;
    from_many(&gw, 100_000, 100_000).await;
    let before = rss_of(gw.pid());
    from_many(&gw, 200_000, 100_000).await;
    let after = rss_of(gw.pid());
    assert!(
        after < before + 5 * 1024 * 1024,
        "RSS grew from {before} to {after} bytes over 100,000 more addresses"
    );
    assert!(after < 128 * 1024 * 1024, "RSS {after} bytes");
    assert_eq!(
        gw.metric(
            "hookgate_requests_total",
            &[("route", "imggo"), ("outcome", "signature_invalid")]
        )
        .await,
        300_000.0,
        "every address was admitted by the limit once (in {:?})",
        started.elapsed()
    );
}

#[test]
fn check_names_a_bad_limit_by_field_and_shows_the_default_burst() {
    let check = |limit: &str| {
        check_config(&format!(
            "listen: [{{ addr: \"127.0.0.1:18080\" }}]\nroutes:\n  - name: r\n    path: /r\n    upstream: \"http://127.0.0.1:5000\"\n    limit: {limit}\n"
        ))
    };
    let (code, out) = check("{ rate: fast }");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("routes[r].limit.rate: \"fast\" is not a rate"),
        "{out}"
    );
    let (code, out) = check("{ rate: 5/s, burst: 0 }");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("routes[r].limit.burst: must be at least 1"),
        "{out}"
    );
    let (code, out) = check("{ rate: 5/s, bucket: 3 }");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("bucket"), "an unknown key is refused: {out}");
    let (code, out) = check("{ rate: 120/m }");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("limit=2/s(burst 2)"),
        "one second's worth by default: {out}"
    );
}
