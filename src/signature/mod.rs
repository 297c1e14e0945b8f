//! Signature schemes (PRODUCT.md §4): one verifier interface, [`Scheme`], and one list of the
//! names a config can give (`name.rs`), each with its [`SchemeSpec`]: the settings it takes and
//! how its verifier is built. A file holds a scheme or a family of them: Stripe, Slack and
//! Standard Webhooks (with Svix) their own; body HMACs (ImgGo, GitHub, Shopify, the generic
//! `hmac`, and the fixed presets) in `body_hmac.rs`; the public-key presets in `asymmetric.rs`;
//! the presets with a layout of their provider's own one file each in `providers/`. Adding a
//! provider is its file (a type implementing `Scheme` and its spec) and one line in `name.rs`.

mod asymmetric;
mod body_hmac;
pub mod mac;
mod name;
mod providers;
mod slack;
mod standard;
mod stripe;

use http::HeaderMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use name::{SchemeName, SchemeSpec};

/// Why a delivery's signature was refused; each maps to a §3 code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing")]
    Missing,
    #[error("the signature does not verify")]
    Invalid,
    #[error("the signed timestamp is outside the accepted tolerance")]
    OutOfTolerance,
}

/// The gateway's own answer to a provider's verification request (PRODUCT.md §4 `handshake`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Handshake {
    pub fn json(value: serde_json::Value) -> Self {
        Self {
            content_type: "application/json",
            body: serde_json::to_vec(&value).unwrap_or_default(),
        }
    }

    pub fn text(text: &str) -> Self {
        Self {
            content_type: "text/plain",
            body: text.as_bytes().to_vec(),
        }
    }
}

/// A signature scheme configured with a route's secrets.
pub trait Scheme: Send + Sync {
    /// The scheme's config name, e.g. `stripe`.
    fn name(&self) -> &'static str;

    /// Whether the head carries the headers this scheme signs with: decided before any body byte
    /// is read, so a sender that signs nothing is not made to upload.
    fn signature_present(&self, headers: &HeaderMap) -> bool;

    /// Checks the delivery's signature over the raw `body`, against the time it was received.
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError>;

    /// With `handshake: true`, the answer to a provider's verification request, when this
    /// (already verified) delivery is one; it is answered at the gateway and never forwarded.
    fn handshake(&self, _headers: &HeaderMap, _body: &[u8]) -> Option<Handshake> {
        None
    }

    /// The header lines a sender would attach to `body` at `now`, from the first secret
    /// (or from `signing_key` where the scheme signs with a private key).
    fn sign(
        &self,
        body: &[u8],
        now: SystemTime,
        signing_key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String>;
}

/// Raw settings a scheme is built from (already env-expanded).
pub struct SchemeSettings<'a> {
    pub scheme: SchemeName,
    pub secrets: &'a [String],
    pub header: Option<&'a str>,
    pub algorithm: Option<&'a str>,
    pub encoding: Option<&'a str>,
    pub prefix: Option<&'a str>,
    pub tolerance: Option<Duration>,
    /// The URL the sender delivers to, as it sees it (schemes that sign it: square, twilio).
    pub public_url: Option<&'a str>,
    /// Answer the provider's verification request at the gateway.
    pub handshake: bool,
}

/// A problem with one signature setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SettingError {
    /// The field below `signature`, e.g. `secrets[1]`.
    pub field: String,
    pub message: String,
}

impl SettingError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// More candidate signatures than this in one header is hostile, not rotation.
pub(crate) const MAX_SIGNATURES: usize = 16;

/// Builds the scheme named in `s`, reporting every misfit setting.
pub fn build(s: &SchemeSettings<'_>) -> Result<Box<dyn Scheme>, Vec<SettingError>> {
    let name = s.scheme;
    let mut errors = Vec::new();
    if s.secrets.is_empty() {
        errors.push(SettingError::new(
            "secrets",
            "at least one secret is required",
        ));
    }
    for (i, secret) in s.secrets.iter().enumerate() {
        if secret.is_empty() {
            errors.push(SettingError::new(
                format!("secrets[{i}]"),
                "secret is empty",
            ));
        }
    }
    if s.handshake && !name.has_handshake() {
        let takes: Vec<_> = SchemeName::all()
            .filter(|n| n.has_handshake())
            .map(SchemeName::as_str)
            .collect();
        errors.push(SettingError::new(
            "handshake",
            format!(
                "scheme {name} sends no verification request; handshake is for {}",
                takes.join(", ")
            ),
        ));
    }
    match (name.signs_url(), s.public_url) {
        (true, None) => errors.push(SettingError::new(
            "public_url",
            format!(
                "scheme {name} signs the URL it delivers to: set public_url to it (e.g. https://hooks.example.com/webhooks/{name})"
            ),
        )),
        (false, Some(_)) => errors.push(SettingError::new(
            "public_url",
            format!("scheme {name} does not sign the URL"),
        )),
        _ => {}
    }
    if !name.takes_algorithm() {
        for (field, set) in [
            ("algorithm", s.algorithm.is_some()),
            ("encoding", s.encoding.is_some()),
            ("prefix", s.prefix.is_some()),
        ] {
            if set {
                errors.push(SettingError::new(
                    field,
                    format!("not a setting of scheme {name}"),
                ));
            }
        }
    }
    if !name.takes_header() && s.header.is_some() {
        errors.push(SettingError::new(
            "header",
            format!("not a setting of scheme {name}"),
        ));
    }
    if !name.timestamped() && s.tolerance.is_some() {
        errors.push(SettingError::new(
            "tolerance",
            format!("scheme {name} signs no timestamp"),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    (name.spec().build)(s, s.tolerance.unwrap_or(DEFAULT_TOLERANCE))
}

/// The first value of a header as bytes; `None` when absent.
pub(crate) fn header(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&[u8]> {
    headers.get(name).map(|v| v.as_bytes())
}

/// Parses a decimal Unix timestamp in seconds; anything else is not a timestamp.
pub(crate) fn parse_timestamp(raw: &[u8]) -> Option<i64> {
    if raw.is_empty() || raw.len() > 12 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// True when `ts` (Unix seconds) lies within `tolerance` of `now`, in either direction.
pub(crate) fn within_tolerance(ts: i64, now: SystemTime, tolerance: Duration) -> bool {
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(_) => return false,
    };
    now.abs_diff(ts) <= tolerance.as_secs()
}

pub(crate) fn unix_seconds(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misplaced_settings_are_reported_by_field() {
        let errs = build(&SchemeSettings {
            scheme: SchemeName::parse("imggo").unwrap(),
            secrets: &[],
            header: None,
            algorithm: Some("sha1"),
            encoding: None,
            prefix: None,
            tolerance: Some(Duration::from_secs(1)),
            public_url: None,
            handshake: false,
        })
        .err()
        .unwrap();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["secrets", "algorithm", "tolerance"]);
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp(b"1700000000"), Some(1_700_000_000));
        assert_eq!(parse_timestamp(b"-1"), None);
        assert_eq!(parse_timestamp(b"17e8"), None);
        assert_eq!(parse_timestamp(b""), None);
        assert_eq!(parse_timestamp(&[b'9'; 40]), None);
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let tol = Duration::from_secs(300);
        assert!(within_tolerance(700, now, tol));
        assert!(within_tolerance(1300, now, tol));
        assert!(!within_tolerance(699, now, tol));
        assert!(!within_tolerance(1301, now, tol));
    }
}
