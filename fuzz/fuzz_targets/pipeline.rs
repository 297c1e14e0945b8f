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

/// The route's secret, for signing fuzzed bodies validly so parse, schema, events and the key
/// are fuzzed too, not only the signature check in front of them.
const SECRET: &[u8] = b"s";

fuzz_target!(|data: &[u8]| {
    // Input: a control byte, then X-Forwarded-For, X-ImgGo-Signature, Webhook-Id, Content-Length
    // (0xff-separated), then the body.
    let Some((&control, data)) = data.split_first() else {
        return;
    };
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
    let mac = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).expect("any key length");
        mac.update(body);
        mac.finalize().into_bytes()
    };
    if control & 1 == 1 {
        let sig = hex::encode(mac);
        headers.insert("x-imggo-signature", sig.parse().expect("hex is a header value"));
    }
    let method = if control & 2 == 0 { http::Method::POST } else { http::Method::GET };
    let path = if control & 4 == 0 { "/webhooks/imggo" } else { "/elsewhere" };
    let gateway = &config().policy;
    let peer = if control & 8 == 0 { "10.1.2.3" } else { "127.0.0.1" };
    let head = Head {
        method: &method,
        path,
        headers: &headers,
        peer: peer.parse().unwrap(),
        tls: control & 16 == 0,
    };
    let admitted = match pipeline::check_head(gateway, &head) {
        Ok(a) => a,
        Err((_, rejection)) => {
            // A refusal from the head answers with a §3 status, never 2xx.
            assert!(rejection.describe().0 >= 400);
            return;
        }
    };
    assert!(method == http::Method::POST && path == "/webhooks/imggo");
    match pipeline::check_body(admitted.route, &headers, body, SystemTime::now()) {
        // Admitted: only a validly signed, schema-valid job.completed with every key part.
        Ok(checked) => {
            // Only with the body's own HMAC, whatever else the header held.
            let given = headers
                .get("x-imggo-signature")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| hex::decode(v.trim()).ok());
            assert_eq!(given.as_deref(), Some(&mac[..]), "admitted without its signature");
            let json: serde_json::Value =
                serde_json::from_slice(body).expect("an admitted body is JSON");
            assert_eq!(json["event"], "job.completed");
            assert!(json["job_id"].is_string());
            assert!(checked.key.is_some(), "the route keys every delivery");
        }
        Err(answer) => {
            let status = answer.status();
            assert!(status == 200 || status >= 400, "{status}");
        }
    }
});
