//! Raw YAML structs → the validated model, collecting every problem with its field path.

use super::model::*;
use super::raw::*;
use super::{env, Problem};
use crate::signature::{self, SchemeSettings};
use http::HeaderName;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_LEASE_MARGIN: Duration = Duration::from_secs(30);
const DEFAULT_MAX_BODY: u64 = 1 << 20;
const DEFAULT_MAX_KEYS: u64 = 1_000_000;

/// Collects problems while compiling; every helper records and carries on, so one run reports all.
struct Ctx<'a> {
    problems: Vec<Problem>,
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::Field {
            path: path.into(),
            message: message.into(),
        });
    }

    /// `${VAR}` expansion; on failure the problem is recorded and "" returned.
    fn expand(&mut self, path: &str, text: &str) -> String {
        match env::expand(text, self.env) {
            Ok(s) => s,
            Err(e) => {
                self.err(path, e);
                String::new()
            }
        }
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn net(&mut self, path: &str, text: &str) -> Option<IpNet> {
        let text = self.expand(path, text);
        let parsed = text
            .parse::<IpNet>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
            .map(|n| canonical_net(n).trunc());
        if parsed.is_none() {
            self.err(
                path,
                format!("{text:?} is not an IP address or CIDR (e.g. 203.0.113.0/24)"),
            );
        }
        parsed
    }
}

/// `::ffff:a.b.c.d/120` style entries become plain IPv4 networks, like client addresses do.
fn canonical_net(n: IpNet) -> IpNet {
    if let IpNet::V6(v6) = n {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            if v6.prefix_len() >= 96 {
                if let Ok(net) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(net);
                }
            }
        }
    }
    n
}

pub fn compile(
    raw: RawConfig,
    base: &Path,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let mut cx = Ctx {
        problems: Vec::new(),
        base,
        env,
    };

    if raw.listen.is_empty() {
        cx.err("listen", "at least one listener is required");
    }
    let listeners: Vec<Listener> = raw
        .listen
        .iter()
        .enumerate()
        .map(|(i, l)| listener(&mut cx, i, l))
        .collect();

    let threads = match raw.threads {
        Some(0) => {
            cx.err("threads", "must be at least 1");
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let client_timeout = raw.client_timeout.map_or(DEFAULT_CLIENT_TIMEOUT, |d| d.0);
    if client_timeout.is_zero() {
        cx.err("client_timeout", "must be more than 0");
    }
    let grace_period = raw.grace_period.map_or(DEFAULT_GRACE_PERIOD, |d| d.0);
    let upgrade_socket = raw
        .upgrade_socket
        .as_deref()
        .map(|s| {
            let s = cx.expand("upgrade_socket", s);
            cx.resolve(&s)
        })
        .unwrap_or_else(|| PathBuf::from("/tmp/hookgate-upgrade.sock"));

    let admin = raw.admin.as_ref().and_then(|a| {
        let addr = cx.expand("admin.addr", &a.addr);
        let parsed = addr.parse::<SocketAddr>().ok();
        if parsed.is_none() {
            cx.err(
                "admin.addr",
                format!("{addr:?} is not host:port (e.g. 127.0.0.1:9090)"),
            );
        }
        parsed
    });

    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, p)| cx.net(&format!("trusted_proxies[{i}]"), p))
        .collect::<Vec<_>>();
    let trusted_proxies = super::NetSet::new(&trusted_proxies);

    let store = store(&mut cx, raw.store.as_ref());

    if raw.routes.is_empty() {
        cx.err("routes", "at least one route is required");
    }
    let mut routes = HashMap::new();
    let mut route_order = Vec::new();
    let mut names = HashMap::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let label = if r.name.is_empty() {
            i.to_string()
        } else {
            r.name.clone()
        };
        let at = format!("routes[{label}]");
        if names.insert(r.name.clone(), i).is_some() {
            cx.err(
                format!("{at}.name"),
                format!("route name {:?} is used twice", r.name),
            );
        }
        if let Some(route) = route(&mut cx, &at, i, r) {
            let route = Arc::new(route);
            if routes.insert(route.path.clone(), route.clone()).is_some() {
                cx.err(
                    format!("{at}.path"),
                    format!("path {:?} is served by an earlier route", route.path),
                );
            }
            route_order.push(route);
        }
    }

    if !cx.problems.is_empty() {
        return Err(cx.problems);
    }
    Ok(Config {
        source: file.to_path_buf(),
        listeners,
        threads,
        grace_period,
        upgrade_socket,
        admin,
        store,
        gateway: Arc::new(Gateway {
            routes,
            route_order,
            trusted_proxies,
            client_timeout,
        }),
    })
}

