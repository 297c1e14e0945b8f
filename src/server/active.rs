//! The config new requests run on, plus what the request path and the queue worker derive from
//! it once per (re)load instead of once per request: each route's upstream connections and the
//! metric series every delivery touches.

use super::forward::UpstreamLink;
use crate::config::{DestinationTarget, Mode, QueueSettings, RequestPolicy, Route};
use crate::destination::{self, Publisher};
use crate::metrics::Metrics;
use prometheus::{Histogram, IntCounter};
use std::sync::Arc;

pub struct ActiveConfig {
    pub policy: Arc<RequestPolicy>,
    /// Indexed by `Route::index`.
    routes: Vec<RouteState>,
}

/// A route's way to its app(s) and its hot metric series.
pub struct RouteState {
    pub dispatch: Dispatch,
    pub forwarded: IntCounter,
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    pub upstream_2xx: IntCounter,
}

/// What a route does with a clean delivery, built once per (re)load from the route's mode: the
/// request path and the worker read this alone, so a mode and a link cannot disagree.
pub enum Dispatch {
    /// Forward: the app's link (boxed: a link is large, a queue route's dispatch is not).
    Forward(Box<UpstreamLink>),
    /// Queue: the route's settings and a link per destination.
    Queue(QueueDispatch),
}

pub struct QueueDispatch {
    pub settings: Arc<QueueSettings>,
    /// One per `settings.destinations`, in the same order.
    links: Vec<DestinationLink>,
}

/// How the worker reaches one queue destination.
pub enum DestinationLink {
    Http(Box<UpstreamLink>),
    Broker(Arc<dyn Publisher>),
}

impl ActiveConfig {
    pub fn new(policy: Arc<RequestPolicy>, metrics: &Metrics) -> Self {
        let routes = policy
            .route_order
            .iter()
            .map(|r| {
                let name: &str = &r.name;
                let dispatch = match &r.mode {
                    Mode::Forward { upstream, timeout } => {
                        Dispatch::Forward(Box::new(UpstreamLink::new(upstream, *timeout)))
                    }
                    Mode::Queue(q) => Dispatch::Queue(QueueDispatch {
                        settings: q.clone(),
                        links: q
                            .destinations
                            .iter()
                            .map(|d| match &d.target {
                                DestinationTarget::Http(upstream) => DestinationLink::Http(
                                    Box::new(UpstreamLink::new(upstream, q.policy.timeout)),
                                ),
                                DestinationTarget::Broker(broker) => DestinationLink::Broker(
                                    destination::publisher(broker, q.policy.timeout),
                                ),
                            })
                            .collect(),
                    }),
                };
                RouteState {
                    dispatch,
                    forwarded: metrics.requests.with_label_values(&[name, "forwarded"]),
                    request_duration: metrics.request_duration.with_label_values(&[name]),
                    upstream_duration: metrics.upstream_duration.with_label_values(&[name]),
                    upstream_2xx: metrics.upstream_responses.with_label_values(&[name, "2xx"]),
                }
            })
            .collect();
        Self { policy, routes }
    }

    /// Every upstream link (for the idle-connection sweep).
    pub fn links(&self) -> impl Iterator<Item = &UpstreamLink> {
        self.routes.iter().flat_map(|r| match &r.dispatch {
            Dispatch::Forward(link) => vec![&**link],
            Dispatch::Queue(q) => q
                .links
                .iter()
                .filter_map(|l| match l {
                    DestinationLink::Http(link) => Some(&**link),
                    DestinationLink::Broker(_) => None,
                })
                .collect(),
        })
    }

    /// The state of `route`, which must belong to this config's policy.
    pub fn route(&self, route: &Route) -> &RouteState {
        &self.routes[route.index]
    }

    /// A queue route's destination link by name.
    pub fn destination(&self, route: &Route, name: &str) -> Option<&DestinationLink> {
        let Dispatch::Queue(q) = &self.route(route).dispatch else {
            return None;
        };
        let i = q
            .settings
            .destinations
            .iter()
            .position(|d| &*d.name == name)?;
        q.links.get(i)
    }
}
