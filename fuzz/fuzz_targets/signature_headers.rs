//! Every scheme's header parser and verifier on hostile header values: never a panic.
#![no_main]

use hookgate::signature::{build, SchemeSettings};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, SystemTime};

const SCHEMES: &[(&str, &str, &[&str])] = &[
    ("imggo", "s", &["x-imggo-signature"]),
    ("github", "s", &["x-hub-signature-256"]),
    ("shopify", "s", &["x-shopify-hmac-sha256"]),
    ("stripe", "whsec_s", &["stripe-signature"]),
    (
        "slack",
        "s",
        &["x-slack-signature", "x-slack-request-timestamp"],
    ),
    (
        "standard-webhooks",
        "whsec_c2VjcmV0",
        &["webhook-id", "webhook-timestamp", "webhook-signature"],
    ),
    (
        "svix",
        "whsec_c2VjcmV0",
        &["svix-id", "svix-timestamp", "svix-signature"],
    ),
];

fuzz_target!(|data: &[u8]| {
    // Input: header values separated by 0xff, then the body.
    let mut parts = data.split(|&b| b == 0xff);
    let values: Vec<&[u8]> = parts.by_ref().take(3).collect();
    let body: Vec<u8> = parts.flatten().copied().collect();
    for (scheme, secret, names) in SCHEMES {
        let secrets = [secret.to_string()];
        let Ok(verifier) = build(&SchemeSettings {
            scheme,
            secrets: &secrets,
            header: None,
            algorithm: None,
            encoding: None,
            prefix: None,
            tolerance: Some(Duration::from_secs(300)),
        }) else {
            continue;
        };
        let mut headers = http::HeaderMap::new();
        for (name, value) in names.iter().zip(values.iter()) {
            if let Ok(v) = http::HeaderValue::from_bytes(value) {
                headers.insert(*name, v);
            }
        }
        let _ = verifier.verify(&headers, &body, SystemTime::now());
    }
});
