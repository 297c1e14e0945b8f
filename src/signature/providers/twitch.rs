//! Twitch EventSub: `Twitch-Eventsub-Message-Signature: sha256=<hex>` over
//! `{id}{timestamp}{body}`; with `handshake`, its `webhook_callback_verification` is answered at
//! the gateway.

use super::{hex_candidates, hex_mac, rfc3339_seconds, Keys};
use crate::signature::mac::Algorithm;
use crate::signature::{header, Handshake, Scheme, SchemeSpec, SignatureError};
use http::HeaderMap;
use std::time::SystemTime;

pub(in crate::signature) const SPEC: SchemeSpec = SchemeSpec {
    timestamped: true,
    has_handshake: true,
    ..SchemeSpec::plain("twitch", |s, tolerance| {
        Ok(Box::new(Twitch {
            keys: Keys::new(s, tolerance, Algorithm::Sha256),
            handshake: s.handshake,
        }))
    })
};

struct Twitch {
    keys: Keys,
    handshake: bool,
}

impl Scheme for Twitch {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key("twitch-eventsub-message-signature")
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let signature = |name: &str| header(headers, name).ok_or(SignatureError::Missing);
        let value = signature("twitch-eventsub-message-signature")?;
        let id = signature("twitch-eventsub-message-id")?;
        let raw_ts = signature("twitch-eventsub-message-timestamp")?;
        let t = rfc3339_seconds(raw_ts).ok_or(SignatureError::Invalid)?;
        let sig = value
            .trim_ascii()
            .strip_prefix(b"sha256=")
            .ok_or(SignatureError::Invalid)?;
        let candidates = hex_candidates(&[sig])?;
        self.keys.any_candidate(&[id, raw_ts, body], &candidates)?;
        self.keys.fresh(t, now)
    }

    fn sign(
        &self,
        body: &[u8],
        now: SystemTime,
        _key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let id = uuid::Uuid::new_v4().to_string();
        let at = humantime::format_rfc3339_millis(now).to_string();
        let sig = hex_mac(self.keys.first()?, &[id.as_bytes(), at.as_bytes(), body]);
        Ok(vec![
            ("Twitch-Eventsub-Message-Id".into(), id),
            ("Twitch-Eventsub-Message-Timestamp".into(), at),
            (
                "Twitch-Eventsub-Message-Signature".into(),
                format!("sha256={sig}"),
            ),
        ])
    }

    /// Twitch's `webhook_callback_verification`: the challenge, as plain text.
    fn handshake(&self, headers: &HeaderMap, body: &[u8]) -> Option<Handshake> {
        if !self.handshake {
            return None;
        }
        if header(headers, "twitch-eventsub-message-type")? != b"webhook_callback_verification" {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        Some(Handshake::text(v.get("challenge")?.as_str()?))
    }
}
