//! HMAC over the raw body in one header: `imggo`, `github`, `shopify`, the generic `hmac`, and the
//! `intercom`, `typeform` and `terraform` presets.

use super::mac::{any_verifies, Algorithm, KeyedMac};
use super::{header, Scheme, SchemeSettings, SchemeSpec, SettingError, SignatureError};
use base64::Engine;
use http::{HeaderMap, HeaderName};
use std::time::SystemTime;

pub(super) const IMGGO: SchemeSpec = SchemeSpec {
    takes_header: true,
    ..SchemeSpec::plain("imggo", |s, _| boxed(BodyHmac::imggo(s.header, s.secrets)))
};

pub(super) const GITHUB: SchemeSpec = SchemeSpec {
    takes_header: true,
    ..SchemeSpec::plain("github", |s, _| {
        boxed(BodyHmac::github(s.header, s.secrets))
    })
};

pub(super) const SHOPIFY: SchemeSpec = SchemeSpec {
    takes_header: true,
    ..SchemeSpec::plain("shopify", |s, _| {
        boxed(BodyHmac::shopify(s.header, s.secrets))
    })
};

/// The generic body HMAC: every part configurable, `header` required.
pub(super) const HMAC: SchemeSpec = SchemeSpec {
    takes_header: true,
    takes_algorithm: true,
    ..SchemeSpec::plain("hmac", |s, _| {
        Ok(Box::new(BodyHmac::generic(s)?) as Box<dyn Scheme>)
    })
};

/// Intercom: `X-Hub-Signature: sha1=` + hex HMAC-SHA1.
pub(super) const INTERCOM: SchemeSpec = SchemeSpec::plain("intercom", |s, _| {
    let (h, a, e) = ("X-Hub-Signature", Algorithm::Sha1, Encoding::Hex);
    boxed(BodyHmac::new("intercom", h, a, e, "sha1=", s.secrets))
});

/// Typeform: `Typeform-Signature: sha256=` + base64 HMAC-SHA256.
pub(super) const TYPEFORM: SchemeSpec = SchemeSpec::plain("typeform", |s, _| {
    let (h, a, e) = ("Typeform-Signature", Algorithm::Sha256, Encoding::Base64);
    boxed(BodyHmac::new("typeform", h, a, e, "sha256=", s.secrets))
});

/// Terraform Cloud: `X-TFE-Notification-Signature`, hex HMAC-SHA512.
pub(super) const TERRAFORM: SchemeSpec = SchemeSpec::plain("terraform", |s, _| {
    let (h, a, e) = (
        "X-TFE-Notification-Signature",
        Algorithm::Sha512,
        Encoding::Hex,
    );
    boxed(BodyHmac::new("terraform", h, a, e, "", s.secrets))
});

