//! Calendly: `Calendly-Webhook-Signature: t=<t>,v1=<hex>`, HMAC-SHA256 of `{t}.{body}`.

use super::{hex_mac, timestamped_items, Keys};
use crate::signature::mac::Algorithm;
use crate::signature::{header, unix_seconds, Scheme, SchemeSpec, SignatureError};
use http::HeaderMap;
use std::time::SystemTime;

pub(in crate::signature) const SPEC: SchemeSpec = SchemeSpec {
    timestamped: true,
    ..SchemeSpec::plain("calendly", |s, tolerance| {
        Ok(Box::new(Calendly(Keys::new(
            s,
            tolerance,
            Algorithm::Sha256,
        ))))
    })
};

struct Calendly(Keys);

impl Scheme for Calendly {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key("calendly-webhook-signature")
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let value = header(headers, "calendly-webhook-signature").ok_or(SignatureError::Missing)?;
        let signed = timestamped_items(value, b',', (b"t", b"v1"))?;
        self.0
            .any_candidate(&[signed.raw_ts, b".", body], &signed.candidates)?;
        self.0.fresh(signed.t, now)
    }

    fn sign(
        &self,
        body: &[u8],
        now: SystemTime,
        _key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let ts = unix_seconds(now).to_string();
        let sig = hex_mac(self.0.first()?, &[ts.as_bytes(), b".", body]);
        Ok(vec![(
            "Calendly-Webhook-Signature".into(),
            format!("t={ts},v1={sig}"),
        )])
    }
}
