//! Square: `x-square-hmacsha256-signature: <base64>` HMAC-SHA256 of `{notification URL}{body}`
//! (`public_url`: the URL Square was given).

use super::Keys;
use crate::signature::mac::Algorithm;
use crate::signature::{header, Scheme, SchemeSpec, SignatureError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::HeaderMap;
use std::time::SystemTime;

pub(in crate::signature) const SPEC: SchemeSpec = SchemeSpec {
    signs_url: true,
    ..SchemeSpec::plain("square", |s, tolerance| {
        Ok(Box::new(Square {
            keys: Keys::new(s, tolerance, Algorithm::Sha256),
            url: s.public_url.unwrap_or_default().to_string(),
        }))
    })
};

struct Square {
    keys: Keys,
    url: String,
}

impl Scheme for Square {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key("x-square-hmacsha256-signature")
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        _now: SystemTime,
    ) -> Result<(), SignatureError> {
        let value =
            header(headers, "x-square-hmacsha256-signature").ok_or(SignatureError::Missing)?;
        let sig = B64
            .decode(value.trim_ascii())
            .map_err(|_| SignatureError::Invalid)?;
        self.keys
            .any_candidate(&[self.url.as_bytes(), body], &[sig])
    }

    fn sign(
        &self,
        body: &[u8],
        _now: SystemTime,
        _key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let sig = self.keys.first()?.compute(&[self.url.as_bytes(), body]);
        Ok(vec![(
            "x-square-hmacsha256-signature".into(),
            B64.encode(sig),
        )])
    }
}
