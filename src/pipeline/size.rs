//! Size: a body over `max_body` is refused as soon as it is known, by Content-Length before any
//! read, or by counting bytes as a chunked body arrives.

use crate::rejection::Rejection;
use http::HeaderMap;

/// Refuses a declared Content-Length over `max`.
pub fn check_declared(headers: &HeaderMap, max: usize) -> Result<(), Rejection> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > max as u64 => Err(Rejection::PayloadTooLarge),
        _ => Ok(()),
    }
}

/// Refuses once `received` bytes exceed `max`.
pub fn check_received(received: usize, max: usize) -> Result<(), Rejection> {
    if received > max {
        Err(Rejection::PayloadTooLarge)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_and_counted() {
        let mut h = HeaderMap::new();
        assert_eq!(check_declared(&h, 10), Ok(()));
        h.insert("content-length", "10".parse().unwrap());
        assert_eq!(check_declared(&h, 10), Ok(()));
        h.insert("content-length", "11".parse().unwrap());
        assert_eq!(check_declared(&h, 10), Err(Rejection::PayloadTooLarge));
        assert_eq!(check_received(10, 10), Ok(()));
        assert_eq!(check_received(11, 10), Err(Rejection::PayloadTooLarge));
    }
}
