//! Provider presets (PRODUCT.md §4) end to end: each accepts what its provider's own library (or,
//! where there is none, Python's hmac) signs, refuses a wrong secret, a changed byte and a stale
//! timestamp, and `hookgate sign` produces what the provider's library accepts. Handshakes are
//! answered at the gateway, after the signature check, and never forwarded.

use crate::harness::*;
use std::process::Command;
use std::time::SystemTime;

const SECRET: &str = "preset-secret";

struct Keys {
    discord_private: String,
    discord_public: String,
    sendgrid_private: String,
    sendgrid_public: String,
}

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/providers/presets.py"
        ))
        .args(args)
        .output()
        .expect("python3 (scripts/setup.sh installs the providers' libraries)");
    assert!(
        out.status.success(),
        "presets.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn keys() -> Keys {
    let v: serde_json::Value = serde_json::from_str(&python(&["keys"])).unwrap();
    let k = |n: &str| v[n].as_str().unwrap().to_string();
    Keys {
        discord_private: k("discord_private"),
        discord_public: k("discord_public"),
        sendgrid_private: k("sendgrid_private"),
        sendgrid_public: k("sendgrid_public"),
    }
}

const HMAC_PRESETS: &[&str] = &[
    "twilio",
    "paddle",
    "square",
    "pagerduty",
    "linear",
    "gitlab",
    "zoom",
    "intercom",
    "typeform",
    "calendly",
    "terraform",
    "twitch",
];

fn url_of(scheme: &str) -> String {
    format!("https://hooks.example.com/p/{scheme}")
}

fn route(scheme: &str, secret: &str, upstream: &str) -> String {
    let mut extra = String::new();
    if matches!(scheme, "square" | "twilio") {
        extra.push_str(&format!(", public_url: \"{}\"", url_of(scheme)));
    }
    if matches!(scheme, "zoom" | "twitch" | "discord" | "slack") {
        extra.push_str(", handshake: true");
    }
    format!(
        "  - name: {scheme}\n    path: /p/{scheme}\n    upstream: \"{upstream}\"\n    https_only: false\n    signature: {{ scheme: {scheme}, secrets: [\"{secret}\"]{extra} }}\n"
    )
}

