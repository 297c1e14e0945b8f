//! Raw YAML structs → the validated model, collecting every problem with its field path.

use super::model::*;
use super::raw::*;
use super::{env, Problem};
use crate::rate_limit::RateLimit;
use crate::signature::{self, SchemeName, SchemeSettings};
use http::HeaderName;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
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
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
const DEFAULT_MAX_INFLIGHT_BODY: u64 = 256 << 20;
const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRY: &[u64] = &[30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800];
const DEFAULT_JITTER: f64 = 0.10;
const DEFAULT_MAX_IN_FLIGHT: usize = 32;
const DEFAULT_MAX_QUEUED: u64 = 1_000_000;
const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86400);

/// Collects problems while compiling; every helper records and carries on, so one run reports all.
pub(super) struct Ctx<'a> {
    problems: Vec<Problem>,
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    pub(super) fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::Field {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn problems_len(&self) -> usize {
        self.problems.len()
    }

    /// `${VAR}` expansion; on failure the problem is recorded and "" returned.
    pub(super) fn expand(&mut self, path: &str, text: &str) -> String {
        match env::expand(text, self.env) {
            Ok(s) => s,
            Err(e) => {
                self.err(path, e);
                String::new()
            }
        }
    }

    /// A secret written `file:PATH`: the file's text, one trailing newline dropped. Its content
    /// never appears in a message.
    pub(super) fn secret_file(&mut self, field: &str, path: &str) -> String {
        let file = self.resolve(path);
        match std::fs::read_to_string(&file) {
            Ok(mut text) => {
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                if text.is_empty() {
                    self.err(field, format!("secret file {} is empty", file.display()));
                }
                text
            }
            Err(e) => {
                self.err(
                    field,
                    format!("cannot read secret file {}: {e}", file.display()),
                );
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

/// A directory only this user may enter: the socket inside hands over listening sockets, so no
/// other local user may connect to it (`server::upgrade_dir` creates the directory 0700).
fn default_upgrade_socket(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let dir = match env("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("hookgate"),
        None => {
            let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
            std::env::temp_dir().join(format!("hookgate-{uid}"))
        }
    };
    dir.join("upgrade.sock")
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
        .unwrap_or_else(|| default_upgrade_socket(env));

    let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        cx.err("max_connections", "must be at least 1");
    }
    let max_inflight_body = raw
        .max_inflight_body
        .map_or(DEFAULT_MAX_INFLIGHT_BODY, |s| s.0);
    if max_inflight_body == 0 {
        cx.err("max_inflight_body", "must be at least 1 byte");
    }
    let max_inflight_body = usize::try_from(max_inflight_body).unwrap_or(usize::MAX);

    let admin = raw.admin.as_ref().and_then(|a| {
        let addr = cx.expand("admin.addr", &a.addr);
        let token = a.token.as_deref().map(|t| cx.expand("admin.token", t));
        if token.as_deref() == Some("") {
            cx.err("admin.token", "the token is empty");
        }
        let parsed = addr.parse::<SocketAddr>().ok();
        if parsed.is_none() {
            cx.err(
                "admin.addr",
                format!("{addr:?} is not host:port (e.g. 127.0.0.1:9090)"),
            );
        }
        parsed.map(|addr| AdminSettings { addr, token })
    });

    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, p)| cx.net(&format!("trusted_proxies[{i}]"), p))
        .collect::<Vec<_>>();
    let trusted_proxies = super::NetSet::new(&trusted_proxies);
    let tracing = raw.tracing.as_ref().and_then(|t| {
        let sample = t.sample.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample) {
            cx.err(
                "tracing.sample",
                format!("{sample} is not a share from 0 to 1"),
            );
        }
        let collector = upstream(&mut cx, "tracing.otlp", &t.otlp)?;
        Some(TracingSettings { collector, sample })
    });

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

    // Checked on what the file says, so they are reported alongside a queue route's other
    // problems.
    let queued = raw.routes.iter().find(|r| r.mode == Some(RawMode::Queue));
    if let Some(r) = queued {
        if !store.url.is_durable() {
            cx.err(
                format!("routes[{}].mode", r.name),
                "a queue route needs a durable store: store.url file:PATH or postgres://...",
            );
        }
        if let Some(a) = &admin {
            if a.token.is_none() && !a.addr.ip().is_loopback() {
                cx.err(
                    "admin.token",
                    "required when admin.addr is not loopback and a route is in queue mode (/api serves delivery bodies)",
                );
            }
        }
    }

    if !cx.problems.is_empty() {
        return Err(cx.problems);
    }
    let warnings = shared_keys_warnings(&raw.routes);
    Ok(Config {
        warnings,
        source: file.to_path_buf(),
        listeners,
        threads,
        grace_period,
        upgrade_socket_default: raw.upgrade_socket.is_none(),
        upgrade_socket,
        max_connections,
        max_inflight_body,
        admin,
        store,
        policy: Arc::new(RequestPolicy {
            routes,
            route_order,
            trusted_proxies,
            client_timeout,
            tracing,
        }),
    })
}

