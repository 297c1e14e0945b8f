//! The validated configuration the gateway runs on: parsed, typed, compiled, secrets resolved.

use crate::signature::Scheme;
use http::HeaderName;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{OnError, Otherwise};

pub struct Config {
    pub source: PathBuf,
    pub listeners: Vec<Listener>,
    pub threads: usize,
    pub grace_period: Duration,
    pub upgrade_socket: PathBuf,
    pub admin: Option<SocketAddr>,
    pub store: StoreSettings,
    /// The part a SIGHUP reload swaps for new requests.
    pub gateway: Arc<Gateway>,
}

pub struct Listener {
    pub addr: String,
    pub tls: Option<ListenerTls>,
}

pub enum ListenerTls {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Memory,
    Redis(String),
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub url: StoreUrl,
    pub on_error: OnError,
    pub max_keys: u64,
    pub prefix: String,
}

/// What the request path needs, swapped whole on reload.
pub struct Gateway {
    pub routes: HashMap<String, Arc<Route>>,
    /// Route names in file order, for `check` output and metrics.
    pub route_order: Vec<Arc<Route>>,
    pub trusted_proxies: super::NetSet,
    pub client_timeout: Duration,
}

impl Gateway {
    pub fn route(&self, path: &str) -> Option<&Arc<Route>> {
        self.routes.get(path)
    }
}

pub struct Route {
    /// Position in `Gateway::route_order`: indexes per-route state derived from the config.
    pub index: usize,
    pub name: Arc<str>,
    pub path: String,
    pub upstream: Upstream,
    pub upstream_timeout: Duration,
    pub https_only: bool,
    pub allow_ips: Option<super::NetSet>,
    pub max_body: usize,
    pub signature: Option<Box<dyn Scheme>>,
    pub schema: Option<jsonschema::Validator>,
    pub events: Option<Events>,
    pub idempotency: Option<Idempotency>,
}

impl Route {
    /// Whether any step needs the body parsed as JSON.
    pub fn needs_json(&self) -> bool {
        self.schema.is_some()
            || self.events.is_some()
            || self
                .idempotency
                .as_ref()
                .is_some_and(|i| i.parts.iter().any(|p| matches!(p, KeyPart::Pointer(_))))
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
        write!(
            f,
            "{}: POST {} -> {}",
            self.name, self.path, self.upstream.url
        )?;
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
