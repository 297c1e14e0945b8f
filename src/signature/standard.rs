//! Standard Webhooks (and Svix): `{id}.{ts}.{body}` signed as `v1,<b64 HMAC>` or `v1a,<b64 Ed25519>`.

use super::mac::{matches_any, tags, Algorithm, KeyedMac};
use super::{
    header, parse_timestamp, unix_seconds, within_tolerance, Scheme, SchemeSpec, SettingError,
    SignatureError, MAX_SIGNATURES,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use http::HeaderMap;
use std::time::{Duration, SystemTime};

pub(super) const STANDARD_WEBHOOKS: SchemeSpec = SchemeSpec {
    timestamped: true,
    ..SchemeSpec::plain("standard-webhooks", |s, tolerance| {
        Ok(Box::new(StandardWebhooks::new(
            s.secrets, tolerance, false,
        )?))
    })
};

/// Svix signs as Standard Webhooks does, under `svix-` header names.
pub(super) const SVIX: SchemeSpec = SchemeSpec {
    timestamped: true,
    ..SchemeSpec::plain("svix", |s, tolerance| {
        Ok(Box::new(StandardWebhooks::new(s.secrets, tolerance, true)?))
    })
};

pub struct StandardWebhooks {
    svix: bool,
    hmac_keys: Vec<KeyedMac>,
    public_keys: Vec<VerifyingKey>,
    tolerance: Duration,
}

impl StandardWebhooks {
    /// Secrets are `whsec_<base64 key>` (HMAC) or `whpk_<base64 32-byte Ed25519 public key>`.
    pub fn new(
        secrets: &[String],
        tolerance: Duration,
        svix: bool,
    ) -> Result<Self, Vec<SettingError>> {
        let mut errors = Vec::new();
        let mut hmac_keys = Vec::new();
        let mut public_keys = Vec::new();
        for (i, secret) in secrets.iter().enumerate() {
            let field = format!("secrets[{i}]");
            if let Some(b64) = secret.strip_prefix("whsec_") {
                match B64.decode(b64) {
                    Ok(key) if !key.is_empty() => {
                        hmac_keys.push(KeyedMac::new(Algorithm::Sha256, &key))
                    }
                    _ => errors.push(SettingError::new(
                        field,
                        "a whsec_ secret must be followed by base64",
                    )),
                }
            } else if let Some(b64) = secret.strip_prefix("whpk_") {
                let key = B64
                    .decode(b64)
                    .ok()
                    .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
                    .and_then(|k| VerifyingKey::from_bytes(&k).ok());
                match key {
                    Some(k) => public_keys.push(k),
                    None => errors.push(SettingError::new(
                        field,
                        "a whpk_ key must be the base64 of a 32-byte Ed25519 public key",
                    )),
                }
            } else {
                errors.push(SettingError::new(
                    field,
                    "expected whsec_<base64> (HMAC) or whpk_<base64> (Ed25519 public key)",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            svix,
            hmac_keys,
            public_keys,
            tolerance,
        })
    }

    /// `webhook-*` headers, or for Svix the `svix-*` ones when those are what arrived.
    fn parts<'h>(&self, headers: &'h HeaderMap) -> Option<(&'h [u8], &'h [u8], &'h [u8])> {
        let standard = (
            header(headers, "webhook-id"),
            header(headers, "webhook-timestamp"),
            header(headers, "webhook-signature"),
        );
        if let (Some(id), Some(ts), Some(sig)) = standard {
            return Some((id, ts, sig));
        }
        if self.svix {
            if let (Some(id), Some(ts), Some(sig)) = (
                header(headers, "svix-id"),
                header(headers, "svix-timestamp"),
                header(headers, "svix-signature"),
            ) {
                return Some((id, ts, sig));
            }
        }
        None
    }
}

impl Scheme for StandardWebhooks {
    fn name(&self) -> &'static str {
        if self.svix {
            "svix"
        } else {
            "standard-webhooks"
        }
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        self.parts(headers).is_some()
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let (id, raw_ts, signatures) = self.parts(headers).ok_or(SignatureError::Missing)?;
        let raw_ts = raw_ts.trim_ascii();
        let ts = parse_timestamp(raw_ts).ok_or(SignatureError::Invalid)?;
        let content: [&[u8]; 5] = [id, b".", raw_ts, b".", body];
        let mut hmac_tags = None;
        let mut signed_message = None;
        let mut verified = false;
        for (n, entry) in signatures
            .split(|&b| b == b' ')
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            if n == MAX_SIGNATURES {
                return Err(SignatureError::Invalid);
            }
            if let Some(b64) = entry.strip_prefix(b"v1,") {
                let Ok(candidate) = B64.decode(b64) else {
                    continue;
                };
                let tags = hmac_tags.get_or_insert_with(|| tags(&self.hmac_keys, &content));
                verified |= matches_any(tags, &candidate);
            } else if let Some(b64) = entry.strip_prefix(b"v1a,") {
                let Some(sig) = B64
                    .decode(b64)
                    .ok()
                    .and_then(|s| Signature::from_slice(&s).ok())
                else {
                    continue;
                };
                let message = signed_message.get_or_insert_with(|| content.concat());
                verified |= self
                    .public_keys
                    .iter()
                    .any(|k| k.verify(message, &sig).is_ok());
            }
        }
        if !verified {
            return Err(SignatureError::Invalid);
        }
        if !within_tolerance(ts, now, self.tolerance) {
            return Err(SignatureError::OutOfTolerance);
        }
        Ok(())
    }

    fn sign(
        &self,
        body: &[u8],
        now: SystemTime,
        signing_key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let ts = unix_seconds(now).to_string();
        let content: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", body];
        let signature = if let Some(key) = signing_key {
            let key = parse_signing_key(key)?;
            format!("v1a,{}", B64.encode(key.sign(&content.concat()).to_bytes()))
        } else if let Some(key) = self.hmac_keys.first() {
            format!("v1,{}", B64.encode(key.compute(&content)))
        } else {
            return Err(
                "this route verifies Ed25519 (whpk_) keys: pass --key whsk_<base64 private key>"
                    .into(),
            );
        };
        let prefix = if self.svix { "svix" } else { "webhook" };
        Ok(vec![
            (format!("{prefix}-id"), id),
            (format!("{prefix}-timestamp"), ts),
            (format!("{prefix}-signature"), signature),
        ])
    }
}

