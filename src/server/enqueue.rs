//! Accepting a queue route's delivery (PRODUCT.md §9): its key claimed and the delivery stored in
//! one durable write; `queued` only once that write is on disk.

use super::delivery::timed;
use super::runtime::Runtime;
use crate::config::{QueueSettings, Route};
use crate::metrics::StoreOp;
use crate::pipeline::Checked;
use crate::rejection::{Answer, Rejection};
use crate::store::queue::{Enqueued, NewDelivery};
use bytes::Bytes;

/// Stores the delivery for the destinations its event goes to, and says what the sender hears.
#[allow(clippy::too_many_arguments)]
pub async fn enqueue(
    rt: &Runtime,
    route: &Route,
    queue: &QueueSettings,
    checked: Checked,
    target: &str,
    headers: Bytes,
    body: Bytes,
    received_ms: u64,
) -> Answer {
    // Queue routes need a durable store; `check` refuses one without, so this is a safeguard.
    let Some(store) = &rt.queue else {
        return Rejection::StoreUnavailable.into();
    };
    let Checked {
        key,
        event,
        selection,
        order_key,
    } = checked;
    let new = NewDelivery {
        route: route.name.to_string(),
        key,
        event,
        target: target.to_string(),
        headers,
        body,
        destinations: selection.destinations,
        order_key,
        received_ms,
        max_queued: queue.policy.max_queued,
    };
    // `on_error: allow` does not apply: a delivery that is not stored must not be answered 200.
    match timed(&rt.metrics, StoreOp::Enqueue, store.enqueue(new)).await {
        Ok(Enqueued::Queued(id)) => {
            rt.queue_wake.notify_one();
            for (destination, error) in &selection.failed_conditions {
                tracing::warn!(route = %route.name, destination = %destination, delivery_id = %id, error = %error, "a destination's when could not be evaluated; not sent there");
            }
            Answer::Queued {
                delivery_id: id.to_string(),
            }
        }
        Ok(Enqueued::Duplicate) => Answer::AlreadyProcessed,
        Ok(Enqueued::InFlight { retry_after }) => {
            Rejection::DeliveryInProgress { retry_after }.into()
        }
        Ok(Enqueued::Full) => Rejection::QueueFull.into(),
        Err(_) => Rejection::StoreUnavailable.into(),
    }
}
