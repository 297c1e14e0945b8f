//! Slack: `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`.

use super::mac::{any_verifies, Algorithm, KeyedMac};
use super::{
    header, parse_timestamp, unix_seconds, within_tolerance, Scheme, SchemeSpec, SignatureError,
};
use http::HeaderMap;
use std::time::{Duration, SystemTime};

pub(super) const SPEC: SchemeSpec = SchemeSpec {
    timestamped: true,
    has_handshake: true,
    ..SchemeSpec::plain("slack", |s, tolerance| {
        Ok(Box::new(Slack::new(s.secrets, tolerance, s.handshake)))
    })
};

pub struct Slack {
    keys: Vec<KeyedMac>,
    tolerance: Duration,
    /// Answer Slack's `url_verification` at the gateway.
    handshake: bool,
}

impl Slack {
    pub fn new(secrets: &[String], tolerance: Duration, handshake: bool) -> Self {
        Self {
            keys: secrets
                .iter()
                .map(|s| KeyedMac::new(Algorithm::Sha256, s.as_bytes()))
                .collect(),
            tolerance,
            handshake,
        }
    }
}

impl Scheme for Slack {
    fn name(&self) -> &'static str {
        "slack"
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key("x-slack-signature")
            && headers.contains_key("x-slack-request-timestamp")
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let sig = header(headers, "x-slack-signature").ok_or(SignatureError::Missing)?;
        let raw_ts = header(headers, "x-slack-request-timestamp").ok_or(SignatureError::Missing)?;
        let raw_ts = raw_ts.trim_ascii();
        let ts = parse_timestamp(raw_ts).ok_or(SignatureError::Invalid)?;
        let expected = sig
            .trim_ascii()
            .strip_prefix(b"v0=")
            .and_then(|h| hex::decode(h).ok())
            .ok_or(SignatureError::Invalid)?;
        if !any_verifies(&self.keys, &[b"v0:", raw_ts, b":", body], &expected) {
            return Err(SignatureError::Invalid);
        }
        if !within_tolerance(ts, now, self.tolerance) {
            return Err(SignatureError::OutOfTolerance);
        }
        Ok(())
    }

    /// Slack's `url_verification` (sent signed when a Request URL is saved): the challenge back.
    fn handshake(&self, _headers: &HeaderMap, body: &[u8]) -> Option<super::Handshake> {
        if !self.handshake {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        if v.get("type")?.as_str()? != "url_verification" {
            return None;
        }
        let challenge = v.get("challenge")?.as_str()?;
        Some(super::Handshake::json(
            serde_json::json!({ "challenge": challenge }),
        ))
    }

    fn sign(
        &self,
        body: &[u8],
        now: SystemTime,
        _key: Option<&str>,
    ) -> Result<Vec<(String, String)>, String> {
        let key = self.keys.first().ok_or("the route has no secret")?;
        let ts = unix_seconds(now).to_string();
        let mac = key.compute(&[b"v0:", ts.as_bytes(), b":", body]);
        Ok(vec![
            ("X-Slack-Request-Timestamp".into(), ts),
            (
                "X-Slack-Signature".into(),
                format!("v0={}", hex::encode(mac)),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    // Slack's published example (api.slack.com/authentication/verifying-requests-from-slack).
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn headers(ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-slack-request-timestamp",
            HeaderValue::from_str(ts).unwrap(),
        );
        h.insert("x-slack-signature", HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn published_vector() {
        let s = Slack::new(&[SECRET.into()], Duration::from_secs(300), false);
        let at = UNIX_EPOCH + Duration::from_secs(1_531_420_618);
        assert_eq!(s.verify(&headers(TS, SIG), BODY, at), Ok(()));
        assert_eq!(
            s.verify(&headers("1531420619", SIG), BODY, at),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            s.verify(&headers(TS, SIG), BODY, at + Duration::from_secs(600)),
            Err(SignatureError::OutOfTolerance)
        );
        let mut only_sig = HeaderMap::new();
        only_sig.insert("x-slack-signature", HeaderValue::from_static(SIG));
        assert_eq!(s.verify(&only_sig, BODY, at), Err(SignatureError::Missing));
        let signed = s.sign(BODY, at, None).unwrap();
        assert_eq!(signed[1].1, SIG);
    }
}
