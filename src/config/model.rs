//! The validated configuration the gateway runs on: parsed, typed, compiled, secrets resolved.

use crate::rate_limit::RateLimit;
use crate::signature::Scheme;
use http::HeaderName;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Condition, OnError, Otherwise};

pub struct Config {
    pub source: PathBuf,
    pub listeners: Vec<Listener>,
    pub threads: usize,
    pub grace_period: Duration,
    pub upgrade_socket: PathBuf,
    /// Whether `upgrade_socket` is hookgate's default, in a directory it keeps private.
    pub upgrade_socket_default: bool,
    pub max_connections: usize,
    pub max_inflight_body: usize,
    pub admin: Option<AdminSettings>,
    pub store: StoreSettings,
    /// The part a SIGHUP reload swaps for new requests.
    pub policy: Arc<RequestPolicy>,
    /// Things that are allowed but probably not meant: `check` prints them, `run` logs them.
    pub warnings: Vec<String>,
}

pub struct Listener {
    pub addr: String,
    pub tls: Option<ListenerTls>,
}

pub enum ListenerTls {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub addr: SocketAddr,
    /// Bearer token for `/api`; without it reads are open and retries refused.
    pub token: Option<String>,
}

/// Which engine keeps idempotency keys (and the queue, for the durable ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEngine {
    /// In-process, lost on restart.
    Memory,
    /// An embedded, durable file (redb).
    File(PathBuf),
    Redis(String),
    Postgres(String),
}

impl StoreEngine {
    /// Whether the store keeps what it is given across a crash (queue routes need that).
    pub fn is_durable(&self) -> bool {
        matches!(self, StoreEngine::File(_) | StoreEngine::Postgres(_))
    }
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub url: StoreEngine,
    pub on_error: OnError,
    pub max_keys: u64,
    pub prefix: String,
}

/// What decides a request's fate (routes, trusted proxies, the client deadline): swapped whole
/// on reload.
pub struct RequestPolicy {
    pub routes: HashMap<String, Arc<Route>>,
    /// Route names in file order, for `check` output and metrics.
    pub route_order: Vec<Arc<Route>>,
    pub trusted_proxies: super::NetSet,
    pub client_timeout: Duration,
    /// Spans to a collector (`tracing`), swapped with the rest on reload.
    pub tracing: Option<TracingSettings>,
}

#[derive(Debug, Clone)]
pub struct TracingSettings {
    /// The collector; spans are POSTed to its `/v1/traces`.
    pub collector: Upstream,
    /// The share of new traces recorded; 0 records none.
    pub sample: f64,
}

impl RequestPolicy {
    pub fn route(&self, path: &str) -> Option<&Arc<Route>> {
        self.routes.get(path)
    }
}

pub struct Route {
    /// Position in `RequestPolicy::route_order`: indexes per-route state derived from the config.
    pub index: usize,
    pub name: Arc<str>,
    pub path: String,
    /// Where a clean delivery goes.
    pub mode: Mode,
    pub https_only: bool,
    pub allow_ips: Option<super::NetSet>,
    /// Requests per client address (with their buckets).
    pub limit: Option<RateLimit>,
    pub max_body: usize,
    pub signature: Option<Box<dyn Scheme>>,
    pub schema: Option<jsonschema::Validator>,
    pub events: Option<Events>,
    pub idempotency: Option<Idempotency>,
}

impl Route {
    /// Its queue, for a route in queue mode.
    pub fn queue(&self) -> Option<&QueueSettings> {
        match &self.mode {
            Mode::Queue(q) => Some(q),
            Mode::Forward { .. } => None,
        }
    }

    /// Whether any step needs the body parsed as JSON.
    pub fn needs_json(&self) -> bool {
        self.schema.is_some()
            || self.events.is_some()
            || self
                .idempotency
                .as_ref()
                .is_some_and(|i| i.parts.iter().any(|p| matches!(p, KeyPart::Pointer(_))))
            || matches!(&self.mode, Mode::Queue(q)
                if q.policy.order_by.is_some() || q.destinations.iter().any(|d| d.when.is_some()))
    }
}

/// How a route hands on a clean delivery.
pub enum Mode {
    /// Proxy it to the app now and relay the app's answer.
    Forward {
        upstream: Upstream,
        timeout: Duration,
    },
    /// Store it durably, answer `queued`, deliver in the background. Shared with the route's
    /// dispatch and its attempts, which outlive a reload of the config.
    Queue(Arc<QueueSettings>),
}

/// A queue route's destinations and delivery policy.
pub struct QueueSettings {
    pub destinations: Vec<Destination>,
    pub policy: DeliveryPolicy,
}

impl QueueSettings {
    pub fn has_destination(&self, name: &str) -> bool {
        self.destinations.iter().any(|d| &*d.name == name)
    }
}

