//! Signature: the route's scheme over the raw body, against the time the request arrived.

use crate::rejection::Rejection;
use crate::signature::Scheme;
use http::HeaderMap;
use std::time::SystemTime;

pub fn check(
    scheme: Option<&dyn Scheme>,
    headers: &HeaderMap,
    body: &[u8],
    received_at: SystemTime,
) -> Result<(), Rejection> {
    match scheme {
        Some(s) => s
            .verify(headers, body, received_at)
            .map_err(Rejection::Signature),
        None => Ok(()),
    }
}

/// Refuses a head that carries none of the scheme's signature headers, before the body is read.
pub fn check_present(scheme: Option<&dyn Scheme>, headers: &HeaderMap) -> Result<(), Rejection> {
    match scheme {
        Some(s) if !s.signature_present(headers) => Err(Rejection::Signature(
            crate::signature::SignatureError::Missing,
        )),
        _ => Ok(()),
    }
}
