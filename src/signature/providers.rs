//! Provider presets whose signed content or header layout is their provider's own (PRODUCT.md §4):
//! PagerDuty, Paddle, Calendly, Zoom, Twitch, Linear, Square, Twilio, Mailgun and GitLab. Each signs as
//! its provider documents; every secret of the route is tried, in constant time.

use super::mac::{matches_any, tags, Algorithm, KeyedMac};
use super::{
    header, parse_timestamp, unix_seconds, within_tolerance, Handshake, Scheme, SchemeName,
    SignatureError, MAX_SIGNATURES,
};
use base64::Engine;
use http::HeaderMap;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]`, HMAC-SHA256 of the body.
    PagerDuty,
    /// `Paddle-Signature: ts=<t>;h1=<hex>`, HMAC-SHA256 of `{t}:{body}`.
    Paddle,
    /// `Calendly-Webhook-Signature: t=<t>,v1=<hex>`, HMAC-SHA256 of `{t}.{body}`.
    Calendly,
    /// `x-zm-signature: v0=<hex>` over `v0:{x-zm-request-timestamp}:{body}`.
    Zoom,
    /// `Twitch-Eventsub-Message-Signature: sha256=<hex>` over `{id}{timestamp}{body}`.
    Twitch,
    /// `Linear-Signature: <hex>` of the body, and the body's `webhookTimestamp` (ms) in tolerance.
    Linear,
    /// `x-square-hmacsha256-signature: <base64>` of `{notification URL}{body}`.
    Square,
    /// `X-Twilio-Signature: <base64>` HMAC-SHA1 of `{URL}` followed by every form parameter's
    /// name and value, sorted by name (form-encoded bodies; the URL as the sender saw it).
    Twilio,
    /// The body's `signature: {timestamp, token, signature}`: hex HMAC-SHA256 of `{timestamp}{token}`.
    Mailgun,
    /// `X-Gitlab-Token` equal to the secret.
    GitLab,
}

impl Provider {
    /// The scheme name a config gives this provider (the one list of names is `SchemeName`).
    pub fn name(self) -> &'static str {
        SchemeName::ALL
            .into_iter()
            .find(|n| n.provider() == Some(self))
            .map_or("provider", SchemeName::as_str)
    }

    /// Whether the provider signs a timestamp the gateway checks against `tolerance`.
    pub fn timestamped(self) -> bool {
        matches!(
            self,
            Self::Paddle
                | Self::Calendly
                | Self::Zoom
                | Self::Twitch
                | Self::Linear
                | Self::Mailgun
        )
    }

    /// Whether the provider signs the URL the sender delivered to (`public_url` is required).
    pub fn signs_url(self) -> bool {
        matches!(self, Self::Square | Self::Twilio)
    }

    /// Whether the provider sends a verification request the gateway can answer.
    pub fn has_handshake(self) -> bool {
        matches!(self, Self::Zoom | Self::Twitch)
    }

    /// The header whose presence the head check looks for (`None`: the signature is in the body).
    fn signature_header(self) -> Option<&'static str> {
        Some(match self {
            Self::PagerDuty => "x-pagerduty-signature",
            Self::Paddle => "paddle-signature",
            Self::Calendly => "calendly-webhook-signature",
            Self::Zoom => "x-zm-signature",
            Self::Twitch => "twitch-eventsub-message-signature",
            Self::Linear => "linear-signature",
            Self::Square => "x-square-hmacsha256-signature",
            Self::Twilio => "x-twilio-signature",
            Self::GitLab => "x-gitlab-token",
            Self::Mailgun => return None,
        })
    }
}

pub struct ProviderScheme {
    provider: Provider,
    keys: Vec<KeyedMac>,
    /// GitLab compares the secret itself.
    secrets: Vec<Vec<u8>>,
    tolerance: Duration,
    /// Square signs the notification URL it was configured with.
    url: String,
    handshake: bool,
}

impl ProviderScheme {
    pub fn new(
        provider: Provider,
        secrets: &[String],
        tolerance: Duration,
        url: Option<&str>,
        handshake: bool,
    ) -> Self {
        Self {
            provider,
            keys: secrets
                .iter()
                .map(|s| {
                    let algorithm = match provider {
                        Provider::Twilio => Algorithm::Sha1,
                        _ => Algorithm::Sha256,
                    };
                    KeyedMac::new(algorithm, s.as_bytes())
                })
                .collect(),
            secrets: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            tolerance,
            url: url.unwrap_or_default().to_string(),
            handshake,
        }
    }

    fn fresh(&self, ts: i64, now: SystemTime) -> Result<(), SignatureError> {
        if within_tolerance(ts, now, self.tolerance) {
            Ok(())
        } else {
            Err(SignatureError::OutOfTolerance)
        }
    }

    /// Constant-time: does any candidate equal the MAC of `content` under any key?
    fn any_candidate(
        &self,
        content: &[&[u8]],
        candidates: &[Vec<u8>],
    ) -> Result<(), SignatureError> {
        let expected = tags(&self.keys, content);
        let ok = candidates
            .iter()
            .fold(false, |ok, c| matches_any(&expected, c) | ok);
        if ok {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }
}

/// Twilio's signed content after the URL: each form parameter's name and value, sorted by name
/// (and by value for repeated names). A body that is not a form signs nothing more.
fn twilio_params(body: &[u8]) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    let mut pairs = crate::urlencoded::pairs(text);
    pairs.sort();
    pairs
        .into_iter()
        .flat_map(|(k, v)| [k.into_bytes(), v.into_bytes()])
        .flatten()
        .collect()
}

/// `key=value` items of a header split on `separator`: the values of `key`.
fn items<'h>(value: &'h [u8], separator: u8, key: &[u8]) -> Vec<&'h [u8]> {
    value
        .split(|&b| b == separator)
        .map(<[u8]>::trim_ascii)
        .filter_map(|item| item.strip_prefix(key)?.strip_prefix(b"="))
        .collect()
}

fn hex_candidates(values: &[&[u8]]) -> Result<Vec<Vec<u8>>, SignatureError> {
    if values.len() > MAX_SIGNATURES {
        return Err(SignatureError::Invalid);
    }
    Ok(values.iter().filter_map(|v| hex::decode(v).ok()).collect())
}

/// Seconds since the epoch of an RFC 3339 time (Twitch's message timestamp).
fn rfc3339_seconds(raw: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(raw).ok()?;
    let t = humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(text))
        .ok()?;
    Some(unix_seconds(t))
}

impl Scheme for ProviderScheme {
    fn name(&self) -> &'static str {
        self.provider.name()
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        match self.provider.signature_header() {
            Some(h) => headers.contains_key(h),
            // Mailgun signs inside the body: only the body can tell.
            None => true,
        }
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let signature = |name: &str| header(headers, name).ok_or(SignatureError::Missing);
        match self.provider {
            Provider::PagerDuty => {
                let value = signature("x-pagerduty-signature")?;
                let candidates = hex_candidates(&items(value, b',', b"v1"))?;
                self.any_candidate(&[body], &candidates)
            }
            Provider::Paddle => {
                let value = signature("paddle-signature")?;
                let ts = items(value, b';', b"ts");
                let raw_ts = *ts.first().ok_or(SignatureError::Invalid)?;
                let t = parse_timestamp(raw_ts).ok_or(SignatureError::Invalid)?;
                let candidates = hex_candidates(&items(value, b';', b"h1"))?;
                self.any_candidate(&[raw_ts, b":", body], &candidates)?;
                self.fresh(t, now)
            }
            Provider::Calendly => {
                let value = signature("calendly-webhook-signature")?;
                let ts = items(value, b',', b"t");
                let raw_ts = *ts.first().ok_or(SignatureError::Invalid)?;
                let t = parse_timestamp(raw_ts).ok_or(SignatureError::Invalid)?;
                let candidates = hex_candidates(&items(value, b',', b"v1"))?;
                self.any_candidate(&[raw_ts, b".", body], &candidates)?;
                self.fresh(t, now)
            }
            Provider::Zoom => {
                let value = signature("x-zm-signature")?;
                let raw_ts = signature("x-zm-request-timestamp")?.trim_ascii();
                let t = parse_timestamp(raw_ts).ok_or(SignatureError::Invalid)?;
                let sig = value
                    .trim_ascii()
                    .strip_prefix(b"v0=")
                    .ok_or(SignatureError::Invalid)?;
                let candidates = hex_candidates(&[sig])?;
                self.any_candidate(&[b"v0:", raw_ts, b":", body], &candidates)?;
                self.fresh(t, now)
            }
            Provider::Twitch => {
                let value = signature("twitch-eventsub-message-signature")?;
                let id = signature("twitch-eventsub-message-id")?;
                let raw_ts = signature("twitch-eventsub-message-timestamp")?;
                let t = rfc3339_seconds(raw_ts).ok_or(SignatureError::Invalid)?;
                let sig = value
                    .trim_ascii()
                    .strip_prefix(b"sha256=")
                    .ok_or(SignatureError::Invalid)?;
                let candidates = hex_candidates(&[sig])?;
                self.any_candidate(&[id, raw_ts, body], &candidates)?;
                self.fresh(t, now)
            }
            Provider::Linear => {
                let value = signature("linear-signature")?;
                let candidates = hex_candidates(&[value.trim_ascii()])?;
                self.any_candidate(&[body], &candidates)?;
                // The timestamp is inside the signed body, in milliseconds.
                let ms = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("webhookTimestamp")?.as_i64())
                    .ok_or(SignatureError::Invalid)?;
                self.fresh(ms / 1000, now)
            }
            Provider::Square => {
                let value = signature("x-square-hmacsha256-signature")?;
                let sig = base64::engine::general_purpose::STANDARD
                    .decode(value.trim_ascii())
                    .map_err(|_| SignatureError::Invalid)?;
                self.any_candidate(&[self.url.as_bytes(), body], &[sig])
            }
            Provider::Twilio => {
                let value = signature("x-twilio-signature")?;
                let sig = base64::engine::general_purpose::STANDARD
                    .decode(value.trim_ascii())
                    .map_err(|_| SignatureError::Invalid)?;
                let params = twilio_params(body);
                self.any_candidate(&[self.url.as_bytes(), &params], &[sig])
            }
            Provider::Mailgun => {
                let v: serde_json::Value =
                    serde_json::from_slice(body).map_err(|_| SignatureError::Missing)?;
                let s = v.get("signature").ok_or(SignatureError::Missing)?;
                let field = |name: &str| s.get(name).and_then(|x| x.as_str());
                let (Some(ts), Some(token), Some(sig)) =
                    (field("timestamp"), field("token"), field("signature"))
                else {
                    return Err(SignatureError::Missing);
                };
                let t = parse_timestamp(ts.as_bytes()).ok_or(SignatureError::Invalid)?;
                let candidates = hex_candidates(&[sig.as_bytes()])?;
                self.any_candidate(&[ts.as_bytes(), token.as_bytes()], &candidates)?;
                self.fresh(t, now)
            }
            Provider::GitLab => {
                use subtle::ConstantTimeEq;
                let token = signature("x-gitlab-token")?;
                let ok = self
                    .secrets
                    .iter()
                    .fold(false, |ok, s| bool::from(s.as_slice().ct_eq(token)) | ok);
                if ok {
                    Ok(())
                } else {
                    Err(SignatureError::Invalid)
                }
            }
        }
    }

    fn sign(
        &self,
        body: &[u8],
        now: SystemTime,
        _signing_key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let key = self.keys.first().ok_or("no secret")?;
        let ts = unix_seconds(now).to_string();
        let hex_of = |parts: &[&[u8]]| hex::encode(key.compute(parts));
        Ok(match self.provider {
            Provider::PagerDuty => vec![(
                "X-PagerDuty-Signature".into(),
                format!("v1={}", hex_of(&[body])),
            )],
            Provider::Paddle => vec![(
                "Paddle-Signature".into(),
                format!("ts={ts};h1={}", hex_of(&[ts.as_bytes(), b":", body])),
            )],
            Provider::Calendly => vec![(
                "Calendly-Webhook-Signature".into(),
                format!("t={ts},v1={}", hex_of(&[ts.as_bytes(), b".", body])),
            )],
            Provider::Zoom => vec![
                ("x-zm-request-timestamp".into(), ts.clone()),
                (
                    "x-zm-signature".into(),
                    format!("v0={}", hex_of(&[b"v0:", ts.as_bytes(), b":", body])),
                ),
            ],
            Provider::Twitch => {
                let id = uuid::Uuid::new_v4().to_string();
                let at = humantime::format_rfc3339_millis(now).to_string();
                vec![
                    ("Twitch-Eventsub-Message-Id".into(), id.clone()),
                    ("Twitch-Eventsub-Message-Timestamp".into(), at.clone()),
                    (
                        "Twitch-Eventsub-Message-Signature".into(),
                        format!("sha256={}", hex_of(&[id.as_bytes(), at.as_bytes(), body])),
                    ),
                ]
            }
            Provider::Linear => vec![("Linear-Signature".into(), hex_of(&[body]))],
            Provider::Square => vec![(
                "x-square-hmacsha256-signature".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(key.compute(&[self.url.as_bytes(), body])),
            )],
            Provider::Twilio => vec![(
                "X-Twilio-Signature".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(key.compute(&[self.url.as_bytes(), &twilio_params(body)])),
            )],
            Provider::Mailgun => {
                return Err("mailgun signs inside the body (signature.timestamp, token, signature); sign it there".into())
            }
            Provider::GitLab => vec![(
                "X-Gitlab-Token".into(),
                String::from_utf8_lossy(&self.secrets[0]).into_owned(),
            )],
        })
    }

    fn handshake(&self, headers: &HeaderMap, body: &[u8]) -> Option<Handshake> {
        if !self.handshake {
            return None;
        }
        match self.provider {
            // Zoom's endpoint.url_validation: the plain token and its HMAC-SHA256, hex.
            Provider::Zoom => {
                let v: serde_json::Value = serde_json::from_slice(body).ok()?;
                if v.get("event")?.as_str()? != "endpoint.url_validation" {
                    return None;
                }
                let plain = v.get("payload")?.get("plainToken")?.as_str()?;
                let encrypted = hex::encode(self.keys.first()?.compute(&[plain.as_bytes()]));
                Some(Handshake::json(serde_json::json!({
                    "plainToken": plain,
                    "encryptedToken": encrypted,
                })))
            }
            // Twitch's webhook_callback_verification: the challenge, as plain text.
            Provider::Twitch => {
                let kind = header(headers, "twitch-eventsub-message-type")?;
                if kind != b"webhook_callback_verification" {
                    return None;
                }
                let v: serde_json::Value = serde_json::from_slice(body).ok()?;
                let challenge = v.get("challenge")?.as_str()?;
                Some(Handshake::text(challenge))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const SECRET: &str = "whsec-test";

    fn scheme(p: Provider) -> ProviderScheme {
        ProviderScheme::new(
            p,
            &[SECRET.to_string()],
            Duration::from_secs(300),
            Some("https://example.com/webhooks/square"),
            true,
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    /// Vectors made with Python's hmac module, independently of this code, e.g.
    /// `hmac.new(b"whsec-test", b"1700000000:" + BODY, hashlib.sha256).hexdigest()` for Paddle.
    #[test]
    fn independent_vectors_verify_and_a_changed_byte_does_not() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_030);
        let body = br#"{"id":"evt_1","webhookTimestamp":1700000000000}"#;
        let pagerduty = "8998cb5fafce036d7cf09dbaaf2f8a383f384ce2e52d3811bfdab1505119c6b0";
        type Case<'a> = (Provider, Vec<(&'a str, String)>, &'a [u8]);
        let cases: Vec<Case> = vec![
            (
                Provider::PagerDuty,
                vec![("x-pagerduty-signature", format!("v1=00ff,v1={pagerduty}"))],
                body,
            ),
            (
                Provider::Paddle,
                vec![("paddle-signature", "ts=1700000000;h1=dd4a8e46a777ecb84c413501b699bbc1698b95c94ec7fd1b8a942106e9204557".into())],
                body,
            ),
            (
                Provider::Calendly,
                vec![("calendly-webhook-signature", "t=1700000000,v1=da2b53245399a9be09e854260e575653756bf1612984b894bb69f4c5be744c1a".into())],
                body,
            ),
            (
                Provider::Zoom,
                vec![
                    ("x-zm-request-timestamp", "1700000000".into()),
                    ("x-zm-signature", "v0=9912c46bc283b66353701cc16f529ba6ed0038e417783db2b31b9f152b39a461".into()),
                ],
                body,
            ),
            (
                Provider::Linear,
                vec![("linear-signature", pagerduty.into())],
                body,
            ),
            (
                Provider::Square,
                vec![("x-square-hmacsha256-signature", "3zAeXvJ7IFj7uvgl/FDh8g52bXAOPc3EiDMMqNB0J/E=".into())],
                body,
            ),
            (
                Provider::Twitch,
                vec![
                    ("twitch-eventsub-message-id", "befa7b53-d79d-478f-86b9-120f112b044e".into()),
                    ("twitch-eventsub-message-timestamp", "2023-11-14T22:13:20.123Z".into()),
                    ("twitch-eventsub-message-signature", "sha256=4b04d941bed9442d511ec44e944507bd27d4fb5d07520f61d39ce95499b96b52".into()),
                ],
                body,
            ),
            (
                Provider::Mailgun,
                vec![],
                br#"{"signature":{"timestamp":"1700000000","token":"8f3a2c","signature":"a52cdef4b02a2c1433cd5b7eb32a650e67d37107dc04f4599181e4f66814861b"}}"#,
            ),
        ];
        for (p, h, signed) in cases {
            let s = scheme(p);
            let pairs: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let h = headers(&pairs);
            assert_eq!(s.verify(&h, signed, at), Ok(()), "{p:?}");
            let mut changed = signed.to_vec();
            let i = changed.len() - 4;
            changed[i] ^= 1;
            assert!(
                s.verify(&h, &changed, at).is_err(),
                "{p:?} accepted a changed byte"
            );
        }
    }

    #[test]
    fn every_preset_round_trips_and_refuses_tampering() {
        let now = SystemTime::now();
        for p in [
            Provider::PagerDuty,
            Provider::Paddle,
            Provider::Calendly,
            Provider::Zoom,
            Provider::Twitch,
            Provider::Linear,
            Provider::Square,
            Provider::Twilio,
            Provider::GitLab,
        ] {
            let s = scheme(p);
            let body = format!(
                r#"{{"webhookTimestamp":{},"id":"x"}}"#,
                unix_seconds(now) * 1000
            );
            let signed: Vec<(String, String)> = s.sign(body.as_bytes(), now, None).unwrap();
            let mut h = HeaderMap::new();
            for (n, v) in &signed {
                h.insert(
                    http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            assert!(s.signature_present(&h), "{p:?}");
            assert_eq!(s.verify(&h, body.as_bytes(), now), Ok(()), "{p:?}");
            if p != Provider::GitLab {
                let mut tampered = body.clone().into_bytes();
                tampered[body.len() - 3] ^= 1;
                assert!(
                    s.verify(&h, &tampered, now).is_err(),
                    "{p:?} accepted a changed byte"
                );
            }
            let other = ProviderScheme::new(
                p,
                &["another".to_string()],
                Duration::from_secs(300),
                Some("https://example.com/webhooks/square"),
                false,
            );
            assert_eq!(
                other.verify(&h, body.as_bytes(), now),
                Err(SignatureError::Invalid),
                "{p:?} accepted a wrong secret"
            );
            if p.timestamped() && p != Provider::Linear {
                let later = now + Duration::from_secs(3600);
                assert_eq!(
                    s.verify(&h, body.as_bytes(), later),
                    Err(SignatureError::OutOfTolerance),
                    "{p:?}"
                );
            }
            assert!(!s.signature_present(&HeaderMap::new()), "{p:?}");
        }
    }

    /// Twilio's documented validation example: auth token 12345, the URL with its query, and
    /// the call's form parameters.
    #[test]
    fn twilio_published_example() {
        let s = ProviderScheme::new(
            Provider::Twilio,
            &["12345".to_string()],
            Duration::from_secs(300),
            Some("https://mycompany.com/myapp.php?foo=1&bar=2"),
            false,
        );
        let body = b"CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";
        let h = headers(&[("x-twilio-signature", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")]);
        assert_eq!(s.verify(&h, body, SystemTime::now()), Ok(()));
        let h = headers(&[("x-twilio-signature", "1/KCTR6DLpKmkAf8muzZqo1nDgQ=")]);
        assert_eq!(
            s.verify(&h, body, SystemTime::now()),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn zoom_and_twitch_handshakes_are_answered() {
        let zoom = scheme(Provider::Zoom);
        let body = br#"{"event":"endpoint.url_validation","payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"}}"#;
        let h = zoom.handshake(&HeaderMap::new(), body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
        assert_eq!(v["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
        let expected = hex::encode(
            KeyedMac::new(Algorithm::Sha256, SECRET.as_bytes())
                .compute(&[b"qgg8vlvZRS6UYooatFL8Aw"]),
        );
        assert_eq!(v["encryptedToken"], expected.as_str());

        let twitch = scheme(Provider::Twitch);
        let h = headers(&[(
            "twitch-eventsub-message-type",
            "webhook_callback_verification",
        )]);
        let answer = twitch
            .handshake(&h, br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo"}"#)
            .unwrap();
        assert_eq!(answer.body, b"pogchamp-kappa-360noscope-vohiyo");
        assert_eq!(answer.content_type, "text/plain");
        assert!(twitch
            .handshake(&HeaderMap::new(), br#"{"challenge":"x"}"#)
            .is_none());
    }
}
