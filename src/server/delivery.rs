//! One forwarded delivery once every check passed: claim its key, exchange with the app, settle
//! the claim by the answer (delivered on 2xx, released otherwise so the sender's retry goes
//! through). Knows nothing of the sender's session, so any caller can run it.

use super::active::RouteState;
use super::forward::{self, UpstreamAnswer, UpstreamLink};
use super::runtime::Runtime;
use crate::config::{OnError, Route};
use crate::metrics::{status_class, Metrics, StoreOp};
use crate::pipeline::DeliveryKey;
use crate::rejection::{Answer, Rejection};
use crate::store::{Claim, ClaimToken, StoreError};
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::time::Instant;

/// Claims `key`, delivers `head` + `body` over `link` and settles the claim. The app's answer,
/// or what the gateway answers instead (duplicate, in progress, store or upstream failure).
pub async fn forward(
    rt: &Runtime,
    route: &Route,
    state: &RouteState,
    link: &UpstreamLink,
    key: Option<&DeliveryKey>,
    head: BytesMut,
    body: Bytes,
) -> Result<UpstreamAnswer, Answer> {
    let claim = match key {
        Some(k) => claim(rt, route, k).await?,
        None => None,
    };
    let t = Instant::now();
    let result = forward::exchange(&rt.connector, link, head, body).await;
    state.upstream_duration.observe(t.elapsed().as_secs_f64());
    let status = result.as_ref().ok().map(|a| a.header.status.as_u16());
    match status {
        Some(200..=299) => state.upstream_2xx.inc(),
        Some(s) => rt
            .metrics
            .upstream_responses
            .with_label_values(&[&route.name, status_class(s)])
            .inc(),
        None => {}
    }
    if let (Some(key), Some(token)) = (key, claim) {
        settle(
            rt,
            key,
            token,
            status.is_some_and(|s| (200..300).contains(&s)),
        )
        .await;
    }
    result.map_err(|e| {
        tracing::warn!(route = %route.name, error = %e, "upstream exchange failed");
        Answer::Reject(e.rejection())
    })
}

/// Claims the key; a store failure answers 503 or, under `on_error: allow`, forwards undeduped.
async fn claim(
    rt: &Runtime,
    route: &Route,
    key: &DeliveryKey,
) -> Result<Option<ClaimToken>, Answer> {
    match timed(&rt.metrics, StoreOp::Claim, rt.store.claim(key, key.lease)).await {
        Ok(Claim::Claimed(token)) => Ok(Some(token)),
        Ok(Claim::Delivered) => Err(Answer::AlreadyProcessed),
        Ok(Claim::InFlight { retry_after }) => {
            Err(Rejection::DeliveryInProgress { retry_after }.into())
        }
        Err(_) => match rt.on_error {
            OnError::Reject => Err(Rejection::StoreUnavailable.into()),
            OnError::Allow => {
                rt.metrics
                    .dedupe_skipped
                    .with_label_values(&[&route.name])
                    .inc();
                Ok(None)
            }
        },
    }
}

/// Delivered (kept `ttl`) on a 2xx, released otherwise.
async fn settle(rt: &Runtime, key: &DeliveryKey, token: ClaimToken, delivered: bool) {
    let _ = if delivered {
        timed(
            &rt.metrics,
            StoreOp::Complete,
            rt.store.complete(key, token, key.ttl),
        )
        .await
    } else {
        timed(&rt.metrics, StoreOp::Release, rt.store.release(key, token)).await
    };
}

/// Runs one store operation, observing its duration and counting and logging its failure.
pub async fn timed<T>(
    metrics: &Metrics,
    op: StoreOp,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let t = Instant::now();
    let result = operation.await;
    metrics.store_op(op).observe(t.elapsed().as_secs_f64());
    if let Err(e) = &result {
        metrics.store_errors.with_label_values(&[op.label()]).inc();
        match e {
            // Neither passes by itself: someone has to make room or look at the record.
            StoreError::Full(_) | StoreError::Corrupt(_) => {
                tracing::error!(operation = op.label(), error = %e, "store operation failed");
            }
            StoreError::Unavailable(_) | StoreError::Setup(_) => {
                tracing::warn!(operation = op.label(), error = %e, "store operation failed");
            }
        }
    }
    result
}
