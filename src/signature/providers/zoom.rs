//! Zoom: `x-zm-signature: v0=<hex>` over `v0:{x-zm-request-timestamp}:{body}`; with
//! `handshake`, its `endpoint.url_validation` is answered at the gateway.

use super::{hex_candidates, hex_mac, Keys};
use crate::signature::mac::Algorithm;
use crate::signature::{
    header, parse_timestamp, unix_seconds, Handshake, Scheme, SchemeSpec, SignatureError,
};
use http::HeaderMap;
use std::time::SystemTime;

pub(in crate::signature) const SPEC: SchemeSpec = SchemeSpec {
    timestamped: true,
    has_handshake: true,
    ..SchemeSpec::plain("zoom", |s, tolerance| {
        Ok(Box::new(Zoom {
            keys: Keys::new(s, tolerance, Algorithm::Sha256),
            handshake: s.handshake,
        }))
    })
};

struct Zoom {
    keys: Keys,
    handshake: bool,
}

impl Scheme for Zoom {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key("x-zm-signature")
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let signature = |name: &str| header(headers, name).ok_or(SignatureError::Missing);
        let value = signature("x-zm-signature")?;
        let raw_ts = signature("x-zm-request-timestamp")?.trim_ascii();
        let t = parse_timestamp(raw_ts).ok_or(SignatureError::Invalid)?;
        let sig = value
            .trim_ascii()
            .strip_prefix(b"v0=")
            .ok_or(SignatureError::Invalid)?;
        let candidates = hex_candidates(&[sig])?;
        self.keys
            .any_candidate(&[b"v0:", raw_ts, b":", body], &candidates)?;
        self.keys.fresh(t, now)
    }

    fn sign(
        &self,
        body: &[u8],
        now: SystemTime,
        _key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let ts = unix_seconds(now).to_string();
        let sig = hex_mac(self.keys.first()?, &[b"v0:", ts.as_bytes(), b":", body]);
        Ok(vec![
            ("x-zm-request-timestamp".into(), ts),
            ("x-zm-signature".into(), format!("v0={sig}")),
        ])
    }

    /// Zoom's `endpoint.url_validation`: the plain token and its HMAC-SHA256, hex.
    fn handshake(&self, _headers: &HeaderMap, body: &[u8]) -> Option<Handshake> {
        if !self.handshake {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        if v.get("event")?.as_str()? != "endpoint.url_validation" {
            return None;
        }
        let plain = v.get("payload")?.get("plainToken")?.as_str()?;
        let encrypted = hex_mac(self.keys.first().ok()?, &[plain.as_bytes()]);
        Some(Handshake::json(serde_json::json!({
            "plainToken": plain,
            "encryptedToken": encrypted,
        })))
    }
}