fn boxed(built: Result<BodyHmac, SettingError>) -> Result<Box<dyn Scheme>, Vec<SettingError>> {
    built
        .map(|s| Box::new(s) as Box<dyn Scheme>)
        .map_err(|e| vec![e])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

pub struct BodyHmac {
    name: &'static str,
    /// As the user wrote it, for `hookgate sign` output.
    header_display: String,
    header: HeaderName,
    prefix: String,
    encoding: Encoding,
    keys: Vec<KeyedMac>,
}

impl BodyHmac {
    fn new(
        name: &'static str,
        header_display: &str,
        algorithm: Algorithm,
        encoding: Encoding,
        prefix: &str,
        secrets: &[String],
    ) -> Result<Self, SettingError> {
        let header = HeaderName::from_bytes(header_display.as_bytes()).map_err(|_| {
            SettingError::new(
                "header",
                format!("{header_display:?} is not a valid header name"),
            )
        })?;
        Ok(Self {
            name,
            header_display: header_display.to_string(),
            header,
            prefix: prefix.to_string(),
            encoding,
            keys: secrets
                .iter()
                .map(|s| KeyedMac::new(algorithm, s.as_bytes()))
                .collect(),
        })
    }

    /// ImgGo: hex HMAC-SHA256 of the body in `X-ImgGo-Signature`.
    pub fn imggo(header: Option<&str>, secrets: &[String]) -> Result<Self, SettingError> {
        let h = header.unwrap_or("X-ImgGo-Signature");
        Self::new("imggo", h, Algorithm::Sha256, Encoding::Hex, "", secrets)
    }

    /// GitHub: `sha256=` + hex HMAC-SHA256 in `X-Hub-Signature-256`.
    pub fn github(header: Option<&str>, secrets: &[String]) -> Result<Self, SettingError> {
        let h = header.unwrap_or("X-Hub-Signature-256");
        Self::new(
            "github",
            h,
            Algorithm::Sha256,
            Encoding::Hex,
            "sha256=",
            secrets,
        )
    }

    /// Shopify: base64 HMAC-SHA256 in `X-Shopify-Hmac-Sha256`.
    pub fn shopify(header: Option<&str>, secrets: &[String]) -> Result<Self, SettingError> {
        let h = header.unwrap_or("X-Shopify-Hmac-Sha256");
        Self::new(
            "shopify",
            h,
            Algorithm::Sha256,
            Encoding::Base64,
            "",
            secrets,
        )
    }

    /// Generic: every part configurable; `header` is required.
    pub fn generic(s: &SchemeSettings<'_>) -> Result<Self, Vec<SettingError>> {
        let mut errors = Vec::new();
        let algorithm = match s.algorithm.map(|a| (a, Algorithm::parse(a))) {
            None => Algorithm::Sha256,
            Some((_, Some(a))) => a,
            Some((a, None)) => {
                errors.push(SettingError::new(
                    "algorithm",
                    format!("unknown algorithm {a:?}; expected sha1, sha256 or sha512"),
                ));
                Algorithm::Sha256
            }
        };
        let encoding = match s.encoding {
            None | Some("hex") => Encoding::Hex,
            Some("base64") => Encoding::Base64,
            Some(e) => {
                errors.push(SettingError::new(
                    "encoding",
                    format!("unknown encoding {e:?}; expected hex or base64"),
                ));
                Encoding::Hex
            }
        };
        let Some(h) = s.header else {
            errors.push(SettingError::new(
                "header",
                "the hmac scheme needs the header that carries the signature",
            ));
            return Err(errors);
        };
        match Self::new(
            "hmac",
            h,
            algorithm,
            encoding,
            s.prefix.unwrap_or(""),
            s.secrets,
        ) {
            Ok(v) if errors.is_empty() => Ok(v),
            Ok(_) => Err(errors),
            Err(e) => {
                errors.push(e);
                Err(errors)
            }
        }
    }

    /// Decodes a signature into `out` without allocating: the longest MAC (SHA-512's) is 64
    /// bytes, and base64 decoding wants room for its estimate (66 for those). `None` when it is
    /// malformed or too long to be any MAC.
    fn decode<'o>(&self, text: &[u8], out: &'o mut [u8; SIGNATURE_ROOM]) -> Option<&'o [u8]> {
        let len = match self.encoding {
            Encoding::Hex => {
                let len = text.len() / 2;
                let dest = out.get_mut(..len)?;
                hex::decode_to_slice(text, dest).ok()?;
                len
            }
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode_slice(text, out)
                .ok()?,
        };
        Some(&out[..len])
    }

    fn encode(&self, mac: &[u8]) -> String {
        match self.encoding {
            Encoding::Hex => hex::encode(mac),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(mac),
        }
    }
}

const SIGNATURE_ROOM: usize = 72;

