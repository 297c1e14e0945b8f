//! Provider presets whose signed content or header layout is their provider's own (PRODUCT.md
//! §4), one file each; what they share is here: the route's secrets as keys, the tolerance, and
//! the reading of `key=value` header items. Each signs as its provider documents, and every
//! secret of the route is tried, in constant time.

pub(super) mod calendly;
pub(super) mod gitlab;
pub(super) mod linear;
pub(super) mod mailgun;
pub(super) mod paddle;
pub(super) mod pagerduty;
pub(super) mod square;
pub(super) mod twilio;
pub(super) mod twitch;
pub(super) mod zoom;

use super::mac::{matches_any, tags, Algorithm, KeyedMac};
use super::{unix_seconds, within_tolerance, SchemeSettings, SignatureError, MAX_SIGNATURES};
use std::time::{Duration, SystemTime};

/// A route's secrets as a preset uses them: HMAC keys (and the secrets themselves, for a
/// preset that compares a token), and the tolerance for its signed timestamp.
pub(super) struct Keys {
    keys: Vec<KeyedMac>,
    secrets: Vec<Vec<u8>>,
    tolerance: Duration,
}

impl Keys {
    pub(super) fn new(s: &SchemeSettings<'_>, tolerance: Duration, algorithm: Algorithm) -> Self {
        Self {
            keys: s
                .secrets
                .iter()
                .map(|k| KeyedMac::new(algorithm, k.as_bytes()))
                .collect(),
            secrets: s.secrets.iter().map(|k| k.as_bytes().to_vec()).collect(),
            tolerance,
        }
    }

    /// The key `sign` uses.
    pub(super) fn first(&self) -> Result<&KeyedMac, String> {
        self.keys.first().ok_or_else(|| "no secret".to_string())
    }

    pub(super) fn secrets(&self) -> &[Vec<u8>] {
        &self.secrets
    }

    pub(super) fn fresh(&self, ts: i64, now: SystemTime) -> Result<(), SignatureError> {
        if within_tolerance(ts, now, self.tolerance) {
            Ok(())
        } else {
            Err(SignatureError::OutOfTolerance)
        }
    }

    /// Constant-time: does any candidate equal the MAC of `content` under any key?
    pub(super) fn any_candidate(
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

/// `key=value` items of a header split on `separator`: the values of `key`.
pub(super) fn items<'h>(value: &'h [u8], separator: u8, key: &[u8]) -> Vec<&'h [u8]> {
    value
        .split(|&b| b == separator)
        .map(<[u8]>::trim_ascii)
        .filter_map(|item| item.strip_prefix(key)?.strip_prefix(b"="))
        .collect()
}

/// A header of a timestamp item and signature items (Paddle's `ts=..;h1=..`, Calendly's
/// `t=..,v1=..`): the timestamp as sent, as seconds, and the signatures.
pub(super) struct TimestampedItems<'h> {
    pub(super) raw_ts: &'h [u8],
    pub(super) t: i64,
    pub(super) candidates: Vec<Vec<u8>>,
}

pub(super) fn timestamped_items<'h>(
    value: &'h [u8],
    separator: u8,
    (ts_key, sig_key): (&[u8], &[u8]),
) -> Result<TimestampedItems<'h>, SignatureError> {
    let raw_ts = *items(value, separator, ts_key)
        .first()
        .ok_or(SignatureError::Invalid)?;
    Ok(TimestampedItems {
        raw_ts,
        t: super::parse_timestamp(raw_ts).ok_or(SignatureError::Invalid)?,
        candidates: hex_candidates(&items(value, separator, sig_key))?,
    })
}

pub(super) fn hex_candidates(values: &[&[u8]]) -> Result<Vec<Vec<u8>>, SignatureError> {
    if values.len() > MAX_SIGNATURES {
        return Err(SignatureError::Invalid);
    }
    Ok(values.iter().filter_map(|v| hex::decode(v).ok()).collect())
}

/// Seconds since the epoch of an RFC 3339 time (Twitch's message timestamp).
pub(super) fn rfc3339_seconds(raw: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(raw).ok()?;
    let t = humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(text))
        .ok()?;
    Some(unix_seconds(t))
}

