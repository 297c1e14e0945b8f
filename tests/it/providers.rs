//! Every signature scheme against the providers' own libraries (tests/providers/provider.py):
//! their signatures must pass hookgate, and hookgate's `sign` output must pass their verifiers.

use crate::harness::*;
use std::path::Path;
use std::process::Command;

const SCHEMES: &[(&str, &str)] = &[
    ("stripe", "whsec_it_stripe_secret"),
    (
        "standard-webhooks",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ),
    ("svix", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
    ("slack", "8f742231b10e8888abcd99yyyzzz85a5"),
    ("github", "It's a Secret to Everybody"),
    ("shopify", "shpss_it_secret"),
];

fn python(args: &[&str]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/providers/provider.py");
    let python = std::env::var("HOOKGATE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("python3 is needed (scripts/setup.sh)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("ModuleNotFoundError"),
        "the providers' libraries are missing: run scripts/setup.sh (pip install -r tests/providers/requirements.txt)\n{err}"
    );
    out
}

fn header_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_libraries_and_hookgate_agree() {
    let up = Upstream::start().await;
    let mut routes = String::from("routes:\n");
    for (scheme, secret) in SCHEMES {
        routes.push_str(&format!(
            "  - name: {scheme}\n    path: /webhooks/{scheme}\n    upstream: \"{}\"\n    https_only: false\n    signature: {{ scheme: {scheme}, secrets: [\"{secret}\"] }}\n",
            up.url()
        ));
    }
    let gw = Gateway::start(&routes).await;
    let body_file = gw.dir.path().join("body.json");
    let body = br#"{"id":"evt_123","type":"invoice.paid","data":{"amount":4200,"note":"caf\u00e9 \u2603"}}"#;
    std::fs::write(&body_file, body).unwrap();
    let body_path = body_file.to_string_lossy().into_owned();

    for (n, (scheme, secret)) in SCHEMES.iter().enumerate() {
        // The provider's library signs; hookgate must admit it, byte for byte.
        let out = python(&["sign", scheme, secret, &body_path]);
        assert!(
            out.status.success(),
            "{scheme}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let headers = header_lines(&String::from_utf8_lossy(&out.stdout));
        let post = |payload: Vec<u8>| {
            let mut req = client()
                .post(gw.http_url(&format!("/webhooks/{scheme}")))
                .body(payload);
            for (name, value) in &headers {
                req = req.header(name, value);
            }
            req.send()
        };
        let (status, code, _) = answer(post(body.to_vec()).await.unwrap()).await;
        assert_eq!(
            status, 200,
            "{scheme}: library-signed delivery refused with {code}"
        );
        assert_eq!(up.received()[n].body, body.to_vec());
        let mut tampered = body.to_vec();
        tampered[10] ^= 1;
        let (status, code, _) = answer(post(tampered).await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "signature_invalid"),
            "{scheme}: tampered body"
        );

        // hookgate signs; the provider's library must verify (where a library verifies).
        if matches!(*scheme, "github" | "shopify") {
            continue;
        }
        let signed = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["sign", "-c"])
            .arg(&gw.config)
            .args(["--route", scheme, &body_path])
            .output()
            .unwrap();
        assert!(
            signed.status.success(),
            "{}",
            String::from_utf8_lossy(&signed.stderr)
        );
        let headers_file = gw.dir.path().join(format!("{scheme}.headers"));
        std::fs::write(&headers_file, &signed.stdout).unwrap();
        let verdict = python(&[
            "verify",
            scheme,
            secret,
            &body_path,
            &headers_file.to_string_lossy(),
        ]);
        assert!(
            verdict.status.success(),
            "{scheme}: the library refused hookgate's signature: {}",
            String::from_utf8_lossy(&verdict.stderr)
        );
    }
    assert_eq!(up.count(), SCHEMES.len());
}

#[test]
fn every_shipped_config_passes_check() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let examples = std::fs::read_dir(config.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path());
    let mut seen = 0;
    for path in std::iter::once(config.join("hookgate.yaml")).chain(examples) {
        let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["check", "-c"])
            .arg(&path)
            .envs([
                ("GITHUB_WEBHOOK_SECRET", "s"),
                ("STRIPE_WEBHOOK_SECRET", "whsec_s"),
                ("SHOPIFY_API_SECRET", "s"),
                ("STANDARD_WEBHOOK_SECRET", "whsec_c2VjcmV0"),
                ("SVIX_WEBHOOK_SECRET", "whsec_c2VjcmV0"),
                ("SLACK_SIGNING_SECRET", "s"),
                ("IMGGO_WEBHOOK_SECRET", "s"),
                ("HOOKGATE_ADMIN_TOKEN", "t"),
                ("TWILIO_AUTH_TOKEN", "s"),
                ("DISCORD_PUBLIC_KEY", "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"),
                ("SENDGRID_VERIFICATION_KEY", "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="),
                ("PADDLE_WEBHOOK_SECRET", "s"),
                ("SQUARE_SIGNATURE_KEY", "s"),
                ("PAGERDUTY_WEBHOOK_SECRET", "s"),
                ("LINEAR_WEBHOOK_SECRET", "s"),
                ("GITLAB_WEBHOOK_TOKEN", "s"),
                ("ZOOM_SECRET_TOKEN", "s"),
                ("MAILGUN_SIGNING_KEY", "s"),
                ("INTERCOM_CLIENT_SECRET", "s"),
                ("TYPEFORM_SECRET", "s"),
                ("CALENDLY_SIGNING_KEY", "s"),
                ("TFE_NOTIFICATION_TOKEN", "s"),
                ("TWITCH_EVENTSUB_SECRET", "s"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stdout.is_empty());
        seen += 1;
    }
    assert!(
        seen >= 7,
        "the example config, one example per provider, the queue example"
    );
}
