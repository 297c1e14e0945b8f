//! The YAML file as users write it: serde structs only, no validation beyond types.

use super::units::{ByteSize, HumanDuration};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Webhook listeners; at least one.
    pub listen: Vec<RawListener>,
    /// Worker threads serving the webhook listeners (default: CPU count).
    pub threads: Option<usize>,
    /// The whole request, head and body, must arrive within this (default 30s).
    pub client_timeout: Option<HumanDuration>,
    /// How long in-flight requests may finish on SIGTERM or upgrade (default 10s).
    pub grace_period: Option<HumanDuration>,
    /// Unix socket the listening sockets are handed over on `run --upgrade`.
    pub upgrade_socket: Option<String>,
    /// The admin listener (/metrics, /healthz, /readyz).
    pub admin: Option<RawAdmin>,
    /// Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (default none).
    pub trusted_proxies: Option<Vec<String>>,
    /// Where delivered idempotency keys are remembered.
    pub store: Option<RawStore>,
    /// One route per webhook endpoint.
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// `host:port` to bind.
    pub addr: String,
    /// TLS for this listener; absent means plain HTTP.
    pub tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain file.
    pub cert: Option<String>,
    /// PEM private key file.
    pub key: Option<String>,
    /// Generate a throwaway certificate at start (development only).
    #[serde(default)]
    pub self_signed: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `host:port` of the admin listener; keep it private.
    pub addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `memory` or `redis://host:port/db`.
    pub url: Option<String>,
    /// `reject` (503, the sender retries) or `allow` (forward without dedupe) when the store fails.
    pub on_error: Option<OnError>,
    /// Memory store only: bound on remembered keys (default 1,000,000).
    pub max_keys: Option<u64>,
    /// Redis store only: key namespace (default `hookgate`).
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    Reject,
    Allow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique route name, used in metrics and logs.
    pub name: String,
    /// Exact request path; the query string is ignored for matching.
    pub path: String,
    /// `http://host:port` or `https://host:port` of the app.
    pub upstream: String,
    /// Connect + whole exchange with the app (default 30s).
    pub upstream_timeout: Option<HumanDuration>,
    /// Refuse plain HTTP (default true).
    pub https_only: Option<bool>,
    /// CIDRs or addresses allowed to deliver; absent means any.
    pub allow_ips: Option<Vec<String>>,
    /// Largest accepted body (default 1MiB).
    pub max_body: Option<ByteSize>,
    /// How deliveries are signed.
    pub signature: Option<RawSignature>,
    /// JSON Schema: a file path or an inline mapping.
    pub schema: Option<RawSchema>,
    /// Which events are wanted.
    pub events: Option<RawEvents>,
    /// How redeliveries are recognised.
    pub idempotency: Option<RawIdempotency>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignature {
    /// imggo, hmac, github, shopify, stripe, slack, standard-webhooks or svix.
    pub scheme: String,
    /// Accepted secrets; several allow rotation.
    pub secrets: Vec<String>,
    /// Header carrying the signature (hmac: required; imggo/github/shopify: override).
    pub header: Option<String>,
    /// hmac only: sha1, sha256 or sha512.
    pub algorithm: Option<String>,
    /// hmac only: hex or base64.
    pub encoding: Option<String>,
    /// hmac only: text before the encoded digest, e.g. `sha256=`.
    pub prefix: Option<String>,
    /// Timestamped schemes: accepted clock skew either way (default 5m).
    pub tolerance: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSchema {
    Path(String),
    Inline(serde_json::Value),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    /// JSON pointer to the event name in the body.
    pub pointer: String,
    /// Wanted event names.
    pub allow: Vec<String>,
    /// What to do with other events (default ignore).
    pub otherwise: Option<Otherwise>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Otherwise {
    Ignore,
    Reject,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdempotency {
    /// JSON pointers and/or `header:Name`; one string or a list.
    pub key: OneOrMany,
    /// How long a delivered key is remembered (default 24h).
    pub ttl: Option<HumanDuration>,
    /// How long an in-flight claim lives (default upstream_timeout + 30s).
    pub lease: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}