fn listener(cx: &mut Ctx<'_>, i: usize, l: &RawListener) -> Listener {
    let at = format!("listen[{i}]");
    let addr = cx.expand(&format!("{at}.addr"), &l.addr);
    if addr.parse::<SocketAddr>().is_err() {
        cx.err(
            format!("{at}.addr"),
            format!("{addr:?} is not host:port (e.g. 0.0.0.0:8443)"),
        );
    }
    let tls = l
        .tls
        .as_ref()
        .and_then(|t| match (t.self_signed, &t.cert, &t.key) {
            (true, None, None) => Some(ListenerTls::SelfSigned),
            (true, _, _) => {
                cx.err(
                    format!("{at}.tls"),
                    "self_signed: true generates its own certificate; drop cert and key",
                );
                None
            }
            (false, Some(cert), Some(key)) => {
                let cert = cx.expand(&format!("{at}.tls.cert"), cert);
                let key = cx.expand(&format!("{at}.tls.key"), key);
                let (cert, key) = (cx.resolve(&cert), cx.resolve(&key));
                for (field, p) in [("cert", &cert), ("key", &key)] {
                    if !p.is_file() {
                        cx.err(
                            format!("{at}.tls.{field}"),
                            format!("file {} does not exist", p.display()),
                        );
                    }
                }
                Some(ListenerTls::Files { cert, key })
            }
            (false, _, _) => {
                cx.err(
                    format!("{at}.tls"),
                    "needs both cert and key (or self_signed: true for development)",
                );
                None
            }
        });
    Listener { addr, tls }
}

fn store(cx: &mut Ctx<'_>, raw: Option<&RawStore>) -> StoreSettings {
    let url_text = raw
        .and_then(|s| s.url.as_deref())
        .map_or_else(|| "memory".to_string(), |u| cx.expand("store.url", u));
    let url = if url_text == "memory" {
        StoreUrl::Memory
    } else if url_text.starts_with("redis://") || url_text.starts_with("rediss://") {
        if let Err(e) = redis::Client::open(url_text.as_str()) {
            cx.err("store.url", format!("not a valid Redis URL: {e}"));
        }
        StoreUrl::Redis(url_text)
    } else {
        cx.err("store.url", "expected \"memory\" or redis://host:port/db");
        StoreUrl::Memory
    };
    let max_keys = raw.and_then(|s| s.max_keys).unwrap_or(DEFAULT_MAX_KEYS);
    if max_keys == 0 {
        cx.err("store.max_keys", "must be at least 1");
    }
    let prefix = raw
        .and_then(|s| s.prefix.as_deref())
        .map_or_else(|| "hookgate".to_string(), |p| cx.expand("store.prefix", p));
    StoreSettings {
        url,
        on_error: raw.and_then(|s| s.on_error).unwrap_or(OnError::Reject),
        max_keys,
        prefix,
    }
}