/// Routes with the same secret and the same upstream but separate idempotency scopes: a delivery
/// signed for one is also accepted by the other, and, keyed per route, can reach the app twice.
fn shared_keys_warnings(routes: &[RawRoute]) -> Vec<String> {
    let identity = |r: &RawRoute| {
        let secrets = r.signature.as_ref().map(|s| s.secrets.clone())?;
        let upstream = r.upstream.clone()?;
        let scope = r
            .idempotency
            .as_ref()
            .and_then(|i| i.scope.clone())
            .unwrap_or_else(|| r.name.clone());
        Some((secrets, upstream, scope))
    };
    let mut warnings = Vec::new();
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            if let (Some((sa, ua, scope_a)), Some((sb, ub, scope_b))) = (identity(a), identity(b)) {
                if sa == sb && ua == ub && scope_a != scope_b {
                    warnings.push(format!(
                        "routes[{}] and routes[{}] share a secret and an upstream but not an idempotency scope: a delivery signed for one is accepted by the other and could reach the app twice; give both idempotency.scope",
                        a.name, b.name
                    ));
                }
            }
        }
    }
    warnings
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
        StoreEngine::Memory
    } else if let Some(path) = url_text.strip_prefix("file:") {
        if path.is_empty() {
            cx.err(
                "store.url",
                "file: needs a path, e.g. file:/var/lib/hookgate/state.db",
            );
        }
        StoreEngine::File(cx.resolve(path))
    } else if url_text.starts_with("postgres://") || url_text.starts_with("postgresql://") {
        StoreEngine::Postgres(url_text)
    } else if url_text.starts_with("redis://") || url_text.starts_with("rediss://") {
        if let Err(e) = redis::Client::open(url_text.as_str()) {
            cx.err("store.url", format!("not a valid Redis URL: {e}"));
        }
        StoreEngine::Redis(url_text)
    } else {
        cx.err(
            "store.url",
            "expected \"memory\", file:PATH, redis://host:port/db or postgres://user@host/db",
        );
        StoreEngine::Memory
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
    if !valid_name(&r.name) {
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
    let upstream_timeout = r.upstream_timeout.map_or(DEFAULT_UPSTREAM_TIMEOUT, |d| d.0);
    if upstream_timeout.is_zero() {
        cx.err(format!("{at}.upstream_timeout"), "must be more than 0");
    }
    let mode = mode(cx, at, r, upstream_timeout);
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

    let limit = r
        .limit
        .as_ref()
        .and_then(|l| limit(cx, &format!("{at}.limit"), l));
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
    let idempotency = r.idempotency.as_ref().and_then(|i| {
        idempotency(
            cx,
            &format!("{at}.idempotency"),
            i,
            &r.name,
            upstream_timeout,
        )
    });
    if let (Some(Mode::Queue(q)), None) = (&mode, &events) {
        if let Some(d) = q.destinations.iter().find(|d| d.events.is_some()) {
            cx.err(
                format!("{at}.upstreams[{}].events", d.name),
                "filtering a destination by event needs the route's events.pointer",
            );
        }
    }

    if cx.problems.len() > before {
        return None;
    }
    Some(Route {
        index,
        name: Arc::from(r.name.as_str()),
        path,
        mode: mode?,
        https_only: r.https_only.unwrap_or(true),
        allow_ips,
        limit,
        max_body,
        signature,
        schema,
        events,
        idempotency,
    })
}

/// `forward` with its `upstream`, or `queue` with its `upstreams` and `delivery` policy.
fn mode(cx: &mut Ctx<'_>, at: &str, r: &RawRoute, upstream_timeout: Duration) -> Option<Mode> {
    match r.mode.unwrap_or(RawMode::Forward) {
        RawMode::Forward => {
            for (field, set) in [
                ("upstreams", r.upstreams.is_some()),
                ("delivery", r.delivery.is_some()),
            ] {
                if set {
                    cx.err(
                        format!("{at}.{field}"),
                        "only a queue route (mode: queue) has this",
                    );
                }
            }
            let Some(text) = &r.upstream else {
                cx.err(
                    format!("{at}.upstream"),
                    "a forward route needs an upstream URL",
                );
                return None;
            };
            let upstream = upstream(cx, &format!("{at}.upstream"), text)?;
            Some(Mode::Forward {
                upstream,
                timeout: upstream_timeout,
            })
        }
        RawMode::Queue => {
            if r.upstream.is_some() {
                cx.err(
                    format!("{at}.upstream"),
                    "a queue route lists its destinations under upstreams (name, url)",
                );
            }
            let raw_destinations = r.upstreams.as_deref().unwrap_or_default();
            if raw_destinations.is_empty() {
                cx.err(
                    format!("{at}.upstreams"),
                    "a queue route needs at least one destination (name, url)",
                );
            }
            let mut destinations = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (i, d) in raw_destinations.iter().enumerate() {
                let dat = format!("{at}.upstreams[{i}]");
                if !valid_name(&d.name) {
                    cx.err(
                        format!("{dat}.name"),
                        "a destination name is letters, digits, '-', '_' or '.'",
                    );
                }
                if !seen.insert(d.name.as_str()) {
                    cx.err(
                        format!("{dat}.name"),
                        format!("destination name {:?} is used twice", d.name),
                    );
                }
                if let Some(d) = super::destination::destination(cx, &dat, d) {
                    destinations.push(d);
                }
            }
            let policy = delivery_policy(cx, &format!("{at}.delivery"), r.delivery.as_ref());
            Some(Mode::Queue(Arc::new(QueueSettings {
                destinations,
                policy,
            })))
        }
    }
}

fn delivery_policy(cx: &mut Ctx<'_>, at: &str, d: Option<&RawDelivery>) -> DeliveryPolicy {
    let timeout = d
        .and_then(|d| d.timeout)
        .map_or(DEFAULT_DELIVERY_TIMEOUT, |t| t.0);
    if timeout.is_zero() {
        cx.err(format!("{at}.timeout"), "must be more than 0");
    }
    let retry = match d.and_then(|d| d.retry.as_ref()) {
        None => DEFAULT_RETRY
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect(),
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match super::units::parse_duration(t) {
                Ok(d) => Some(d),
                Err(e) => {
                    cx.err(format!("{at}.retry[{i}]"), e);
                    None
                }
            })
            .collect(),
    };
    let jitter = match d.and_then(|d| d.jitter.as_deref()) {
        None => DEFAULT_JITTER,
        Some(text) => match text
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
        {
            Some(p) if (0.0..=100.0).contains(&p) => p / 100.0,
            _ => {
                cx.err(
                    format!("{at}.jitter"),
                    format!("{text:?} is not a percentage from 0% to 100% (e.g. 10%)"),
                );
                DEFAULT_JITTER
            }
        },
    };
    let max_in_flight = d
        .and_then(|d| d.max_in_flight)
        .unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    if max_in_flight == 0 {
        cx.err(format!("{at}.max_in_flight"), "must be at least 1");
    }
    let rate = d
        .and_then(|d| d.rate.as_deref())
        .and_then(|text| rate(cx, &format!("{at}.rate"), text));
    let max_queued = d.and_then(|d| d.max_queued).unwrap_or(DEFAULT_MAX_QUEUED);
    if max_queued == 0 {
        cx.err(format!("{at}.max_queued"), "must be at least 1");
    }
    let retention = d
        .and_then(|d| d.retention)
        .map_or(DEFAULT_RETENTION, |t| t.0);
    let order_by = d.and_then(|d| d.order_by.clone());
    if let Some(p) = order_by.as_deref().filter(|p| !p.starts_with('/')) {
        cx.err(
            format!("{at}.order_by"),
            format!("{p:?} is not a JSON pointer (e.g. /pattern_id)"),
        );
    }
    let breaker = d.and_then(|d| d.breaker.as_ref()).map(|b| {
        if b.failures == 0 {
            cx.err(format!("{at}.breaker.failures"), "must be at least 1");
        }
        if b.cooldown.0.is_zero() {
            cx.err(format!("{at}.breaker.cooldown"), "must be more than 0");
        }
        BreakerPolicy {
            failures: b.failures,
            cooldown: b.cooldown.0,
        }
    });
    DeliveryPolicy {
        timeout,
        retry,
        jitter,
        max_in_flight,
        rate,
        max_queued,
        retention,
        order_by,
        breaker,
    }
}

