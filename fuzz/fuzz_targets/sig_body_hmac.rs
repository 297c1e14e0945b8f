//! The body_hmac signature header parser and verifier on hostile input: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hookgate_fuzz::verify_scheme("imggo", "s", &["x-imggo-signature"], data);
    // GitHub and Shopify share the parser; their prefix and encoding paths differ.
    hookgate_fuzz::verify_scheme("github", "s", &["x-hub-signature-256"], data);
    hookgate_fuzz::verify_scheme("shopify", "s", &["x-shopify-hmac-sha256"], data);
});
