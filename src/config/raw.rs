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
    /// Open connections per listener (default 10,000); more wait in the kernel's backlog.
    pub max_connections: Option<usize>,
    /// Request bodies being read or held at once, in all (default 256MiB); beyond it 503.
    pub max_inflight_body: Option<ByteSize>,
    /// The admin listener (/metrics, /healthz, /readyz).
    pub admin: Option<RawAdmin>,
    /// Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (default none).
    pub trusted_proxies: Option<Vec<String>>,
    /// Where delivered idempotency keys are remembered.
    pub store: Option<RawStore>,
    /// One route per webhook endpoint.
    pub routes: Vec<RawRoute>,
    /// Spans to an OpenTelemetry collector over OTLP/HTTP.
    pub tracing: Option<RawTracing>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// The collector's OTLP/HTTP base URL, e.g. `http://collector:4318` (spans go to /v1/traces).
    pub otlp: String,
    /// The share of new traces recorded, 0 to 1 (default 1); a sender's sampled flag decides
    /// for the traces it continues.
    pub sample: Option<f64>,
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
    /// Bearer token for the delivery log API (`/api`); required for retries.
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `memory`, `file:PATH`, `redis://host:port/db` or `postgres://user@host/db`.
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
    /// `forward` (default): proxy to `upstream` and relay its answer; `queue`: store, answer,
    /// deliver to `upstreams` in the background.
    pub mode: Option<RawMode>,
    /// `http://host:port` or `https://host:port` of the app (forward routes).
    pub upstream: Option<String>,
    /// The destinations of a queue route (fan-out).
    pub upstreams: Option<Vec<RawDestination>>,
    /// How a queue route delivers: timeout, retries, limits, retention.
    pub delivery: Option<RawDelivery>,
    /// Connect + whole exchange with the app (default 30s).
    pub upstream_timeout: Option<HumanDuration>,
    /// Refuse plain HTTP (default true).
    pub https_only: Option<bool>,
    /// CIDRs or addresses allowed to deliver; absent means any.
    pub allow_ips: Option<Vec<String>>,
    /// Requests per client address; beyond it 429 before the body is read.
    pub limit: Option<RawLimit>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    Forward,
    Queue,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    /// Unique within the route; in metrics, logs and the delivery log.
    pub name: String,
    /// `http(s)://host:port` of an app, or a broker: `nats://`, `amqp(s)://`, `redis(s)://`.
    pub url: String,
    /// Only these events (the route's `events.pointer`) go here; absent: every event.
    pub events: Option<Vec<String>>,
    /// A CEL condition over `body`, `headers` and `event`; false: not sent here.
    pub when: Option<String>,
    /// nats: the JetStream subject to publish to.
    pub subject: Option<String>,
    /// amqp: the exchange to publish to (`""` is the default exchange).
    pub exchange: Option<String>,
    /// amqp: the routing key (default empty).
    pub routing_key: Option<String>,
    /// redis: the stream to append to.
    pub stream: Option<String>,
    /// redis: trim the stream to about this many entries (`MAXLEN ~`).
    pub max_len: Option<u64>,
    /// kafka: the topic to produce to.
    pub topic: Option<String>,
    /// kafka: a JSON pointer to the message key (default the idempotency key).
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// Requests per client address, e.g. `100/s`, `600/m`.
    pub rate: String,
    /// Requests an address may make at once (default: one second's worth of `rate`).
    pub burst: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    /// One attempt's limit (default 30s).
    pub timeout: Option<HumanDuration>,
    /// The wait before each retry (default 30s, 2m, 10m, 30m, 1h, 2h, 4h, 8h, 8h).
    pub retry: Option<Vec<String>>,
    /// Each wait moves by up to this much either way (default 10%).
    pub jitter: Option<String>,
    /// Attempts at once, per destination (default 32).
    pub max_in_flight: Option<usize>,
    /// Attempts started per second, per destination, e.g. `50/s` (default unlimited).
    pub rate: Option<String>,
    /// Undelivered deliveries per route before new ones get 503 (default 1,000,000).
    pub max_queued: Option<u64>,
    /// Delivered and dead deliveries are purged after this (default 7d).
    pub retention: Option<HumanDuration>,
    /// A JSON pointer: deliveries with the same value reach each destination one at a time, in
    /// acceptance order.
    pub order_by: Option<String>,
    /// Per destination: after `failures` failed attempts in a row, hold it for `cooldown`.
    pub breaker: Option<RawBreaker>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Failed attempts in a row that open the breaker.
    pub failures: u32,
    /// How long no attempt starts once it is open, before one probes the destination.
    pub cooldown: HumanDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignature {
    /// One of `SchemeName`'s names; parsed in `compile` so that an unknown one is reported with
    /// every other problem of the file, not instead of them.
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
    /// square, twilio: the URL the provider delivers to, as it sees it (it signs it).
    pub public_url: Option<String>,
    /// slack, zoom, twitch, discord: answer the provider's verification request at the gateway.
    pub handshake: Option<bool>,
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
    /// Routes naming the same scope share keys (default: the route's name).
    pub scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}
