//! The config loader on arbitrary text: errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = hookgate::config::from_text(text, Path::new("/nonexistent/fuzz.yaml"), &|name| {
            (name == "SET").then(|| "value".to_string())
        });
    }
});