impl Scheme for BodyHmac {
    fn name(&self) -> &'static str {
        self.name
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key(&self.header)
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        _now: SystemTime,
    ) -> Result<(), SignatureError> {
        let value = header(headers, &self.header).ok_or(SignatureError::Missing)?;
        let value = value.trim_ascii();
        let encoded = value
            .strip_prefix(self.prefix.as_bytes())
            .ok_or(SignatureError::Invalid)?;
        let mut buf = [0; SIGNATURE_ROOM];
        let expected = self
            .decode(encoded, &mut buf)
            .ok_or(SignatureError::Invalid)?;
        if any_verifies(&self.keys, &[body], expected) {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }

    fn sign(
        &self,
        body: &[u8],
        _now: SystemTime,
        _key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let key = self.keys.first().ok_or("the route has no secret")?;
        let value = format!("{}{}", self.prefix, self.encode(&key.compute(&[body])));
        Ok(vec![(self.header_display.clone(), value)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    // GitHub's published example: secret "It's a Secret to Everybody", payload "Hello, World!".
    // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    const GITHUB_SIG: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_published_vector() {
        let s = BodyHmac::github(None, &["It's a Secret to Everybody".into()]).unwrap();
        let now = SystemTime::now();
        assert_eq!(
            s.verify(
                &headers("x-hub-signature-256", GITHUB_SIG),
                b"Hello, World!",
                now
            ),
            Ok(())
        );
        assert_eq!(
            s.verify(
                &headers("x-hub-signature-256", GITHUB_SIG),
                b"Hello, World?",
                now
            ),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            s.verify(
                &headers("x-hub-signature-256", &GITHUB_SIG[7..]),
                b"Hello, World!",
                now
            ),
            Err(SignatureError::Invalid),
            "the sha256= prefix is required"
        );
        assert_eq!(
            s.verify(&HeaderMap::new(), b"Hello, World!", now),
            Err(SignatureError::Missing)
        );
        let signed = s.sign(b"Hello, World!", now, None).unwrap();
        assert_eq!(
            signed,
            vec![("X-Hub-Signature-256".to_string(), GITHUB_SIG.to_string())]
        );
    }

    #[test]
    fn rotation_accepts_any_secret_and_rejects_garbage() {
        let s = BodyHmac::imggo(None, &["old".into(), "new".into()]).unwrap();
        let now = SystemTime::now();
        let by_new = BodyHmac::imggo(None, &["new".into()])
            .unwrap()
            .sign(b"{}", now, None)
            .unwrap();
        assert_eq!(
            s.verify(&headers("x-imggo-signature", &by_new[0].1), b"{}", now),
            Ok(())
        );
        for junk in ["", "zz", "abc", "\u{00e9}"] {
            assert_eq!(
                s.verify(&headers("x-imggo-signature", junk), b"{}", now),
                Err(SignatureError::Invalid),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn generic_base64_sha512_with_prefix() {
        let secrets = ["k".to_string()];
        let settings = SchemeSettings {
            scheme: crate::signature::SchemeName::parse("hmac").unwrap(),
            secrets: &secrets,
            header: Some("X-Sig"),
            algorithm: Some("sha512"),
            encoding: Some("base64"),
            prefix: Some("v="),
            tolerance: None,
            public_url: None,
            handshake: false,
        };
        let s = BodyHmac::generic(&settings).unwrap();
        let now = SystemTime::now();
        // An independent vector: Python's hmac.new(b"k", b"body", hashlib.sha512), base64.
        let vector = "v=TZSLiacRM+getZIrei7/ZJrcGgaM0pyN2WUJRvDnmXdRH1LgaTNhlBb3C+kbdWjCWKA3pdIs1ksAy8nKsfmBpg==";
        assert_eq!(s.verify(&headers("x-sig", vector), b"body", now), Ok(()));
        assert_eq!(
            s.verify(&headers("x-sig", vector), b"body!", now),
            Err(SignatureError::Invalid)
        );
        let (name, value) = s.sign(b"body", now, None).unwrap().remove(0);
        assert_eq!((name.as_str(), value.as_str()), ("X-Sig", vector));
    }
}
