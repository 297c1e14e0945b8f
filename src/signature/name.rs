//! The schemes a route can name (PRODUCT.md §4). Each scheme's file declares its [`SchemeSpec`]
//! (its name, the settings it takes, how its verifier is built) and [`SCHEMES`] lists them: the
//! config, the verifiers and `hookgate check`'s messages are built from this one list. Adding a
//! provider is its file and one line below.

use super::{asymmetric, body_hmac, providers, slack, standard, stripe};
use super::{Scheme, SchemeSettings, SettingError};
use std::time::Duration;

/// Builds a scheme's verifier from its settings (already checked against its spec), with the
/// route's `tolerance` or the default one.
pub type Build = fn(&SchemeSettings<'_>, Duration) -> Result<Box<dyn Scheme>, Vec<SettingError>>;

/// What a scheme name stands for.
pub struct SchemeSpec {
    /// The name as written in a config.
    pub name: &'static str,
    /// `header` may name the signature header.
    pub takes_header: bool,
    /// `algorithm`, `encoding` and `prefix` are its settings (the generic `hmac`).
    pub takes_algorithm: bool,
    /// It signs a timestamp checked against `tolerance`.
    pub timestamped: bool,
    /// The provider sends a verification request the gateway can answer (`handshake`).
    pub has_handshake: bool,
    /// It signs the URL it delivers to (`public_url` is required).
    pub signs_url: bool,
    pub build: Build,
}

impl SchemeSpec {
    /// A scheme that takes none of the optional settings; the others say what they add to it.
    pub const fn plain(name: &'static str, build: Build) -> Self {
        Self {
            name,
            takes_header: false,
            takes_algorithm: false,
            timestamped: false,
            has_handshake: false,
            signs_url: false,
            build,
        }
    }
}

/// Every scheme, in the order `check` lists them.
static SCHEMES: [&SchemeSpec; 23] = [
    &body_hmac::IMGGO,
    &body_hmac::HMAC,
    &body_hmac::GITHUB,
    &body_hmac::SHOPIFY,
    &stripe::SPEC,
    &slack::SPEC,
    &standard::STANDARD_WEBHOOKS,
    &standard::SVIX,
    &providers::twilio::SPEC,
    &asymmetric::DISCORD,
    &asymmetric::SENDGRID,
    &providers::paddle::SPEC,
    &providers::square::SPEC,
    &providers::pagerduty::SPEC,
    &providers::linear::SPEC,
    &providers::gitlab::SPEC,
    &providers::zoom::SPEC,
    &providers::mailgun::SPEC,
    &body_hmac::INTERCOM,
    &body_hmac::TYPEFORM,
    &providers::calendly::SPEC,
    &body_hmac::TERRAFORM,
    &providers::twitch::SPEC,
];

/// A scheme a config named.
#[derive(Clone, Copy)]
pub struct SchemeName(&'static SchemeSpec);

impl SchemeName {
    pub fn all() -> impl Iterator<Item = SchemeName> {
        SCHEMES.iter().map(|spec| SchemeName(spec))
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::all().find(|s| s.as_str() == name)
    }

    /// The name as written in a config.
    pub fn as_str(self) -> &'static str {
        self.0.name
    }

    pub fn spec(self) -> &'static SchemeSpec {
        self.0
    }

    /// Whether the scheme signs a timestamp checked against `tolerance`.
    pub fn timestamped(self) -> bool {
        self.0.timestamped
    }

    /// Whether `header` may name the signature header.
    pub fn takes_header(self) -> bool {
        self.0.takes_header
    }

    /// Whether `algorithm`, `encoding` and `prefix` are settings of the scheme.
    pub fn takes_algorithm(self) -> bool {
        self.0.takes_algorithm
    }

    /// Whether the provider sends a verification request the gateway can answer (`handshake`).
    pub fn has_handshake(self) -> bool {
        self.0.has_handshake
    }

    /// Whether the scheme signs the URL it delivers to (`public_url` is required).
    pub fn signs_url(self) -> bool {
        self.0.signs_url
    }
}

impl PartialEq for SchemeName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SchemeName {}

impl std::fmt::Debug for SchemeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for SchemeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::build;

    #[test]
    fn every_name_parses_back_to_itself_once() {
        let names: Vec<&str> = SchemeName::all().map(SchemeName::as_str).collect();
        assert_eq!(names.len(), 23);
        for name in SchemeName::all() {
            assert_eq!(SchemeName::parse(name.as_str()), Some(name));
            assert_eq!(name.to_string(), name.as_str());
            let same = names.iter().filter(|n| **n == name.as_str()).count();
            assert_eq!(same, 1, "{name} is listed twice");
        }
        assert_eq!(SchemeName::parse("md5"), None);
        assert_eq!(SchemeName::parse("Stripe"), None);
    }

    /// Each spec builds a verifier that answers to the spec's name.
    #[test]
    fn every_scheme_builds_a_verifier_of_its_own_name() {
        let keys = test_secrets();
        for name in SchemeName::all() {
            let secrets = [keys(name.as_str())];
            let scheme = build(&SchemeSettings {
                scheme: name,
                secrets: &secrets,
                header: name.takes_algorithm().then_some("X-Signature"),
                algorithm: None,
                encoding: None,
                prefix: None,
                tolerance: None,
                public_url: name.signs_url().then_some("https://hooks.example.com/w"),
                handshake: false,
            })
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(scheme.name(), name.as_str());
        }
    }

    /// A secret each scheme accepts: most take any string, the public-key ones a key.
    fn test_secrets() -> impl Fn(&str) -> String {
        |name| match name {
            "standard-webhooks" | "svix" => "whsec_c2VjcmV0".into(),
            "discord" => hex::encode(
                ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                    .verifying_key()
                    .to_bytes(),
            ),
            "sendgrid" => {
                use aws_lc_rs::encoding::AsDer;
                use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
                use base64::Engine;
                let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
                base64::engine::general_purpose::STANDARD
                    .encode(key.public_key().as_der().unwrap().as_ref())
            }
            _ => "a-secret".into(),
        }
    }
}