async fn gateway(up: &Upstream, k: &Keys) -> Gateway {
    // The upstream goes in as it is: a placeholder replaced afterwards would also hit the random
    // base64 of a key that happens to contain it.
    let mut routes = String::from("routes:\n");
    for s in HMAC_PRESETS.iter().chain(&["slack", "mailgun"]) {
        routes.push_str(&route(s, SECRET, &up.url()));
    }
    routes.push_str(&route("discord", &k.discord_public, &up.url()));
    routes.push_str(&route("sendgrid", &k.sendgrid_public, &up.url()));
    Gateway::start(&routes).await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn body_for(scheme: &str, n: &str) -> Vec<u8> {
    match scheme {
        "twilio" => format!("CallSid=CA{n}&From=%2B15551234567&Body=hello+there").into_bytes(),
        "linear" => format!(
            r#"{{"action":"create","id":"{n}","webhookTimestamp":{}}}"#,
            now() * 1000
        )
        .into_bytes(),
        _ => format!(r#"{{"id":"{n}","event":"test"}}"#).into_bytes(),
    }
}

fn signed(scheme: &str, secret: &str, body: &[u8], at: u64) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body).unwrap();
    let out = python(&[
        "sign",
        scheme,
        secret,
        file.to_str().unwrap(),
        "--url",
        &url_of(scheme),
        "--at",
        &at.to_string(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

async fn post(
    gw: &Gateway,
    scheme: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String, serde_json::Value) {
    let mut req = client()
        .post(gw.http_url(&format!("/p/{scheme}")))
        .body(body.to_vec());
    for (n, v) in headers {
        req = req.header(n, v);
    }
    answer(req.send().await.unwrap()).await
}

#[tokio::test]
async fn every_preset_accepts_its_provider_and_refuses_forgeries() {
    let up = Upstream::start().await;
    let k = keys();
    let gw = gateway(&up, &k).await;
    let mut cases: Vec<(&str, String, String)> = HMAC_PRESETS
        .iter()
        .map(|s| (*s, SECRET.to_string(), "another-secret".to_string()))
        .collect();
    cases.push(("slack", SECRET.into(), "another-secret".into()));
    cases.push(("discord", k.discord_private.clone(), keys().discord_private));
    cases.push((
        "sendgrid",
        k.sendgrid_private.clone(),
        keys().sendgrid_private,
    ));
    for (i, (scheme, secret, wrong)) in cases.iter().enumerate() {
        let body = body_for(scheme, &format!("ok{i}"));
        let before = up.count();
        let (status, code, _) =
            post(&gw, scheme, &signed(scheme, secret, &body, now()), &body).await;
        assert_eq!(status, 200, "{scheme}: {code}");
        assert_eq!(up.count(), before + 1, "{scheme} was not forwarded");

        let (status, code, _) =
            post(&gw, scheme, &signed(scheme, wrong, &body, now()), &body).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "signature_invalid"),
            "{scheme}: wrong secret"
        );

        if *scheme != "gitlab" {
            let mut changed = body.clone();
            let last = changed.len() - 3;
            changed[last] ^= 0x01;
            let (status, code, _) =
                post(&gw, scheme, &signed(scheme, secret, &body, now()), &changed).await;
            assert_eq!(
                (status, code.as_str()),
                (401, "signature_invalid"),
                "{scheme}: a changed byte"
            );
        }

        let (status, code, _) = post(&gw, scheme, &[], &body).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "signature_missing"),
            "{scheme}: unsigned"
        );

        if matches!(*scheme, "paddle" | "calendly" | "zoom" | "twitch" | "slack") {
            let stale = signed(scheme, secret, &body, now() - 3600);
            let (status, code, _) = post(&gw, scheme, &stale, &body).await;
            assert_eq!(
                (status, code.as_str()),
                (401, "timestamp_out_of_tolerance"),
                "{scheme}: an hour old"
            );
        }
        assert_eq!(
            up.count(),
            before + 1,
            "{scheme}: a refused delivery reached the app"
        );
    }

    // Linear's timestamp is inside the signed body.
    let old = format!(
        r#"{{"action":"create","id":"old","webhookTimestamp":{}}}"#,
        (now() - 3600) * 1000
    )
    .into_bytes();
    let (status, code, _) = post(&gw, "linear", &signed("linear", SECRET, &old, now()), &old).await;
    assert_eq!((status, code.as_str()), (401, "timestamp_out_of_tolerance"));

    // Mailgun signs inside the body: HMAC-SHA256 of timestamp + token.
    use hmac::{Hmac, Mac};
    let mail = |secret: &str, ts: u64| {
        let token = "8f3a2c91";
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        m.update(format!("{ts}{token}").as_bytes());
        let sig = hex::encode(m.finalize().into_bytes());
        format!(r#"{{"signature":{{"timestamp":"{ts}","token":"{token}","signature":"{sig}"}},"event-data":{{"event":"delivered"}}}}"#).into_bytes()
    };
    assert_eq!(post(&gw, "mailgun", &[], &mail(SECRET, now())).await.0, 200);
    assert_eq!(
        post(&gw, "mailgun", &[], &mail("wrong", now())).await.1,
        "signature_invalid"
    );
    assert_eq!(
        post(&gw, "mailgun", &[], &mail(SECRET, now() - 3600))
            .await
            .1,
        "timestamp_out_of_tolerance"
    );
    assert_eq!(
        post(&gw, "mailgun", &[], br#"{"event-data":{}}"#).await.1,
        "signature_missing"
    );
}

#[tokio::test]
async fn hookgate_sign_is_accepted_by_the_providers_own_libraries() {
    let up = Upstream::start().await;
    let k = keys();
    let gw = gateway(&up, &k).await;
    for (scheme, key, verify_secret) in [
        ("twilio", None, SECRET.to_string()),
        ("paddle", None, SECRET.to_string()),
        ("square", None, SECRET.to_string()),
        (
            "discord",
            Some(k.discord_private.clone()),
            k.discord_public.clone(),
        ),
        (
            "sendgrid",
            Some(k.sendgrid_private.clone()),
            k.sendgrid_public.clone(),
        ),
    ] {
        let body = body_for(scheme, "lib");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("body");
        std::fs::write(&file, &body).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
        cmd.args(["sign", "-c"])
            .arg(&gw.config)
            .args(["--route", scheme]);
        if let Some(key) = &key {
            cmd.args(["--key", key]);
        }
        let out = cmd.arg(&file).output().unwrap();
        assert!(
            out.status.success(),
            "{scheme}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let headers: serde_json::Map<String, serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_string(), serde_json::Value::from(v)))
            .collect();
        let verdict = python(&[
            "verify",
            scheme,
            &verify_secret,
            file.to_str().unwrap(),
            &serde_json::Value::Object(headers).to_string(),
            "--url",
            &url_of(scheme),
        ]);
        assert_eq!(
            verdict, "true",
            "{scheme}: the provider's library refused hookgate's signature"
        );
    }
}

#[tokio::test]
async fn handshakes_are_answered_after_the_signature_and_never_forwarded() {
    let up = Upstream::start().await;
    let k = keys();
    let gw = gateway(&up, &k).await;

    let zoom = br#"{"event":"endpoint.url_validation","payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1}"#;
    let (status, _, json) = post(&gw, "zoom", &signed("zoom", SECRET, zoom, now()), zoom).await;
    assert_eq!(status, 200);
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(b"qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(json["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(
        json["encryptedToken"],
        hex::encode(m.finalize().into_bytes())
    );

    let twitch = br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{}}"#;
    let mut headers = signed("twitch", SECRET, twitch, now());
    for h in headers.iter_mut() {
        if h.0 == "Twitch-Eventsub-Message-Type" {
            h.1 = "webhook_callback_verification".into();
        }
    }
    let mut req = client()
        .post(gw.http_url("/p/twitch"))
        .body(twitch.to_vec());
    for (n, v) in &headers {
        req = req.header(n, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(
        resp.text().await.unwrap(),
        "pogchamp-kappa-360noscope-vohiyo"
    );

    let slack = br#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let (status, _, json) = post(&gw, "slack", &signed("slack", SECRET, slack, now()), slack).await;
    assert_eq!(status, 200);
    assert_eq!(
        json["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    let ping = br#"{"type":1,"id":"1","application_id":"2"}"#;
    let (status, _, json) = post(
        &gw,
        "discord",
        &signed("discord", &k.discord_private, ping, now()),
        ping,
    )
    .await;
    assert_eq!((status, json["type"].as_i64()), (200, Some(1)));

    assert_eq!(up.count(), 0, "a handshake reached the app");
    // Never answered before the signature is checked.
    let (status, code, _) = post(
        &gw,
        "zoom",
        &[
            ("x-zm-signature".into(), "v0=00".into()),
            ("x-zm-request-timestamp".into(), now().to_string()),
        ],
        zoom,
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "signature_invalid"));
    let handshakes = gw
        .metric(
            "hookgate_requests_total",
            &[("route", "zoom"), ("outcome", "handshake")],
        )
        .await;
    assert_eq!(handshakes, 1.0);
}