/// The route at position `index` of the file (a config compiles only when every route does, so
/// it is also the position in `route_order`).
fn route(cx: &mut Ctx<'_>, at: &str, index: usize, r: &RawRoute) -> Option<Route> {
    let before = cx.problems.len();
    if r.name.is_empty()
        || !r
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        cx.err(
            format!("{at}.name"),
            "a route name is letters, digits, '-', '_' or '.'",
        );
    }
    let path = cx.expand(&format!("{at}.path"), &r.path);
    if !path.starts_with('/') || path.contains('?') {
        cx.err(
            format!("{at}.path"),
            "an exact path starting with / and without a query",
        );
    }
    let upstream = upstream(cx, &format!("{at}.upstream"), &r.upstream);
    let upstream_timeout = r.upstream_timeout.map_or(DEFAULT_UPSTREAM_TIMEOUT, |d| d.0);
    if upstream_timeout.is_zero() {
        cx.err(format!("{at}.upstream_timeout"), "must be more than 0");
    }
    let allow_ips = r.allow_ips.as_ref().map(|ips| {
        if ips.is_empty() {
            cx.err(
                format!("{at}.allow_ips"),
                "an empty list would refuse everyone; omit allow_ips to allow any address",
            );
        }
        let nets: Vec<IpNet> = ips
            .iter()
            .enumerate()
            .filter_map(|(i, ip)| cx.net(&format!("{at}.allow_ips[{i}]"), ip))
            .collect();
        super::NetSet::new(&nets)
    });
    let max_body = r.max_body.map_or(DEFAULT_MAX_BODY, |s| s.0);
    if max_body == 0 {
        cx.err(format!("{at}.max_body"), "must be at least 1 byte");
    }
    let max_body = usize::try_from(max_body).unwrap_or(usize::MAX);

    let signature = r
        .signature
        .as_ref()
        .and_then(|s| signature(cx, &format!("{at}.signature"), s));
    let schema = r
        .schema
        .as_ref()
        .and_then(|s| schema(cx, &format!("{at}.schema"), s));
    let events = r
        .events
        .as_ref()
        .and_then(|e| events(cx, &format!("{at}.events"), e));
    let idempotency = r
        .idempotency
        .as_ref()
        .and_then(|i| idempotency(cx, &format!("{at}.idempotency"), i, upstream_timeout));

    if cx.problems.len() > before {
        return None;
    }
    Some(Route {
        index,
        name: Arc::from(r.name.as_str()),
        path,
        upstream: upstream?,
        upstream_timeout,
        https_only: r.https_only.unwrap_or(true),
        allow_ips,
        max_body,
        signature,
        schema,
        events,
        idempotency,
    })
}

fn upstream(cx: &mut Ctx<'_>, at: &str, text: &str) -> Option<Upstream> {
    let url = cx.expand(at, text);
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => {
            cx.err(
                at,
                format!("{url:?} is not a URL like http://127.0.0.1:5000"),
            );
            return None;
        }
    };
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            cx.err(at, "the upstream URL must start with http:// or https://");
            return None;
        }
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        cx.err(
            at,
            "the upstream is scheme://host:port only; requests keep their own path",
        );
        return None;
    }
    let host = uri
        .host()?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    match (host.as_str(), port)
        .to_socket_addrs()
        .map(|mut a| a.next())
    {
        Ok(Some(addr)) => Some(Upstream {
            addr,
            tls,
            host,
            url,
        }),
        _ => {
            cx.err(at, format!("cannot resolve upstream host {host:?}"));
            None
        }
    }
}

fn signature(cx: &mut Ctx<'_>, at: &str, s: &RawSignature) -> Option<Box<dyn signature::Scheme>> {
    let secrets: Vec<String> = s
        .secrets
        .iter()
        .enumerate()
        .map(|(i, v)| cx.expand(&format!("{at}.secrets[{i}]"), v))
        .collect();
    let header = s
        .header
        .as_deref()
        .map(|h| cx.expand(&format!("{at}.header"), h));
    let prefix = s
        .prefix
        .as_deref()
        .map(|p| cx.expand(&format!("{at}.prefix"), p));
    let settings = SchemeSettings {
        scheme: &s.scheme,
        secrets: &secrets,
        header: header.as_deref(),
        algorithm: s.algorithm.as_deref(),
        encoding: s.encoding.as_deref(),
        prefix: prefix.as_deref(),
        tolerance: s.tolerance.map(|t| t.0),
    };
    match signature::build(&settings) {
        Ok(v) => Some(v),
        Err(errors) => {
            for (field, message) in errors {
                cx.err(format!("{at}.{field}"), message);
            }
            None
        }
    }
}

