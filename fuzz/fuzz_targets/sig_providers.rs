//! The provider presets' header parsers and verifiers on hostile input: never a panic. The first
//! byte picks the preset; the rest is header values (0xff-separated) and the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// (scheme, secret, the headers it reads)
const PRESETS: &[(&str, &str, &[&str])] = &[
    ("pagerduty", "s", &["x-pagerduty-signature"]),
    ("paddle", "s", &["paddle-signature"]),
    ("calendly", "s", &["calendly-webhook-signature"]),
    ("zoom", "s", &["x-zm-signature", "x-zm-request-timestamp"]),
    (
        "twitch",
        "s",
        &[
            "twitch-eventsub-message-signature",
            "twitch-eventsub-message-id",
            "twitch-eventsub-message-timestamp",
        ],
    ),
    ("linear", "s", &["linear-signature"]),
    ("square", "s", &["x-square-hmacsha256-signature"]),
    ("twilio", "s", &["x-twilio-signature"]),
    ("mailgun", "s", &[]),
    ("gitlab", "s", &["x-gitlab-token"]),
    ("intercom", "s", &["x-hub-signature"]),
    ("typeform", "s", &["typeform-signature"]),
    ("terraform", "s", &["x-tfe-notification-signature"]),
    (
        "discord",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        &["x-signature-ed25519", "x-signature-timestamp"],
    ),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (scheme, secret, headers) = PRESETS[pick as usize % PRESETS.len()];
    hookgate_fuzz::verify_scheme(scheme, secret, headers, rest);
});
