//! What every engine promises, as scenarios run against `&dyn Store` and `&dyn Queue`: each
//! engine's tests run them unchanged on a fresh store (memory and Redis: the claims; the file
//! store and Postgres: the claims and the queue). An engine added later passes them as they are.

use super::queue::{
    unix_ms, AttemptResult, DeliveryId, DeliveryState, DestinationState, Enqueued, ListFilter,
    NewDelivery, Next, Queue,
};
use super::{Claim, Store};
use crate::pipeline::DeliveryKey;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The key `n` of `scope`: like a real key's hash, it differs between scopes.
fn key(scope: &str, n: u128) -> DeliveryKey {
    let scope_hash = scope.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    DeliveryKey {
        scope: Arc::from(scope),
        id: (u128::from(scope_hash) << 64) | n,
        lease: Duration::from_secs(30),
        ttl: Duration::from_secs(3600),
    }
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// A claim is held by one owner at a time; delivered is remembered; released is free again;
/// an owner whose claim was taken over cannot decide it.
pub async fn claims(store: &dyn Store) {
    let lease = Duration::from_secs(30);
    let ttl = Duration::from_secs(3600);
    let (a, b) = (key("conformance", 1), key("conformance", 2));

    let Claim::Claimed(first) = store.claim(&a, lease).await.unwrap() else {
        panic!("a fresh key is claimed")
    };
    assert!(
        matches!(store.claim(&a, lease).await.unwrap(), Claim::InFlight { retry_after } if retry_after <= lease),
        "a claimed key is in flight, for at most its lease"
    );
    store.complete(&a, first, ttl).await.unwrap();
    assert_eq!(store.claim(&a, lease).await.unwrap(), Claim::Delivered);

    let Claim::Claimed(second) = store.claim(&b, lease).await.unwrap() else {
        panic!("another key is its own")
    };
    store.release(&b, second).await.unwrap();
    let Claim::Claimed(third) = store.claim(&b, lease).await.unwrap() else {
        panic!("a released key is claimed again")
    };
    // The first owner's token no longer decides anything.
    store.release(&b, second).await.unwrap();
    assert!(matches!(
        store.claim(&b, lease).await.unwrap(),
        Claim::InFlight { .. }
    ));
    store.complete(&b, second, ttl).await.unwrap();
    assert!(matches!(
        store.claim(&b, lease).await.unwrap(),
        Claim::InFlight { .. }
    ));
    store.complete(&b, third, ttl).await.unwrap();
    assert_eq!(store.claim(&b, lease).await.unwrap(), Claim::Delivered);

    // A lease that runs out frees the key: its owner died.
    let c = key("conformance", 3);
    let short = Duration::from_millis(200);
    assert!(matches!(
        store.claim(&c, short).await.unwrap(),
        Claim::Claimed(_)
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        matches!(store.claim(&c, lease).await.unwrap(), Claim::Claimed(_)),
        "a claim is free once its lease ran out"
    );
    store.ping().await.unwrap();
}

fn delivery(route: &str, key_id: Option<u128>, destinations: &[&str]) -> NewDelivery {
    NewDelivery {
        route: route.into(),
        key: key_id.map(|id| key(route, id)),
        event: Some("job.completed".into()),
        target: "/webhooks/q".into(),
        headers: Bytes::from_static(b"content-type: application/json\r\n"),
        body: Bytes::from(format!(r#"{{"route":"{route}","key":{key_id:?}}}"#)),
        destinations: destinations.iter().map(|d| d.to_string()).collect(),
        order_key: None,
        received_ms: now_ms(),
        max_queued: 1_000,
    }
}

async fn queued(q: &dyn Queue, new: NewDelivery) -> DeliveryId {
    match q.enqueue(new).await.unwrap() {
        Enqueued::Queued(id) => id,
        other => panic!("not queued: {other:?}"),
    }
}

fn outcome(
    id: DeliveryId,
    destination: &str,
    attempt: u32,
    status: Option<u16>,
    next: Next,
) -> AttemptResult {
    AttemptResult {
        id,
        destination: destination.into(),
        attempt,
        started_ms: now_ms(),
        duration_ms: 3,
        status,
        error: status.is_none().then(|| "unavailable".to_string()),
        next,
        counts: true,
    }
}

const LEASE: Duration = Duration::from_secs(30);

/// Accept, take, record: a key is queued once; each destination is taken once while it is
/// held, with its stored bytes; outcomes move each destination on its own; the log shows them.
pub async fn accept_take_record(q: &dyn Queue) {
    let route = "conf-flow";
    let new = delivery(route, Some(10), &["app", "analytics"]);
    let (headers, body) = (new.headers.clone(), new.body.clone());
    let id = queued(q, new).await;
    assert_eq!(
        q.enqueue(delivery(route, Some(10), &["app", "analytics"]))
            .await
            .unwrap(),
        Enqueued::Duplicate,
        "a key accepted once is a duplicate after"
    );

    let taken = q.take_due(route, "app", now_ms(), 10, LEASE).await.unwrap();
    assert_eq!(taken.len(), 1);
    let a = &taken[0];
    assert_eq!((a.id, a.destination.as_str(), a.attempt), (id, "app", 1));
    assert_eq!((&a.headers, &a.body), (&headers, &body));
    assert_eq!(a.target, "/webhooks/q");
    assert!(
        q.take_due(route, "app", now_ms(), 10, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "an attempt held by its lease is not handed out twice"
    );
    q.record(outcome(id, "app", 1, Some(200), Next::Delivered))
        .await
        .unwrap();

    let taken = q
        .take_due(route, "analytics", now_ms(), 10, LEASE)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    let first_scheduled = taken[0].scheduled;
    let retry_at = now_ms() + 60_000;
    q.record(outcome(
        id,
        "analytics",
        1,
        Some(503),
        Next::RetryAt(retry_at),
    ))
    .await
    .unwrap();
    assert_eq!(
        q.next_due(route, "analytics").await.unwrap(),
        Some(retry_at)
    );
    assert!(q
        .take_due(route, "analytics", now_ms(), 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    // Due again at its time, numbered after the first.
    let again = q
        .take_due(route, "analytics", retry_at, 10, LEASE)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].attempt, again[0].scheduled),
        (2, first_scheduled + 1)
    );

    let detail = q
        .get(id)
        .await
        .unwrap()
        .expect("the delivery is in the log");
    assert_eq!(detail.summary.route, route);
    assert_eq!(detail.summary.state, DeliveryState::Pending);
    let dest = |name: &str| {
        detail
            .summary
            .destinations
            .iter()
            .find(|d| d.name == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (dest("app").state, dest("app").last_status),
        (DestinationState::Delivered, Some(200))
    );
    assert_eq!(
        (dest("analytics").state, dest("analytics").last_status),
        (DestinationState::Pending, Some(503))
    );
    assert_eq!(detail.attempts.len(), 2);
    assert_eq!(q.body(id).await.unwrap(), Some(body));

    q.record(outcome(id, "analytics", 2, Some(204), Next::Delivered))
        .await
        .unwrap();
    let detail = q.get(id).await.unwrap().unwrap();
    assert_eq!(detail.summary.state, DeliveryState::Delivered);
    assert_eq!(q.next_due(route, "analytics").await.unwrap(), None);
}

/// An attempt whose outcome is never recorded (its process died) is handed out again once its
/// lease ran out, numbered after the one that was cut off.
pub async fn a_lease_that_runs_out_hands_the_attempt_out_again(q: &dyn Queue) {
    let route = "conf-lease";
    let id = queued(q, delivery(route, None, &["app"])).await;
    let short = Duration::from_millis(300);
    let first = q.take_due(route, "app", now_ms(), 10, short).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(q
        .take_due(route, "app", now_ms(), 10, short)
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = q.take_due(route, "app", now_ms(), 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1, "the attempt is handed out after its lease");
    assert_eq!((again[0].id, again[0].attempt), (id, 2));
}

/// `max_queued` counts a route's unfinished deliveries: beyond it `Full`, and room again once
/// one is finished.
pub async fn max_queued_bounds_a_route(q: &dyn Queue) {
    let route = "conf-full";
    let bounded = |k| NewDelivery {
        max_queued: 2,
        ..delivery(route, Some(k), &["app"])
    };
    let first = queued(q, bounded(1)).await;
    queued(q, bounded(2)).await;
    assert_eq!(q.enqueue(bounded(3)).await.unwrap(), Enqueued::Full);
    // Refused, not kept: its key is not claimed.
    let taken = q.take_due(route, "app", now_ms(), 10, LEASE).await.unwrap();
    let attempt = taken.iter().find(|a| a.id == first).unwrap().attempt;
    q.record(outcome(first, "app", attempt, Some(200), Next::Delivered))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match q.enqueue(bounded(3)).await.unwrap() {
            Enqueued::Queued(_) => break,
            Enqueued::Full if std::time::Instant::now() < deadline => {
                // Engines may count a route's open deliveries at most once a second.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("a finished delivery makes room: {other:?}"),
        }
    }
}

/// Retention: finished deliveries (delivered or dead) go, pending ones stay.
pub async fn purge_keeps_what_is_pending(q: &dyn Queue) {
    let route = "conf-purge";
    let delivered = queued(q, delivery(route, None, &["app"])).await;
    let dead = queued(q, delivery(route, None, &["app"])).await;
    let pending = queued(q, delivery(route, None, &["app"])).await;
    let taken = q.take_due(route, "app", now_ms(), 10, LEASE).await.unwrap();
    assert_eq!(taken.len(), 3);
    q.record(outcome(delivered, "app", 1, Some(200), Next::Delivered))
        .await
        .unwrap();
    q.record(outcome(dead, "app", 1, Some(500), Next::Dead))
        .await
        .unwrap();
    q.record(outcome(
        pending,
        "app",
        1,
        None,
        Next::RetryAt(now_ms() + 60_000),
    ))
    .await
    .unwrap();
    assert_eq!(
        q.get(dead).await.unwrap().unwrap().summary.state,
        DeliveryState::Dead
    );

    let mut purged = 0;
    let until = now_ms() + 1_000;
    loop {
        let n = q.purge(until, 500).await.unwrap();
        if n == 0 {
            break;
        }
        purged += n;
    }
    assert!(purged >= 2, "both finished deliveries purged ({purged})");
    assert!(q.get(delivered).await.unwrap().is_none());
    assert!(q.get(dead).await.unwrap().is_none());
    assert!(q.get(pending).await.unwrap().is_some());
}

/// The delivery log: newest first, filtered by route, state and destination, paged by `before`;
/// a dead destination retried by hand is due at once.
pub async fn the_log_filters_pages_and_retries(q: &dyn Queue) {
    let (route, other) = ("conf-log", "conf-log-other");
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(queued(q, delivery(route, None, &["app", "audit"])).await);
    }
    queued(q, delivery(other, None, &["app"])).await;
    let dead = ids[1];
    let taken = q.take_due(route, "app", now_ms(), 10, LEASE).await.unwrap();
    assert_eq!(taken.len(), 5);
    let fresh = taken[0].scheduled;
    q.record(outcome(dead, "app", 1, Some(500), Next::Dead))
        .await
        .unwrap();

    let list = |filter: ListFilter| async move { q.list(filter).await.unwrap() };
    let of_route = ListFilter {
        route: Some(route.into()),
        limit: 50,
        ..ListFilter::default()
    };
    let (all, next) = list(of_route.clone()).await;
    let listed: Vec<String> = all.iter().map(|d| d.id.clone()).collect();
    let newest_first: Vec<String> = ids.iter().rev().map(|i| i.to_string()).collect();
    assert_eq!(listed, newest_first);
    assert!(next.is_none());

    let (page, next) = list(ListFilter {
        limit: 2,
        ..of_route.clone()
    })
    .await;
    assert_eq!(page.len(), 2);
    let (rest, _) = list(ListFilter {
        before: next,
        limit: 50,
        ..of_route.clone()
    })
    .await;
    assert_eq!(
        rest.len(),
        3,
        "the next page starts after the last one shown"
    );
    assert_eq!(rest[0].id, ids[2].to_string());

    let (dead_only, _) = list(ListFilter {
        state: Some(DeliveryState::Dead),
        ..of_route.clone()
    })
    .await;
    assert_eq!(
        dead_only.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        [dead.to_string()]
    );
    let (audit, _) = list(ListFilter {
        destination: Some("audit".into()),
        limit: 50,
        ..ListFilter::default()
    })
    .await;
    assert_eq!(audit.len(), 5, "only the route with an audit destination");

    assert_eq!(q.retry(dead, Some("app"), now_ms()).await.unwrap(), Some(1));
    let again = q.take_due(route, "app", now_ms(), 10, LEASE).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|a| (a.id, a.scheduled))
            .collect::<Vec<_>>(),
        [(dead, fresh)],
        "retried by hand: due now, with a fresh schedule"
    );
    assert_eq!(
        q.retry(DeliveryId(1), None, now_ms()).await.unwrap(),
        None,
        "no such delivery"
    );
}

/// Every queue scenario, in turn, on one store.
pub async fn queue(q: &dyn Queue) {
    accept_take_record(q).await;
    a_lease_that_runs_out_hands_the_attempt_out_again(q).await;
    max_queued_bounds_a_route(q).await;
    purge_keeps_what_is_pending(q).await;
    the_log_filters_pages_and_retries(q).await;
}