/// A rate like `50/s`, `600/m` or `1000/h`, per second.
fn rate(cx: &mut Ctx<'_>, at: &str, text: &str) -> Option<f64> {
    let parsed = text.split_once('/').and_then(|(n, unit)| {
        let n: f64 = n.trim().parse().ok()?;
        let per = match unit.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        (n > 0.0 && n.is_finite()).then_some(n / per)
    });
    if parsed.is_none() {
        cx.err(
            at,
            format!("{text:?} is not a rate like 50/s, 600/m or 1000/h"),
        );
    }
    parsed
}

/// A route's `limit`: requests per client address; `burst` defaults to one second's worth.
fn limit(cx: &mut Ctx<'_>, at: &str, l: &RawLimit) -> Option<RateLimit> {
    let rate = rate(cx, &format!("{at}.rate"), &l.rate)?;
    let burst = match l.burst {
        Some(0) => {
            cx.err(format!("{at}.burst"), "must be at least 1");
            return None;
        }
        Some(b) => b as f64,
        None => rate.ceil().max(1.0),
    };
    Some(RateLimit::new(rate, burst))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn upstream(cx: &mut Ctx<'_>, at: &str, text: &str) -> Option<Upstream> {
    let url = cx.expand(at, text);
    upstream_url(cx, at, url)
}

/// An app's URL, `${VAR}`s already expanded.
pub(super) fn upstream_url(cx: &mut Ctx<'_>, at: &str, url: String) -> Option<Upstream> {
    if let Some(scheme) = super::destination::broker_scheme(&url) {
        cx.err(
            at,
            format!(
                "{scheme}:// is a broker destination: queue routes only (mode: queue, upstreams)"
            ),
        );
        return None;
    }
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
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        cx.err(
            at,
            "the upstream is scheme://host:port only; requests keep their own path",
        );
        return None;
    }
    match super::endpoint::resolve(&uri) {
        Ok(e) => Some(Upstream {
            addr: e.addr,
            tls: e.tls,
            host: e.host,
            url,
        }),
        Err(message) => {
            cx.err(at, format!("{url:?}: {message}"));
            None
        }
    }
}

