//! Linear: `Linear-Signature: <hex>` HMAC-SHA256 of the body, and the body's
//! `webhookTimestamp` (ms) within the tolerance.

use super::{hex_candidates, hex_mac, Keys};
use crate::signature::mac::Algorithm;
use crate::signature::{header, Scheme, SchemeSpec, SignatureError};
use http::HeaderMap;
use std::time::SystemTime;

pub(in crate::signature) const SPEC: SchemeSpec = SchemeSpec {
    timestamped: true,
    ..SchemeSpec::plain("linear", |s, tolerance| {
        Ok(Box::new(Linear(Keys::new(s, tolerance, Algorithm::Sha256))))
    })
};

struct Linear(Keys);

impl Scheme for Linear {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key("linear-signature")
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let value = header(headers, "linear-signature").ok_or(SignatureError::Missing)?;
        let candidates = hex_candidates(&[value.trim_ascii()])?;
        self.0.any_candidate(&[body], &candidates)?;
        // The timestamp is inside the signed body, in milliseconds.
        let ms = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("webhookTimestamp")?.as_i64())
            .ok_or(SignatureError::Invalid)?;
        self.0.fresh(ms / 1000, now)
    }

    fn sign(
        &self,
        body: &[u8],
        _now: SystemTime,
        _key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        Ok(vec![(
            "Linear-Signature".into(),
            hex_mac(self.0.first()?, &[body]),
        )])
    }
}
