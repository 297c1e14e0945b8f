//! What the delivery log shows of each queue destination (PRODUCT.md §10): how many of its
//! deliveries are pending and dead, and its breaker (`GET /api/destinations`, and each
//! destination of `GET /api/deliveries/{id}`).

use super::runtime::Runtime;
use crate::config::Route;
use crate::store::breaker::BreakerView;
use crate::store::queue::rfc3339;
use crate::store::StoreError;
use serde_json::{json, Value};
use std::collections::HashMap;

/// `route`'s `destination`'s breaker as JSON: `null` without one (or for a name the config
/// does not have).
pub async fn breaker(rt: &Runtime, route: &str, destination: &str) -> Result<Value, StoreError> {
    let active = rt.active.load();
    let Some(route) = active.policy.route_order.iter().find(|r| &*r.name == route) else {
        return Ok(Value::Null);
    };
    breaker_of(rt, route, destination).await
}

async fn breaker_of(rt: &Runtime, route: &Route, destination: &str) -> Result<Value, StoreError> {
    let Some(q) = route.queue() else {
        return Ok(Value::Null);
    };
    if q.policy.breaker.is_none() || !q.has_destination(destination) {
        return Ok(Value::Null);
    }
    let view = rt.breakers.get(&route.name, destination).view().await?;
    Ok(match view {
        BreakerView::Closed { failures } => json!({ "state": "closed", "failures": failures }),
        BreakerView::Open { until_ms } => json!({ "state": "open", "until": rfc3339(until_ms) }),
        BreakerView::Probing => json!({ "state": "probing" }),
    })
}

/// `GET /api/destinations`: every destination of every queue route, in config order.
pub async fn list(rt: &Runtime) -> Result<Value, StoreError> {
    let Some(queue) = &rt.queue else {
        return Ok(json!({ "destinations": [] }));
    };
    let counts: HashMap<(String, String), (i64, i64)> = queue
        .stats()
        .await?
        .into_iter()
        .map(|s| ((s.route, s.destination), (s.pending, s.dead)))
        .collect();
    let active = rt.active.load();
    let mut destinations = Vec::new();
    for route in &active.policy.route_order {
        let Some(q) = route.queue() else {
            continue;
        };
        for d in &q.destinations {
            let (pending, dead) = counts
                .get(&(route.name.to_string(), d.name.to_string()))
                .copied()
                .unwrap_or_default();
            destinations.push(json!({
                "route": &*route.name,
                "name": &*d.name,
                "pending": pending,
                "dead": dead,
                "breaker": breaker_of(rt, route, &d.name).await?,
            }));
        }
    }
    Ok(json!({ "destinations": destinations }))
}
