//! Parse: the body as JSON, only where a later step needs it. serde_json's recursion limit
//! refuses absurd nesting instead of overflowing the stack.

use crate::rejection::Rejection;
use serde_json::Value;

pub fn parse(body: &[u8]) -> Result<Value, Rejection> {
    serde_json::from_slice(body).map_err(|_| Rejection::InvalidJson)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_or_invalid() {
        assert!(parse(br#"{"a":1}"#).is_ok());
        assert_eq!(parse(b"not json"), Err(Rejection::InvalidJson));
        assert_eq!(parse(b""), Err(Rejection::InvalidJson));
        assert_eq!(parse(&[0xff, 0xfe]), Err(Rejection::InvalidJson));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(parse(deep.as_bytes()), Err(Rejection::InvalidJson));
    }
}
