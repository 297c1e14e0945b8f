//! Presets signed with a private key the provider keeps, verified with its public key:
//! Discord interactions (Ed25519) and SendGrid's event webhook (ECDSA P-256).

use super::{header, Handshake, Scheme, SchemeSpec, SettingError, SignatureError};
use aws_lc_rs::digest::{Context, Digest, SHA256};
use aws_lc_rs::signature::{
    EcdsaKeyPair, ParsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use http::HeaderMap;
use std::time::SystemTime;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub(super) const DISCORD: SchemeSpec = SchemeSpec {
    has_handshake: true,
    ..SchemeSpec::plain("discord", |s, _| {
        Ok(Box::new(Discord::new(s.secrets, s.handshake)?))
    })
};

pub(super) const SENDGRID: SchemeSpec =
    SchemeSpec::plain("sendgrid", |s, _| Ok(Box::new(SendGrid::new(s.secrets)?)));

/// Discord: `X-Signature-Ed25519` (hex) over `{X-Signature-Timestamp}{body}`; the secrets are the
/// application's public keys (hex). With `handshake`, a PING (`{"type":1}`) is answered PONG.
pub struct Discord {
    keys: Vec<VerifyingKey>,
    handshake: bool,
}

impl Discord {
    pub fn new(secrets: &[String], handshake: bool) -> Result<Self, Vec<SettingError>> {
        let mut keys = Vec::new();
        let mut errors = Vec::new();
        for (i, s) in secrets.iter().enumerate() {
            let key = hex::decode(s.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .and_then(|b| VerifyingKey::from_bytes(&b).ok());
            match key {
                Some(k) => keys.push(k),
                None => errors.push(SettingError::new(
                    format!("secrets[{i}]"),
                    "a Discord public key is 64 hex characters (the application's PUBLIC KEY)",
                )),
            }
        }
        if errors.is_empty() {
            Ok(Self { keys, handshake })
        } else {
            Err(errors)
        }
    }
}

impl Scheme for Discord {
    fn name(&self) -> &'static str {
        "discord"
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key("x-signature-ed25519") && headers.contains_key("x-signature-timestamp")
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        _now: SystemTime,
    ) -> Result<(), SignatureError> {
        let sig = header(headers, "x-signature-ed25519").ok_or(SignatureError::Missing)?;
        let ts = header(headers, "x-signature-timestamp").ok_or(SignatureError::Missing)?;
        let sig = hex::decode(sig.trim_ascii())
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or(SignatureError::Invalid)?;
        let mut message = Vec::with_capacity(ts.len() + body.len());
        message.extend_from_slice(ts);
        message.extend_from_slice(body);
        let ok = self
            .keys
            .iter()
            .fold(false, |ok, k| k.verify(&message, &sig).is_ok() | ok);
        if ok {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }

    fn sign(
        &self,
        body: &[u8],
        now: SystemTime,
        signing_key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let seed = signing_key
            .and_then(|k| hex::decode(k.trim()).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or("discord signs with the application's private key: pass --key <64 hex characters of the Ed25519 seed>")?;
        let key = SigningKey::from_bytes(&seed);
        let ts = super::unix_seconds(now).to_string();
        let mut message = ts.clone().into_bytes();
        message.extend_from_slice(body);
        Ok(vec![
            (
                "X-Signature-Ed25519".into(),
                hex::encode(key.sign(&message).to_bytes()),
            ),
            ("X-Signature-Timestamp".into(), ts),
        ])
    }

    fn handshake(&self, _headers: &HeaderMap, body: &[u8]) -> Option<Handshake> {
        if !self.handshake {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        (v.get("type")?.as_i64()? == 1).then(|| Handshake::json(serde_json::json!({ "type": 1 })))
    }
}

/// SendGrid event webhook: `X-Twilio-Email-Event-Webhook-Signature` (base64 DER ECDSA, SHA-256)
/// over `{X-Twilio-Email-Event-Webhook-Timestamp}{body}`; the secrets are the verification keys
/// SendGrid shows (base64 of the DER public key).
pub struct SendGrid {
    keys: Vec<ParsedPublicKey>,
}

const SENDGRID_SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
const SENDGRID_TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";

impl SendGrid {
    pub fn new(secrets: &[String]) -> Result<Self, Vec<SettingError>> {
        let mut keys = Vec::new();
        let mut errors = Vec::new();
        for (i, s) in secrets.iter().enumerate() {
            let key = B64
                .decode(s.trim())
                .ok()
                .and_then(|der| ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, der).ok());
            match key {
                Some(k) => keys.push(k),
                None => errors.push(SettingError::new(
                    format!("secrets[{i}]"),
                    "a SendGrid verification key is the base64 of an ECDSA public key (DER)",
                )),
            }
        }
        if errors.is_empty() {
            Ok(Self { keys })
        } else {
            Err(errors)
        }
    }
}

impl Scheme for SendGrid {
    fn name(&self) -> &'static str {
        "sendgrid"
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key(SENDGRID_SIGNATURE) && headers.contains_key(SENDGRID_TIMESTAMP)
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        _now: SystemTime,
    ) -> Result<(), SignatureError> {
        let sig = header(headers, SENDGRID_SIGNATURE).ok_or(SignatureError::Missing)?;
        let ts = header(headers, SENDGRID_TIMESTAMP).ok_or(SignatureError::Missing)?;
        let sig = B64
            .decode(sig.trim_ascii())
            .map_err(|_| SignatureError::Invalid)?;
        let digest = sendgrid_digest(ts, body);
        let ok = self.keys.iter().fold(false, |ok, key| {
            key.verify_digest_sig(&digest, &sig).is_ok() | ok
        });
        if ok {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }

    fn sign(
        &self,
        body: &[u8],
        now: SystemTime,
        signing_key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let key = signing_key
            .and_then(|k| B64.decode(k.trim()).ok())
            .and_then(|der| EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der).ok())
            .ok_or("sendgrid signs with an ECDSA P-256 private key: pass --key <base64 of the DER (PKCS#8) private key>")?;
        let ts = super::unix_seconds(now).to_string();
        let sig = key
            .sign_digest(&sendgrid_digest(ts.as_bytes(), body))
            .map_err(|_| "signing failed".to_string())?;
        Ok(vec![
            (
                "X-Twilio-Email-Event-Webhook-Signature".into(),
                B64.encode(sig.as_ref()),
            ),
            ("X-Twilio-Email-Event-Webhook-Timestamp".into(), ts),
        ])
    }
}

/// SHA-256 of what SendGrid signs, without copying the body next to the timestamp.
fn sendgrid_digest(timestamp: &[u8], body: &[u8]) -> Digest {
    let mut digest = Context::new(&SHA256);
    digest.update(timestamp);
    digest.update(body);
    digest.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair;

    #[test]
    fn discord_verifies_its_own_signature_and_answers_ping() {
        let seed = [7u8; 32];
        let public = hex::encode(SigningKey::from_bytes(&seed).verifying_key().to_bytes());
        let d = Discord::new(&[public], true).unwrap();
        let body = br#"{"type":1}"#;
        let now = SystemTime::now();
        let signed = d.sign(body, now, Some(&hex::encode(seed))).unwrap();
        let mut h = HeaderMap::new();
        for (n, v) in &signed {
            h.insert(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        assert_eq!(d.verify(&h, body, now), Ok(()));
        assert_eq!(
            d.verify(&h, br#"{"type":2}"#, now),
            Err(SignatureError::Invalid)
        );
        let pong = d.handshake(&h, body).unwrap();
        assert_eq!(pong.body, br#"{"type":1}"#);
        assert!(d.handshake(&h, br#"{"type":2}"#).is_none());
    }

    #[test]
    fn sendgrid_verifies_its_own_signature_and_refuses_another_body() {
        let private = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let public = B64.encode(private.public_key().as_der().unwrap().as_ref());
        let s = SendGrid::new(&[public]).unwrap();
        let body = br#"[{"event":"delivered"}]"#;
        let now = SystemTime::now();
        let key = B64.encode(private.to_pkcs8v1().unwrap().as_ref());
        let signed = s.sign(body, now, Some(&key)).unwrap();
        let mut h = HeaderMap::new();
        for (n, v) in &signed {
            h.insert(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        assert_eq!(s.verify(&h, body, now), Ok(()));
        assert_eq!(
            s.verify(&h, br#"[{"event":"bounce"}]"#, now),
            Err(SignatureError::Invalid)
        );
    }
}