/// `whsk_` + base64 of the 32-byte Ed25519 seed, or of seed ‖ public key (64 bytes).
fn parse_signing_key(text: &str) -> Result<SigningKey, String> {
    let b64 = text
        .strip_prefix("whsk_")
        .ok_or("a signing key starts with whsk_")?;
    let bytes = B64.decode(b64).map_err(|_| "the whsk_ key is not base64")?;
    match bytes.len() {
        32 => Ok(SigningKey::from_bytes(
            &bytes.try_into().map_err(|_| "bad key length")?,
        )),
        64 => SigningKey::from_keypair_bytes(&bytes.try_into().map_err(|_| "bad key length")?)
            .map_err(|_| "the whsk_ key's public half does not match its seed".into()),
        n => Err(format!("a whsk_ key holds 32 or 64 bytes, not {n}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    // The Standard Webhooks / Svix published test vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: u64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(prefix: &str, id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [("id", id), ("timestamp", ts), ("signature", sig)] {
            h.insert(
                http::HeaderName::from_bytes(format!("{prefix}-{k}").as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn published_vector_and_tolerance() {
        let s = StandardWebhooks::new(&[SECRET.into()], Duration::from_secs(300), false).unwrap();
        let h = headers("webhook", ID, &TS.to_string(), SIG);
        assert_eq!(s.verify(&h, BODY, at(TS)), Ok(()));
        assert_eq!(s.verify(&h, b"{}", at(TS)), Err(SignatureError::Invalid));
        assert_eq!(
            s.verify(&h, BODY, at(TS + 301)),
            Err(SignatureError::OutOfTolerance)
        );
        assert_eq!(
            s.verify(&h, BODY, at(TS - 301)),
            Err(SignatureError::OutOfTolerance)
        );
        let several = format!("v1,Zm9v v2,abc {SIG}");
        assert_eq!(
            s.verify(
                &headers("webhook", ID, &TS.to_string(), &several),
                BODY,
                at(TS)
            ),
            Ok(())
        );
        // svix- headers are only understood by the svix scheme.
        let svix_headers = headers("svix", ID, &TS.to_string(), SIG);
        assert_eq!(
            s.verify(&svix_headers, BODY, at(TS)),
            Err(SignatureError::Missing)
        );
        let svix = StandardWebhooks::new(&[SECRET.into()], Duration::from_secs(300), true).unwrap();
        assert_eq!(svix.verify(&svix_headers, BODY, at(TS)), Ok(()));
    }

    #[test]
    fn ed25519_and_mixed_keys() {
        let signing = SigningKey::from_bytes(&[7u8; 32]);
        let whpk = format!("whpk_{}", B64.encode(signing.verifying_key().to_bytes()));
        let whsk = format!("whsk_{}", B64.encode(signing.to_bytes()));
        let s =
            StandardWebhooks::new(&[SECRET.into(), whpk], Duration::from_secs(300), false).unwrap();
        let now = at(TS);
        let signed = s.sign(BODY, now, Some(&whsk)).unwrap();
        assert!(signed[2].1.starts_with("v1a,"));
        let h = headers("webhook", &signed[0].1, &signed[1].1, &signed[2].1);
        assert_eq!(s.verify(&h, BODY, now), Ok(()));
        assert_eq!(s.verify(&h, b"tampered", now), Err(SignatureError::Invalid));
        // The independent check: ed25519-dalek's own verify over the documented content.
        let sig = Signature::from_slice(&B64.decode(&signed[2].1[4..]).unwrap()).unwrap();
        let content = format!("{}.{}.", signed[0].1, signed[1].1);
        let msg = [content.as_bytes(), BODY].concat();
        assert!(signing.verifying_key().verify(&msg, &sig).is_ok());
    }

    #[test]
    fn bad_secrets_and_hostile_headers() {
        assert!(StandardWebhooks::new(&["plain".into()], Duration::from_secs(1), false).is_err());
        assert!(
            StandardWebhooks::new(&["whpk_AAAA".into()], Duration::from_secs(1), false).is_err()
        );
        let s = StandardWebhooks::new(&[SECRET.into()], Duration::from_secs(300), false).unwrap();
        let many = "v1,AAAA ".repeat(1000);
        for sig in ["", "v1,", "v1a,zz", "v1,!!!", many.as_str()] {
            let h = headers("webhook", ID, &TS.to_string(), sig);
            assert_eq!(
                s.verify(&h, BODY, at(TS)),
                Err(SignatureError::Invalid),
                "{sig:.20}"
            );
        }
        let h = headers("webhook", ID, "soon", SIG);
        assert_eq!(s.verify(&h, BODY, at(TS)), Err(SignatureError::Invalid));
    }
}
