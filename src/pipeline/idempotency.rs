//! Idempotency key: the route's JSON pointers and headers, hashed into a fixed-size key scoped to
//! the route. Claiming it is the store's job, after every check passed.

use crate::config::KeyPart;
use crate::rejection::Rejection;
use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// A delivery's identity within its route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub route: Arc<str>,
    /// SHA-256 (truncated to 128 bits) over the route name and each length-prefixed key part,
    /// so `("a","bc")` and `("ab","c")` differ and huge values cost fixed space.
    pub id: u128,
}

impl DeliveryKey {
    pub fn hex(&self) -> String {
        format!("{:032x}", self.id)
    }
}

/// Builds the key, or `idempotency_key_missing` when a part is absent.
pub fn key(
    route: &Arc<str>,
    parts: &[KeyPart],
    headers: &HeaderMap,
    body: Option<&Value>,
) -> Result<DeliveryKey, Rejection> {
    let mut h = Sha256::new();
    let mut feed = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    feed(route.as_bytes());
    for part in parts {
        match part {
            KeyPart::Header(name) => {
                let v = headers.get(name).ok_or(Rejection::IdempotencyKeyMissing)?;
                feed(v.as_bytes());
            }
            KeyPart::Pointer(p) => match body.and_then(|b| b.pointer(p)) {
                None | Some(Value::Null) => return Err(Rejection::IdempotencyKeyMissing),
                Some(Value::String(s)) => feed(s.as_bytes()),
                Some(other) => feed(other.to_string().as_bytes()),
            },
        }
    }
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    Ok(DeliveryKey {
        route: route.clone(),
        id: u128::from_be_bytes(id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parts() -> Vec<KeyPart> {
        vec![
            KeyPart::Pointer("/event".into()),
            KeyPart::Pointer("/job_id".into()),
        ]
    }

    #[test]
    fn same_fields_same_key_scoped_by_route() {
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let body = json!({"event": "job.completed", "job_id": "j1", "other": 1});
        let same = json!({"other": 2, "job_id": "j1", "event": "job.completed"});
        let k1 = key(&a, &parts(), &HeaderMap::new(), Some(&body)).unwrap();
        assert_eq!(
            k1,
            key(&a, &parts(), &HeaderMap::new(), Some(&same)).unwrap()
        );
        assert_ne!(
            k1.id,
            key(&b, &parts(), &HeaderMap::new(), Some(&body))
                .unwrap()
                .id
        );
        let other = json!({"event": "job.failed", "job_id": "j1"});
        assert_ne!(
            k1,
            key(&a, &parts(), &HeaderMap::new(), Some(&other)).unwrap()
        );
    }

    #[test]
    fn concatenation_is_unambiguous() {
        let r: Arc<str> = Arc::from("r");
        let k = |e: &str, j: &str| {
            key(
                &r,
                &parts(),
                &HeaderMap::new(),
                Some(&json!({"event": e, "job_id": j})),
            )
            .unwrap()
        };
        assert_ne!(k("a", "bc"), k("ab", "c"));
    }

    #[test]
    fn missing_parts() {
        let r: Arc<str> = Arc::from("r");
        let hdr = vec![KeyPart::Header(http::HeaderName::from_static("webhook-id"))];
        assert_eq!(
            key(&r, &hdr, &HeaderMap::new(), None),
            Err(Rejection::IdempotencyKeyMissing)
        );
        let mut h = HeaderMap::new();
        h.insert("webhook-id", "msg_1".parse().unwrap());
        assert!(key(&r, &hdr, &h, None).is_ok());
        assert_eq!(
            key(&r, &parts(), &h, Some(&json!({"event": "x"}))),
            Err(Rejection::IdempotencyKeyMissing)
        );
    }
}
