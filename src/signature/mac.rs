//! Keyed HMAC state computed once per secret at config load, cloned per request.

use hmac::{Hmac, Mac};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }
}

/// One secret, already keyed: the inner/outer pads are hashed once, not per request.
#[derive(Clone)]
pub enum KeyedMac {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
}

impl KeyedMac {
    pub fn new(algorithm: Algorithm, key: &[u8]) -> Self {
        // HMAC accepts keys of any length, so these constructors cannot fail.
        match algorithm {
            Algorithm::Sha1 => Self::Sha1(
                <Hmac<sha1::Sha1> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!()),
            ),
            Algorithm::Sha256 => Self::Sha256(
                <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!()),
            ),
            Algorithm::Sha512 => Self::Sha512(
                <Hmac<sha2::Sha512> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!()),
            ),
        }
    }

    /// The MAC of the concatenation of `parts`.
    pub fn compute(&self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + Clone>(m: &M, parts: &[&[u8]]) -> Vec<u8> {
            let mut m = m.clone();
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Self::Sha1(m) => run(m, parts),
            Self::Sha256(m) => run(m, parts),
            Self::Sha512(m) => run(m, parts),
        }
    }

    /// Constant-time check of `expected` against the MAC of `parts`.
    pub fn verify(&self, parts: &[&[u8]], expected: &[u8]) -> bool {
        fn run<M: Mac + Clone>(m: &M, parts: &[&[u8]], expected: &[u8]) -> bool {
            let mut m = m.clone();
            for p in parts {
                m.update(p);
            }
            m.verify_slice(expected).is_ok()
        }
        match self {
            Self::Sha1(m) => run(m, parts, expected),
            Self::Sha256(m) => run(m, parts, expected),
            Self::Sha512(m) => run(m, parts, expected),
        }
    }
}

/// True when any of `keys` verifies. Every key is tried, so timing does not reveal which matched.
pub fn any_verifies(keys: &[KeyedMac], parts: &[&[u8]], expected: &[u8]) -> bool {
    keys.iter()
        .fold(false, |ok, k| k.verify(parts, expected) | ok)
}

/// The MAC of `parts` under each key, computed once, for schemes whose header may carry several
/// candidate signatures: each candidate is then compared in constant time, never re-hashed.
pub fn tags(keys: &[KeyedMac], parts: &[&[u8]]) -> Vec<Vec<u8>> {
    keys.iter().map(|k| k.compute(parts)).collect()
}

/// Constant-time: does `candidate` equal any of `tags`?
pub fn matches_any(tags: &[Vec<u8>], candidate: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    tags.iter().fold(false, |ok, t| {
        bool::from(t.as_slice().ct_eq(candidate)) | ok
    })
}
