//! The standard_webhooks signature header parser and verifier on hostile input: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hookgate_fuzz::verify_scheme(
        "svix",
        "whsec_c2VjcmV0",
        &[
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "svix-id",
            "svix-timestamp",
            "svix-signature",
        ],
        data,
    );
});