pub struct Destination {
    pub name: Arc<str>,
    pub target: DestinationTarget,
    /// Only these events go here; `None`: every event.
    pub events: Option<Vec<String>>,
    /// Only deliveries this condition holds for go here.
    pub when: Option<Condition>,
}

/// Where one destination's deliveries go.
pub enum DestinationTarget {
    /// An app, over HTTP: a POST of the exact body.
    Http(Upstream),
    /// A broker: one message per delivery.
    Broker(Broker),
}

impl DestinationTarget {
    /// The URL to show in `check` and logs (a broker's password hidden).
    pub fn shown(&self) -> &str {
        match self {
            DestinationTarget::Http(u) => &u.url,
            DestinationTarget::Broker(b) => &b.shown,
        }
    }
}

/// A broker destination (PRODUCT.md §9).
#[derive(Clone)]
pub struct Broker {
    /// The URL with secrets resolved: never logged or shown.
    pub url: String,
    /// The URL with its password hidden, for `check` and logs.
    pub shown: String,
    pub kind: BrokerKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// JetStream publish to `subject`, waiting for the stream's ack.
    Nats { subject: String },
    /// Persistent publish with publisher confirms, mandatory (unroutable is a failure).
    Amqp {
        exchange: String,
        routing_key: String,
    },
    /// XADD to `stream`, trimmed to about `max_len` entries.
    RedisStream {
        stream: String,
        max_len: Option<u64>,
    },
    /// Produce to `topic` with `acks=all`, keyed by the value at the `key` pointer (else the
    /// idempotency key), on the partition Kafka's own clients pick for that key.
    Kafka {
        /// The bootstrap brokers, `host:port` each.
        brokers: Vec<String>,
        /// `kafka+tls://`: every broker connection is TLS.
        tls: bool,
        topic: String,
        key: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    pub timeout: Duration,
    /// The wait before each retry; the attempt after the last one's failure is final.
    pub retry: Vec<Duration>,
    /// Each wait moves by up to this fraction either way.
    pub jitter: f64,
    pub max_in_flight: usize,
    /// Attempts started per second, per destination.
    pub rate: Option<f64>,
    pub max_queued: u64,
    pub retention: Duration,
    /// A JSON pointer into the body: deliveries with the same value are attempted one at a time
    /// per destination, in acceptance order.
    pub order_by: Option<String>,
    pub breaker: Option<BreakerPolicy>,
}

/// A destination's circuit breaker (PRODUCT.md §9).
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Failed attempts in a row that open it.
    pub failures: u32,
    /// How long it holds the destination before a probe.
    pub cooldown: Duration,
}

impl DeliveryPolicy {
    /// An attempt in progress is taken up again after this (a crash mid-attempt).
    pub fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(30)
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub tls: bool,
    /// Host name for SNI and certificate checks on an https upstream.
    pub host: String,
    /// As written, for logs and `check`.
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct Events {
    pub pointer: String,
    pub allow: Vec<String>,
    pub otherwise: Otherwise,
}

#[derive(Debug, Clone)]
pub struct Idempotency {
    pub parts: Vec<KeyPart>,
    /// The route's name, or the scope routes share keys in.
    pub scope: Arc<str>,
    pub ttl: Duration,
    pub lease: Duration,
}

#[derive(Debug, Clone)]
pub enum KeyPart {
    Pointer(String),
    Header(HeaderName),
}

impl std::fmt::Display for Route {
    /// One line per route, as `hookgate check` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            Mode::Forward { upstream, .. } => {
                write!(f, "{}: POST {} -> {}", self.name, self.path, upstream.url)?
            }
            Mode::Queue(q) => {
                write!(f, "{}: POST {} -> queue ->", self.name, self.path)?;
                for (i, d) in q.destinations.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{}={}", d.name, d.target.shown())?;
                }
            }
        }
        write!(
            f,
            " signature={}",
            self.signature.as_ref().map_or("none", |s| s.name())
        )?;
        if self.https_only {
            write!(f, " https_only")?;
        }
        if let Some(ips) = &self.allow_ips {
            write!(f, " allow_ips={}", ips.len())?;
        }
        if let Some(l) = &self.limit {
            write!(f, " limit={}/s(burst {})", l.rate, l.burst)?;
        }
        write!(f, " max_body={}", self.max_body)?;
        if self.schema.is_some() {
            write!(f, " schema")?;
        }
        if let Some(e) = &self.events {
            write!(f, " events={}", e.allow.join(","))?;
        }
        if let Some(i) = &self.idempotency {
            write!(f, " idempotency(ttl={}s)", i.ttl.as_secs())?;
        }
        Ok(())
    }
}
