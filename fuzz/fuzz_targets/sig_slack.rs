//! The slack signature header parser and verifier on hostile input: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hookgate_fuzz::verify_scheme(
        "slack",
        "s",
        &["x-slack-signature", "x-slack-request-timestamp"],
        data,
    );
});