fn schema(cx: &mut Ctx<'_>, at: &str, s: &RawSchema) -> Option<jsonschema::Validator> {
    let document = match s {
        RawSchema::Inline(v) => v.clone(),
        RawSchema::Path(p) => {
            let p = cx.expand(at, p);
            let file = cx.resolve(&p);
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    cx.err(
                        at,
                        format!("cannot read schema file {}: {e}", file.display()),
                    );
                    return None;
                }
            };
            match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    cx.err(
                        at,
                        format!("schema file {} is not JSON: {e}", file.display()),
                    );
                    return None;
                }
            }
        }
    };
    match jsonschema::validator_for(&document) {
        Ok(v) => Some(v),
        Err(e) => {
            cx.err(at, format!("not a valid JSON Schema: {e}"));
            None
        }
    }
}

fn is_pointer(p: &str) -> bool {
    p.is_empty() || p.starts_with('/')
}

fn events(cx: &mut Ctx<'_>, at: &str, e: &RawEvents) -> Option<Events> {
    let pointer = cx.expand(&format!("{at}.pointer"), &e.pointer);
    if !is_pointer(&pointer) {
        cx.err(
            format!("{at}.pointer"),
            "a JSON pointer starts with / (e.g. /event)",
        );
    }
    if e.allow.is_empty() {
        cx.err(format!("{at}.allow"), "list at least one wanted event");
    }
    let allow = e
        .allow
        .iter()
        .enumerate()
        .map(|(i, a)| cx.expand(&format!("{at}.allow[{i}]"), a))
        .collect();
    Some(Events {
        pointer,
        allow,
        otherwise: e.otherwise.unwrap_or(Otherwise::Ignore),
    })
}

fn idempotency(
    cx: &mut Ctx<'_>,
    at: &str,
    i: &RawIdempotency,
    upstream_timeout: Duration,
) -> Option<Idempotency> {
    let keys = match &i.key {
        OneOrMany::One(k) => vec![k.clone()],
        OneOrMany::Many(v) => v.clone(),
    };
    if keys.is_empty() {
        cx.err(
            format!("{at}.key"),
            "name at least one JSON pointer or header:Name",
        );
    }
    let mut parts = Vec::new();
    for (n, k) in keys.iter().enumerate() {
        let field = format!("{at}.key[{n}]");
        let k = cx.expand(&field, k);
        if let Some(name) = k.strip_prefix("header:") {
            match HeaderName::from_bytes(name.trim().as_bytes()) {
                Ok(h) => parts.push(KeyPart::Header(h)),
                Err(_) => cx.err(field, format!("{name:?} is not a header name")),
            }
        } else if k.starts_with('/') {
            parts.push(KeyPart::Pointer(k));
        } else {
            cx.err(field, "expected a JSON pointer (/job_id) or header:Name");
        }
    }
    let ttl = i.ttl.map_or(DEFAULT_TTL, |d| d.0);
    if ttl.is_zero() {
        cx.err(format!("{at}.ttl"), "must be more than 0");
    }
    let lease = i
        .lease
        .map_or(upstream_timeout + DEFAULT_LEASE_MARGIN, |d| d.0);
    if lease <= upstream_timeout {
        cx.err(
            format!("{at}.lease"),
            format!(
                "must exceed upstream_timeout ({}s), or a claim could expire while its delivery is still running",
                upstream_timeout.as_secs_f64()
            ),
        );
    }
    Some(Idempotency { parts, ttl, lease })
}
