//! Mailgun: the body's `signature: {timestamp, token, signature}`, hex HMAC-SHA256 of
//! `{timestamp}{token}`.

use super::{hex_candidates, Keys};
use crate::signature::mac::Algorithm;
use crate::signature::{parse_timestamp, Scheme, SchemeSpec, SignatureError};
use http::HeaderMap;
use std::time::SystemTime;

pub(in crate::signature) const SPEC: SchemeSpec = SchemeSpec {
    timestamped: true,
    ..SchemeSpec::plain("mailgun", |s, tolerance| {
        Ok(Box::new(Mailgun(Keys::new(
            s,
            tolerance,
            Algorithm::Sha256,
        ))))
    })
};

struct Mailgun(Keys);

impl Scheme for Mailgun {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    /// Mailgun signs inside the body: only the body can tell.
    fn signature_present(&self, _headers: &HeaderMap) -> bool {
        true
    }

    fn verify(
        &self,
        _headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
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
        self.0
            .any_candidate(&[ts.as_bytes(), token.as_bytes()], &candidates)?;
        self.0.fresh(t, now)
    }

    fn sign(
        &self,
        _body: &[u8],
        _now: SystemTime,
        _key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        Err(
            "mailgun signs inside the body (signature.timestamp, token, signature); sign it there"
                .into(),
        )
    }
}
