//! The Standard Webhooks signature header parser and verifier on hostile input, under both
//! scheme names and both key kinds (HMAC `whsec_`, Ed25519 `whpk_`): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

const HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
];

/// (scheme, secret): RFC 8032's first test public key stands for a real Ed25519 key.
const VARIANTS: &[(&str, &str)] = &[
    ("svix", "whsec_c2VjcmV0"),
    ("standard-webhooks", "whsec_c2VjcmV0"),
    (
        "standard-webhooks",
        "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
    ),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (scheme, secret) = VARIANTS[pick as usize % VARIANTS.len()];
    hookgate_fuzz::verify_scheme(scheme, secret, HEADERS, rest);
});
