//! HTTP framing the parser lets through but PRODUCT.md §3 refuses as malformed (400, then the
//! connection is closed): HTTP/1.1 without Host, both Content-Length and Transfer-Encoding (the
//! classic smuggling shape; RFC 9112 §6.3 lets a server reject it and requires it to close), and
//! a head larger than `MAX_HEAD`.

use crate::rejection::Rejection;
use http::{HeaderMap, Version};

/// The largest request head accepted (request line and headers), like Envoy's 60 KiB default;
/// webhook senders send a few hundred bytes.
pub const MAX_HEAD: usize = 64 * 1024;

pub fn check(
    version: Version,
    target_len: usize,
    headers: &HeaderMap,
    http2: bool,
) -> Result<(), Rejection> {
    if http2 {
        return Ok(());
    }
    if version == Version::HTTP_11 && !headers.contains_key(http::header::HOST) {
        return Err(Rejection::BadRequest);
    }
    if headers.contains_key(http::header::CONTENT_LENGTH)
        && headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        return Err(Rejection::BadRequest);
    }
    let size = headers.iter().fold(target_len, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 4
    });
    if size > MAX_HEAD {
        return Err(Rejection::BadRequest);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn malformed_shapes() {
        let ok = headers(&[("host", "x"), ("content-length", "2")]);
        assert_eq!(check(Version::HTTP_11, 10, &ok, false), Ok(()));
        let no_host = headers(&[("content-length", "2")]);
        assert_eq!(
            check(Version::HTTP_11, 10, &no_host, false),
            Err(Rejection::BadRequest)
        );
        assert_eq!(check(Version::HTTP_10, 10, &no_host, false), Ok(()));
        let both = headers(&[
            ("host", "x"),
            ("content-length", "4"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(
            check(Version::HTTP_11, 10, &both, false),
            Err(Rejection::BadRequest)
        );
        let big = "a".repeat(MAX_HEAD);
        let huge = headers(&[("host", "x"), ("x-big", &big)]);
        assert_eq!(
            check(Version::HTTP_11, 10, &huge, false),
            Err(Rejection::BadRequest)
        );
        assert_eq!(check(Version::HTTP_2, 10, &no_host, true), Ok(()));
    }
}