/// `hex` of the MAC of `parts` under the first key.
pub(super) fn hex_mac(key: &KeyedMac, parts: &[&[u8]]) -> String {
    hex::encode(key.compute(parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{build, Scheme, SchemeName};
    use http::HeaderMap;
    use std::time::UNIX_EPOCH;

    const SECRET: &str = "whsec-test";
    const URL: &str = "https://example.com/webhooks/square";

    /// The preset `name` as a route configures it, with `secret` (and `url`, where it signs one).
    fn scheme_with(name: &str, secret: &str, url: &str, handshake: bool) -> Box<dyn Scheme> {
        let scheme = SchemeName::parse(name).unwrap();
        let secrets = [secret.to_string()];
        build(&crate::signature::SchemeSettings {
            scheme,
            secrets: &secrets,
            header: None,
            algorithm: None,
            encoding: None,
            prefix: None,
            tolerance: None,
            public_url: scheme.signs_url().then_some(url),
            handshake: handshake && scheme.has_handshake(),
        })
        .unwrap_or_else(|e| panic!("{name}: {e:?}"))
    }

    fn scheme(name: &str) -> Box<dyn Scheme> {
        scheme_with(name, SECRET, URL, true)
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
        type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a [u8]);
        let cases: Vec<Case> = vec![
            (
                "pagerduty",
                vec![("x-pagerduty-signature", format!("v1=00ff,v1={pagerduty}"))],
                body,
            ),
            (
                "paddle",
                vec![("paddle-signature", "ts=1700000000;h1=dd4a8e46a777ecb84c413501b699bbc1698b95c94ec7fd1b8a942106e9204557".into())],
                body,
            ),
            (
                "calendly",
                vec![("calendly-webhook-signature", "t=1700000000,v1=da2b53245399a9be09e854260e575653756bf1612984b894bb69f4c5be744c1a".into())],
                body,
            ),
            (
                "zoom",
                vec![
                    ("x-zm-request-timestamp", "1700000000".into()),
                    ("x-zm-signature", "v0=9912c46bc283b66353701cc16f529ba6ed0038e417783db2b31b9f152b39a461".into()),
                ],
                body,
            ),
            (
                "linear",
                vec![("linear-signature", pagerduty.into())],
                body,
            ),
            (
                "square",
                vec![("x-square-hmacsha256-signature", "3zAeXvJ7IFj7uvgl/FDh8g52bXAOPc3EiDMMqNB0J/E=".into())],
                body,
            ),
            (
                "twitch",
                vec![
                    ("twitch-eventsub-message-id", "befa7b53-d79d-478f-86b9-120f112b044e".into()),
                    ("twitch-eventsub-message-timestamp", "2023-11-14T22:13:20.123Z".into()),
                    ("twitch-eventsub-message-signature", "sha256=4b04d941bed9442d511ec44e944507bd27d4fb5d07520f61d39ce95499b96b52".into()),
                ],
                body,
            ),
            (
                "mailgun",
                vec![],
                br#"{"signature":{"timestamp":"1700000000","token":"8f3a2c","signature":"a52cdef4b02a2c1433cd5b7eb32a650e67d37107dc04f4599181e4f66814861b"}}"#,
            ),
        ];
        for (p, h, signed) in cases {
            let s = scheme(p);
            let pairs: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let h = headers(&pairs);
            assert_eq!(s.verify(&h, signed, at), Ok(()), "{p}");
            let mut changed = signed.to_vec();
            let i = changed.len() - 4;
            changed[i] ^= 1;
            assert!(
                s.verify(&h, &changed, at).is_err(),
                "{p} accepted a changed byte"
            );
        }
    }

    #[test]
    fn every_preset_round_trips_and_refuses_tampering() {
        let now = SystemTime::now();
        for p in [
            "pagerduty",
            "paddle",
            "calendly",
            "zoom",
            "twitch",
            "linear",
            "square",
            "twilio",
            "gitlab",
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
            assert!(s.signature_present(&h), "{p}");
            assert_eq!(s.verify(&h, body.as_bytes(), now), Ok(()), "{p}");
            if p != "gitlab" {
                let mut tampered = body.clone().into_bytes();
                tampered[body.len() - 3] ^= 1;
                assert!(
                    s.verify(&h, &tampered, now).is_err(),
                    "{p} accepted a changed byte"
                );
            }
            let other = scheme_with(p, "another", URL, false);
            assert_eq!(
                other.verify(&h, body.as_bytes(), now),
                Err(SignatureError::Invalid),
                "{p} accepted a wrong secret"
            );
            if SchemeName::parse(p).unwrap().timestamped() && p != "linear" {
                let later = now + Duration::from_secs(3600);
                assert_eq!(
                    s.verify(&h, body.as_bytes(), later),
                    Err(SignatureError::OutOfTolerance),
                    "{p}"
                );
            }
            assert!(!s.signature_present(&HeaderMap::new()), "{p}");
        }
    }

    /// Twilio's documented validation example: auth token 12345, the URL with its query, and
    /// the call's form parameters.
    #[test]
    fn twilio_published_example() {
        let s = scheme_with(
            "twilio",
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=2",
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
        let zoom = scheme("zoom");
        let body = br#"{"event":"endpoint.url_validation","payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"}}"#;
        let h = zoom.handshake(&HeaderMap::new(), body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
        assert_eq!(v["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
        let expected = hex::encode(
            KeyedMac::new(Algorithm::Sha256, SECRET.as_bytes())
                .compute(&[b"qgg8vlvZRS6UYooatFL8Aw"]),
        );
        assert_eq!(v["encryptedToken"], expected.as_str());

        let twitch = scheme("twitch");
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
