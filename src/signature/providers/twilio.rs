//! Twilio: `X-Twilio-Signature: <base64>` HMAC-SHA1 of `{URL}` followed by every form
//! parameter's name and value, sorted by name (form-encoded bodies; `public_url`: the URL as the
//! sender saw it).

use super::Keys;
use crate::signature::mac::Algorithm;
use crate::signature::{header, Scheme, SchemeSpec, SignatureError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::HeaderMap;
use std::time::SystemTime;

pub(in crate::signature) const SPEC: SchemeSpec = SchemeSpec {
    signs_url: true,
    ..SchemeSpec::plain("twilio", |s, tolerance| {
        Ok(Box::new(Twilio {
            keys: Keys::new(s, tolerance, Algorithm::Sha1),
            url: s.public_url.unwrap_or_default().to_string(),
        }))
    })
};

struct Twilio {
    keys: Keys,
    url: String,
}

/// Twilio's signed content after the URL: each form parameter's name and value, sorted by name
/// (and by value for repeated names). A body that is not a form signs nothing more.
fn params(body: &[u8]) -> Vec<u8> {
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

impl Scheme for Twilio {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key("x-twilio-signature")
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        _now: SystemTime,
    ) -> Result<(), SignatureError> {
        let value = header(headers, "x-twilio-signature").ok_or(SignatureError::Missing)?;
        let sig = B64
            .decode(value.trim_ascii())
            .map_err(|_| SignatureError::Invalid)?;
        self.keys
            .any_candidate(&[self.url.as_bytes(), &params(body)], &[sig])
    }

    fn sign(
        &self,
        body: &[u8],
        _now: SystemTime,
        _key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let sig = self
            .keys
            .first()?
            .compute(&[self.url.as_bytes(), &params(body)]);
        Ok(vec![("X-Twilio-Signature".into(), B64.encode(sig))])
    }
}