fn signature(cx: &mut Ctx<'_>, at: &str, s: &RawSignature) -> Option<Box<dyn signature::Scheme>> {
    let secrets: Vec<String> = s
        .secrets
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let field = format!("{at}.secrets[{i}]");
            let v = cx.expand(&field, v);
            match v.strip_prefix("file:") {
                Some(path) => cx.secret_file(&field, path),
                None => v,
            }
        })
        .collect();
    let header = s
        .header
        .as_deref()
        .map(|h| cx.expand(&format!("{at}.header"), h));
    let prefix = s
        .prefix
        .as_deref()
        .map(|p| cx.expand(&format!("{at}.prefix"), p));
    let public_url = s
        .public_url
        .as_deref()
        .map(|u| cx.expand(&format!("{at}.public_url"), u));
    let Some(scheme) = SchemeName::parse(&s.scheme) else {
        let known: Vec<_> = SchemeName::all().map(SchemeName::as_str).collect();
        cx.err(
            format!("{at}.scheme"),
            format!(
                "unknown scheme {:?}; expected one of {}",
                s.scheme,
                known.join(", ")
            ),
        );
        return None;
    };
    let settings = SchemeSettings {
        scheme,
        secrets: &secrets,
        header: header.as_deref(),
        algorithm: s.algorithm.as_deref(),
        encoding: s.encoding.as_deref(),
        prefix: prefix.as_deref(),
        tolerance: s.tolerance.map(|t| t.0),
        public_url: public_url.as_deref(),
        handshake: s.handshake.unwrap_or(false),
    };
    match signature::build(&settings) {
        Ok(v) => Some(v),
        Err(errors) => {
            for e in errors {
                cx.err(format!("{at}.{}", e.field), e.message);
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
    route: &str,
    upstream_timeout: Duration,
) -> Option<Idempotency> {
    let keys = i.key.as_slice();
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
    let scope = match &i.scope {
        None => route.to_string(),
        Some(s) => {
            let s = cx.expand(&format!("{at}.scope"), s);
            if !valid_name(&s) {
                cx.err(
                    format!("{at}.scope"),
                    "a scope is letters, digits, '-', '_' or '.'",
                );
            }
            s
        }
    };
    Some(Idempotency {
        parts,
        scope: Arc::from(scope),
        ttl,
        lease,
    })
}
