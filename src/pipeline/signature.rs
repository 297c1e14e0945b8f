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
