//! The ordered checks of PRODUCT.md §3, in one place. Nothing here knows Pingora: each step takes a
//! plain view of the request and returns `Ok` or the answer that ends it.
//!
//! The order is the contract: the first failing step answers and later steps never run.
//! Steps on the head run before a byte of body is read (so a refused sender is not made to
//! upload, and `Expect: 100-continue` is answered only for deliveries that may pass); steps on
//! the body run before the upstream is contacted at all.

pub mod address;
pub mod destinations;
pub mod events;
pub mod framing;
pub mod idempotency;
pub mod limit;
pub mod method;
pub mod parse;
pub mod schema;
pub mod signature;
pub mod size;
pub mod transport;

use crate::config::{RequestPolicy, Route};
use crate::rejection::{Answer, Rejection};
use http::{HeaderMap, Method};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub use address::Client;
pub use idempotency::DeliveryKey;

/// The request head as the checks see it.
pub struct Head<'a> {
    pub method: &'a Method,
    /// Path without the query string.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The socket peer, IPv4-mapped addresses already canonical.
    pub peer: IpAddr,
    pub tls: bool,
}

/// A head that passed every head step.
pub struct Admitted<'g> {
    pub route: &'g Arc<Route>,
    pub client: Client,
}

/// route → method → client address → transport → rate limit → declared size → signature present.
pub fn check_head<'g>(
    policy: &'g RequestPolicy,
    head: &Head<'_>,
) -> Result<Admitted<'g>, (Option<&'g Arc<Route>>, Rejection)> {
    let route = policy
        .route(head.path)
        .ok_or((None, Rejection::RouteNotFound))?;
    let fail = |r| (Some(route), r);
    method::check(head.method).map_err(fail)?;
    let client = address::resolve(head.peer, head.tls, head.headers, &policy.trusted_proxies);
    address::check(route.allow_ips.as_ref(), &client).map_err(fail)?;
    transport::check(route.https_only, &client).map_err(fail)?;
    if let Some(l) = &route.limit {
        // An address a trusted proxy forwarded as garbage is limited with the proxy's bucket.
        let addr = client.addr.unwrap_or(head.peer.to_canonical());
        limit::check(l, addr, Instant::now()).map_err(fail)?;
    }
    size::check_declared(head.headers, route.max_body).map_err(fail)?;
    signature::check_present(route.signature.as_deref(), head.headers).map_err(fail)?;
    Ok(Admitted { route, client })
}

/// A body that passed every body step.
pub struct Checked {
    /// The idempotency key, where the route has one.
    pub key: Option<DeliveryKey>,
    /// The event name at the route's `events.pointer`, where it is a string.
    pub event: Option<String>,
    /// Queue routes: the destinations this delivery goes to.
    pub selection: destinations::Selection,
    /// Queue routes with `order_by`: the value deliveries are ordered by, where the body has it.
    pub order_key: Option<String>,
}

/// Only queue routes keep the event (the delivery log shows it, destinations filter on it).
fn event_name(route: &Route, json: Option<&serde_json::Value>) -> Option<String> {
    if !matches!(route.mode, crate::config::Mode::Queue(_)) {
        return None;
    }
    let pointer = &route.events.as_ref()?.pointer;
    json?.pointer(pointer)?.as_str().map(str::to_string)
}

/// The value at a queue route's `order_by` pointer, as [`key_text`] writes it.
fn order_key(route: &Route, json: Option<&serde_json::Value>) -> Option<String> {
    let crate::config::Mode::Queue(q) = &route.mode else {
        return None;
    };
    json?.pointer(q.policy.order_by.as_deref()?).map(key_text)
}

/// A body value used as a key (`order_by`, a Kafka record's `key`): a string as it is, anything
/// else as its JSON text, so `"42"` and `42` are different keys.
pub fn key_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// signature (and a verification request answered) → parse → schema → events → idempotency key. Runs on the complete body, whose size
/// the body reader already bounded.
pub fn check_body(
    route: &Route,
    headers: &HeaderMap,
    body: &[u8],
    received_at: SystemTime,
) -> Result<Checked, Answer> {
    signature::check(route.signature.as_deref(), headers, body, received_at)?;
    // A provider's verification request is answered here, once it is known to be genuine.
    if let Some(h) = route
        .signature
        .as_deref()
        .and_then(|s| s.handshake(headers, body))
    {
        return Err(Answer::Handshake(h));
    }
    let json = if route.needs_json() {
        Some(parse::parse(body)?)
    } else {
        None
    };
    if let (Some(schema), Some(json)) = (&route.schema, &json) {
        schema::check(schema, json)?;
    }
    if let (Some(events), Some(json)) = (&route.events, &json) {
        events::check(events, json)?;
    }
    let key = match &route.idempotency {
        Some(i) => Some(idempotency::key(i, headers, json.as_ref())?),
        None => None,
    };
    let event = event_name(route, json.as_ref());
    let selection = destinations::select(route, headers, json.as_ref(), event.as_deref());
    Ok(Checked {
        key,
        event,
        selection,
        order_key: order_key(route, json.as_ref()),
    })
}
