//! PagerDuty: `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]`, HMAC-SHA256 of the body.

use super::{hex_candidates, hex_mac, items, Keys};
use crate::signature::mac::Algorithm;
use crate::signature::{header, Scheme, SchemeSpec, SignatureError};
use http::HeaderMap;
use std::time::SystemTime;

pub(in crate::signature) const SPEC: SchemeSpec = SchemeSpec::plain("pagerduty", |s, tolerance| {
    Ok(Box::new(PagerDuty(Keys::new(
        s,
        tolerance,
        Algorithm::Sha256,
    ))))
});

struct PagerDuty(Keys);

impl Scheme for PagerDuty {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key("x-pagerduty-signature")
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        _now: SystemTime,
    ) -> Result<(), SignatureError> {
        let value = header(headers, "x-pagerduty-signature").ok_or(SignatureError::Missing)?;
        let candidates = hex_candidates(&items(value, b',', b"v1"))?;
        self.0.any_candidate(&[body], &candidates)
    }

    fn sign(
        &self,
        body: &[u8],
        _now: SystemTime,
        _key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let sig = hex_mac(self.0.first()?, &[body]);
        Ok(vec![("X-PagerDuty-Signature".into(), format!("v1={sig}"))])
    }
}
