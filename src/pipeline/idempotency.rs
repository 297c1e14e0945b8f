//! Idempotency key: the route's JSON pointers and headers, hashed into a fixed-size key scoped to
//! the route (or its `scope`). Claiming it is the store's job, after every check passed.

use crate::config::{Idempotency, KeyPart};
use crate::rejection::Rejection;
use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Marks a key part that is not a JSON string. A string part is fed as its length and bytes, and
/// no string is this long, so `"42"` and `42` never hash alike while string parts keep the
/// encoding keys already stored were made with.
const NON_STRING: u64 = u64::MAX;

/// A delivery's identity within its scope, with how long a claim and a delivered key live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    /// The route's name, or the `idempotency.scope` routes share.
    pub scope: Arc<str>,
    /// SHA-256 (truncated to 128 bits) over the scope and each length-prefixed key part,
    /// so `("a","bc")` and `("ab","c")` differ and huge values cost fixed space.
    pub id: u128,
    /// A claim expires after this (crash safety).
    pub lease: Duration,
    /// A delivered key is remembered this long.
    pub ttl: Duration,
}

impl DeliveryKey {
    pub fn hex(&self) -> String {
        format!("{:032x}", self.id)
    }
}

/// Builds the key, or `idempotency_key_missing` when a part is absent.
pub fn key(
    settings: &Idempotency,
    headers: &HeaderMap,
    body: Option<&Value>,
) -> Result<DeliveryKey, Rejection> {
    let mut h = Sha256::new();
    let mut feed = |tag: Option<u64>, bytes: &[u8]| {
        if let Some(tag) = tag {
            h.update(tag.to_le_bytes());
        }
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    feed(None, settings.scope.as_bytes());
    for part in &settings.parts {
        match part {
            KeyPart::Header(name) => {
                let v = headers.get(name).ok_or(Rejection::IdempotencyKeyMissing)?;
                feed(None, v.as_bytes());
            }
            KeyPart::Pointer(p) => match body.and_then(|b| b.pointer(p)) {
                None | Some(Value::Null) => return Err(Rejection::IdempotencyKeyMissing),
                Some(Value::String(s)) => feed(None, s.as_bytes()),
                Some(other) => feed(Some(NON_STRING), other.to_string().as_bytes()),
            },
        }
    }
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    Ok(DeliveryKey {
        scope: settings.scope.clone(),
        id: u128::from_be_bytes(id),
        lease: settings.lease,
        ttl: settings.ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(scope: &str, parts: Vec<KeyPart>) -> Idempotency {
        Idempotency {
            parts,
            scope: Arc::from(scope),
            ttl: Duration::from_secs(60),
            lease: Duration::from_secs(30),
        }
    }

    fn parts() -> Vec<KeyPart> {
        vec![
            KeyPart::Pointer("/event".into()),
            KeyPart::Pointer("/job_id".into()),
        ]
    }

    #[test]
    fn key_parts_are_typed() {
        let s = settings("r", vec![KeyPart::Pointer("/id".into())]);
        let k = |v: Value| key(&s, &HeaderMap::new(), Some(&json!({ "id": v }))).unwrap();
        assert_ne!(k(json!("1795897348")), k(json!(1795897348)));
        assert_ne!(k(json!("true")), k(json!(true)));
        assert_eq!(k(json!(7)), k(json!(7)));
    }

    #[test]
    fn string_parts_keep_the_encoding_of_stored_keys() {
        // The 0.1 encoding: SHA-256 over length-prefixed scope and parts, first 16 bytes.
        let mut h = Sha256::new();
        for part in [&b"r"[..], b"job.completed", b"j1"] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let expected = u128::from_be_bytes(h.finalize()[..16].try_into().unwrap());
        let body = json!({"event": "job.completed", "job_id": "j1"});
        let k = key(&settings("r", parts()), &HeaderMap::new(), Some(&body)).unwrap();
        assert_eq!(k.id, expected);
    }

    #[test]
    fn same_fields_same_key_scoped_by_route() {
        let a = settings("a", parts());
        let b = settings("b", parts());
        let body = json!({"event": "job.completed", "job_id": "j1", "other": 1});
        let same = json!({"other": 2, "job_id": "j1", "event": "job.completed"});
        let k1 = key(&a, &HeaderMap::new(), Some(&body)).unwrap();
        assert_eq!(k1, key(&a, &HeaderMap::new(), Some(&same)).unwrap());
        assert_ne!(k1.id, key(&b, &HeaderMap::new(), Some(&body)).unwrap().id);
        let other = json!({"event": "job.failed", "job_id": "j1"});
        assert_ne!(k1, key(&a, &HeaderMap::new(), Some(&other)).unwrap());
    }

    #[test]
    fn concatenation_is_unambiguous() {
        let r = settings("r", parts());
        let k = |e: &str, j: &str| {
            key(
                &r,
                &HeaderMap::new(),
                Some(&json!({"event": e, "job_id": j})),
            )
            .unwrap()
        };
        assert_ne!(k("a", "bc"), k("ab", "c"));
    }

    #[test]
    fn missing_parts() {
        let hdr = settings(
            "r",
            vec![KeyPart::Header(http::HeaderName::from_static("webhook-id"))],
        );
        assert_eq!(
            key(&hdr, &HeaderMap::new(), None),
            Err(Rejection::IdempotencyKeyMissing)
        );
        let mut h = HeaderMap::new();
        h.insert("webhook-id", "msg_1".parse().unwrap());
        assert!(key(&hdr, &h, None).is_ok());
        assert_eq!(
            key(&settings("r", parts()), &h, Some(&json!({"event": "x"}))),
            Err(Rejection::IdempotencyKeyMissing)
        );
    }
}
