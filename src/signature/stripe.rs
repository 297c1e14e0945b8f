//! Stripe: `Stripe-Signature: t=..,v1=..[,v1=..]` over `{t}.{body}`, hex HMAC-SHA256.

use super::mac::{matches_any, tags, Algorithm, KeyedMac};
use super::{
    header, parse_timestamp, unix_seconds, within_tolerance, Scheme, SchemeSpec, SignatureError,
    MAX_SIGNATURES,
};
use http::HeaderMap;
use std::time::{Duration, SystemTime};

pub(super) const SPEC: SchemeSpec = SchemeSpec {
    timestamped: true,
    ..SchemeSpec::plain("stripe", |s, tolerance| {
        Ok(Box::new(Stripe::new(s.secrets, tolerance)))
    })
};

pub struct Stripe {
    keys: Vec<KeyedMac>,
    tolerance: Duration,
}

impl Stripe {
    /// Stripe's key is the whole `whsec_...` string, bytes as written.
    pub fn new(secrets: &[String], tolerance: Duration) -> Self {
        Self {
            keys: secrets
                .iter()
                .map(|s| KeyedMac::new(Algorithm::Sha256, s.as_bytes()))
                .collect(),
            tolerance,
        }
    }
}

impl Scheme for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key("stripe-signature")
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let value = header(headers, "stripe-signature").ok_or(SignatureError::Missing)?;
        let mut timestamp = None;
        let mut candidates = Vec::new();
        for item in value.split(|&b| b == b',') {
            let item = item.trim_ascii();
            if let Some(t) = item.strip_prefix(b"t=") {
                timestamp = Some(t);
            } else if let Some(sig) = item.strip_prefix(b"v1=") {
                if candidates.len() == MAX_SIGNATURES {
                    return Err(SignatureError::Invalid);
                }
                // A v1 value that is not hex can never match; skip it like Stripe's libraries do.
                if let Ok(bytes) = hex::decode(sig) {
                    candidates.push(bytes);
                }
            }
        }
        let raw_ts = timestamp.ok_or(SignatureError::Invalid)?;
        let ts = parse_timestamp(raw_ts).ok_or(SignatureError::Invalid)?;
        let tags = tags(&self.keys, &[raw_ts, b".", body]);
        if !candidates
            .iter()
            .fold(false, |ok, c| matches_any(&tags, c) | ok)
        {
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
        _key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let key = self.keys.first().ok_or("the route has no secret")?;
        let t = unix_seconds(now).to_string();
        let mac = key.compute(&[t.as_bytes(), b".", body]);
        Ok(vec![(
            "Stripe-Signature".into(),
            format!("t={t},v1={}", hex::encode(mac)),
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    const SECRET: &str = "whsec_test_secret";

    /// Independent reference: the HMAC computed directly, as Stripe documents it.
    fn reference(t: i64, body: &[u8]) -> String {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        m.update(format!("{t}.").as_bytes());
        m.update(body);
        hex::encode(m.finalize().into_bytes())
    }

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("stripe-signature", HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn accepts_any_v1_and_enforces_tolerance_both_ways() {
        let s = Stripe::new(&[SECRET.into()], Duration::from_secs(300));
        let t = 1_700_000_000;
        let now = UNIX_EPOCH + Duration::from_secs(t as u64);
        let good = reference(t, b"{}");
        let header = format!("t={t},v1={},v1={good},v0=abc", "00".repeat(32));
        assert_eq!(s.verify(&with(&header), b"{}", now), Ok(()));
        assert_eq!(
            s.verify(&with(&header), b"{ }", now),
            Err(SignatureError::Invalid)
        );
        let late = now + Duration::from_secs(301);
        let early = now - Duration::from_secs(301);
        assert_eq!(
            s.verify(&with(&header), b"{}", late),
            Err(SignatureError::OutOfTolerance)
        );
        assert_eq!(
            s.verify(&with(&header), b"{}", early),
            Err(SignatureError::OutOfTolerance)
        );
    }

    #[test]
    fn hostile_headers_are_invalid_not_panics() {
        let s = Stripe::new(&[SECRET.into()], Duration::from_secs(300));
        let now = SystemTime::now();
        let many = format!("t=1,{}", "v1=00,".repeat(5000));
        for h in [
            "",
            "t=",
            "v1=zz",
            "t=abc,v1=00",
            ",,,,",
            "t=1",
            many.as_str(),
        ] {
            assert_eq!(
                s.verify(&with(h), b"{}", now),
                Err(SignatureError::Invalid),
                "{h:.40}"
            );
        }
        assert_eq!(
            s.verify(&HeaderMap::new(), b"{}", now),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn an_independent_vector_verifies() {
        // Python: hmac.new(b"whsec_test", b'1700000000.{"id":"evt_1"}', hashlib.sha256).hexdigest()
        let s = Stripe::new(&["whsec_test".into()], Duration::from_secs(300));
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let header =
            "t=1700000000,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925";
        assert_eq!(s.verify(&with(header), br#"{"id":"evt_1"}"#, now), Ok(()));
        assert_eq!(
            s.verify(&with(header), br#"{"id":"evt_2"}"#, now),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn sign_round_trips() {
        let s = Stripe::new(&[SECRET.into()], Duration::from_secs(300));
        let now = SystemTime::now();
        let (name, value) = s.sign(b"{\"id\":1}", now, None).unwrap().remove(0);
        assert_eq!(name, "Stripe-Signature");
        assert_eq!(s.verify(&with(&value), b"{\"id\":1}", now), Ok(()));
    }
}
