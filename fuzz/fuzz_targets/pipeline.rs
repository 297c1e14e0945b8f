//! The whole request pipeline (head and body checks) on arbitrary requests: never a panic.
#![no_main]

use hookgate::config::{self, Config};
use hookgate::pipeline::{self, Head};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;
use std::time::SystemTime;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let text = r#"listen: [{ addr: "127.0.0.1:8080" }]
trusted_proxies: ["10.0.0.0/8"]
routes:
  - name: imggo
    path: /webhooks/imggo
    upstream: "http://127.0.0.1:5000"
    allow_ips: ["127.0.0.0/8", "203.0.113.0/24", "2001:db8::/32"]
    signature: { scheme: imggo, secrets: ["s"] }
    schema: { type: object, required: [event, job_id], properties: { event: { type: string }, job_id: { type: string } } }
    events: { pointer: /event, allow: [job.completed] }
    idempotency: { key: ["/event", "/job_id", "header:Webhook-Id"] }
"#;
        config::from_text(text, Path::new("fuzz.yaml"), &|_| None).expect("fuzz config")
    })
}

fuzz_target!(|data: &[u8]| {
    // Input: X-Forwarded-For, X-ImgGo-Signature, Webhook-Id, Content-Length (0xff-separated), body.
    let mut parts = data.splitn(5, |&b| b == 0xff);
    let names = [
        "x-forwarded-for",
        "x-imggo-signature",
        "webhook-id",
        "content-length",
    ];
    let mut headers = http::HeaderMap::new();
    for name in names {
        if let Some(v) = parts
            .next()
            .and_then(|v| http::HeaderValue::from_bytes(v).ok())
        {
            headers.insert(name, v);
        }
    }
    let body = parts.next().unwrap_or_default();
    let gateway = &config().gateway;
    let peer = if data.first().is_some_and(|b| b % 2 == 0) {
        "10.1.2.3"
    } else {
        "127.0.0.1"
    };
    let head = Head {
        method: &http::Method::POST,
        path: "/webhooks/imggo",
        headers: &headers,
        peer: peer.parse().unwrap(),
        tls: true,
    };
    if let Ok(admitted) = pipeline::check_head(gateway, &head) {
        let _ = pipeline::check_body(admitted.route, &headers, body, SystemTime::now());
    }
});
