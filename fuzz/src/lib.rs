//! Shared driver for the signature fuzz targets: hostile header values and body into one scheme.

use hookgate::signature::{build, SchemeName, SchemeSettings};
use std::time::{Duration, SystemTime};

/// Feeds `data` (header values separated by 0xff, then the body) to `scheme`'s parser and
/// verifier under `names`; any panic is a finding.
pub fn verify_scheme(scheme: &str, secret: &str, names: &[&'static str], data: &[u8]) {
    let mut parts = data.split(|&b| b == 0xff);
    let values: Vec<&[u8]> = parts.by_ref().take(names.len()).collect();
    let body: Vec<u8> = parts.flatten().copied().collect();
    let secrets = [secret.to_string()];
    let name = SchemeName::parse(scheme).unwrap_or_else(|| panic!("{scheme} is not a scheme"));
    let verifier = build(&SchemeSettings {
        scheme: name,
        secrets: &secrets,
        header: None,
        algorithm: None,
        encoding: None,
        prefix: None,
        // Only timestamped schemes take a tolerance; the others refuse the setting.
        tolerance: name.timestamped().then_some(Duration::from_secs(300)),
        public_url: name
            .signs_url()
            .then_some("https://hooks.example.com/webhooks/fuzz?x=1"),
        handshake: false,
    })
    .unwrap_or_else(|_| panic!("fuzz settings for {scheme} must build"));
    let mut headers = http::HeaderMap::new();
    for (name, value) in names.iter().zip(values.iter()) {
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            headers.insert(*name, v);
        }
    }
    let _ = verifier.verify(&headers, &body, SystemTime::now());
}
