//! GitLab: `X-Gitlab-Token` equal to the secret, compared in constant time.

use super::Keys;
use crate::signature::mac::Algorithm;
use crate::signature::{header, Scheme, SchemeSpec, SignatureError};
use http::HeaderMap;
use std::time::SystemTime;
use subtle::ConstantTimeEq;

pub(in crate::signature) const SPEC: SchemeSpec = SchemeSpec::plain("gitlab", |s, tolerance| {
    Ok(Box::new(GitLab(Keys::new(s, tolerance, Algorithm::Sha256))))
});

struct GitLab(Keys);

impl Scheme for GitLab {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key("x-gitlab-token")
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        _body: &[u8],
        _now: SystemTime,
    ) -> Result<(), SignatureError> {
        let token = header(headers, "x-gitlab-token").ok_or(SignatureError::Missing)?;
        let ok = self
            .0
            .secrets()
            .iter()
            .fold(false, |ok, s| bool::from(s.as_slice().ct_eq(token)) | ok);
        if ok {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }

    fn sign(
        &self,
        _body: &[u8],
        _now: SystemTime,
        _key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let token = self.0.secrets().first().ok_or("no secret")?;
        Ok(vec![(
            "X-Gitlab-Token".into(),
            String::from_utf8_lossy(token).into_owned(),
        )])
    }
}
