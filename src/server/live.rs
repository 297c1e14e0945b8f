//! What new requests run on: the current config plus what the request path derives from it once
//! per (re)load instead of once per request — each route's upstream peer and metric handles.

use super::forward;
use super::pool::Pool;
use crate::config::{Gateway, Route};
use crate::metrics::Metrics;
use pingora_core::upstreams::peer::HttpPeer;
use prometheus::{Histogram, IntCounter};
use std::sync::Arc;

pub struct Live {
    pub gateway: Arc<Gateway>,
    /// Indexed by `Route::index`.
    routes: Vec<RouteState>,
}

/// A route's upstream peer and the metric series every forwarded delivery touches.
pub struct RouteState {
    pub peer: HttpPeer,
    pub pool: Pool,
    pub forwarded: IntCounter,
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    pub upstream_2xx: IntCounter,
}

impl Live {
    pub fn new(gateway: Arc<Gateway>, metrics: &Metrics) -> Self {
        let routes = gateway
            .route_order
            .iter()
            .map(|r| {
                let name: &str = &r.name;
                RouteState {
                    peer: forward::peer_for(&r.upstream),
                    pool: Pool::default(),
                    forwarded: metrics.requests.with_label_values(&[name, "forwarded"]),
                    request_duration: metrics.request_duration.with_label_values(&[name]),
                    upstream_duration: metrics.upstream_duration.with_label_values(&[name]),
                    upstream_2xx: metrics.upstream_responses.with_label_values(&[name, "2xx"]),
                }
            })
            .collect();
        Self { gateway, routes }
    }

    /// Every route's state, in file order.
    pub fn routes(&self) -> &[RouteState] {
        &self.routes
    }

    /// The state of `route`, which must belong to this `Live`'s gateway.
    pub fn route(&self, route: &Route) -> &RouteState {
        &self.routes[route.index]
    }
}
