//! Paddle: `Paddle-Signature: ts=<t>;h1=<hex>`, HMAC-SHA256 of `{t}:{body}`.

use super::{hex_mac, timestamped_items, Keys};
use crate::signature::mac::Algorithm;
use crate::signature::{header, unix_seconds, Scheme, SchemeSpec, SignatureError};
use http::HeaderMap;
use std::time::SystemTime;

pub(in crate::signature) const SPEC: SchemeSpec = SchemeSpec {
    timestamped: true,
    ..SchemeSpec::plain("paddle", |s, tolerance| {
        Ok(Box::new(Paddle(Keys::new(s, tolerance, Algorithm::Sha256))))
    })
};

struct Paddle(Keys);

impl Scheme for Paddle {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key("paddle-signature")
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let value = header(headers, "paddle-signature").ok_or(SignatureError::Missing)?;
        let signed = timestamped_items(value, b';', (b"ts", b"h1"))?;
        self.0
            .any_candidate(&[signed.raw_ts, b":", body], &signed.candidates)?;
        self.0.fresh(signed.t, now)
    }

    fn sign(
        &self,
        body: &[u8],
        now: SystemTime,
        _key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let ts = unix_seconds(now).to_string();
        let sig = hex_mac(self.0.first()?, &[ts.as_bytes(), b":", body]);
        Ok(vec![(
            "Paddle-Signature".into(),
            format!("ts={ts};h1={sig}"),
        )])
    }
}
