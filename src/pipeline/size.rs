//! Size: a body over `max_body` is refused as soon as it is known, by Content-Length before any
//! read, or by counting bytes as a chunked body arrives.

use crate::rejection::Rejection;
use http::HeaderMap;

/// The declared Content-Length, read as Pingora's parser reads it: a comma-separated list of
/// one repeated value (`2000000, 2000000`) is that value; anything else is no length.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut found = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        for item in value.to_str().ok()?.split(',') {
            let n = item.trim().parse::<u64>().ok()?;
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    found
}

/// Refuses a declared Content-Length over `max`.
pub fn check_declared(headers: &HeaderMap, max: usize) -> Result<(), Rejection> {
    match declared_length(headers) {
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

    #[test]
    fn a_repeated_length_is_read_as_one() {
        let mut h = HeaderMap::new();
        h.insert("content-length", "2000000, 2000000".parse().unwrap());
        assert_eq!(declared_length(&h), Some(2_000_000));
        assert_eq!(check_declared(&h, 1000), Err(Rejection::PayloadTooLarge));
        h.insert("content-length", "5, 6".parse().unwrap());
        assert_eq!(declared_length(&h), None);
    }
}
