//! The Postgres store's group commits, driven through the library's store: acceptances and
//! attempts' outcomes that arrive together are written as one statement each, and what one of
//! them holds must come out as if each had been written alone.

use crate::harness::TestDatabase;
use hookgate::pipeline::DeliveryKey;
use hookgate::store::postgres::PostgresStore;
use hookgate::store::queue::{
    unix_ms, AttemptResult, DeliveryId, DeliveryLog, DeliveryState, DueAttempt, Enqueued,
    NewDelivery, Next, Queue, QueueGauges,
};
use std::time::{Duration, Instant, SystemTime};

/// A store on `db` whose schema is migrated.
async fn ready_store(db: &TestDatabase) -> PostgresStore {
    let store = PostgresStore::connect(&db.url()).expect("the store starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.stats().await.is_err() {
        assert!(Instant::now() < deadline, "the schema is never migrated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store
}

/// A delivery of route `q`, with an idempotency key `key` if any, to `destinations`.
fn delivery(now: u64, key: Option<u128>, destinations: &[&str]) -> NewDelivery {
    NewDelivery {
        route: "q".into(),
        key: key.map(|id| DeliveryKey {
            scope: "q".into(),
            id,
            lease: Duration::from_secs(60),
            ttl: Duration::from_secs(3600),
        }),
        event: Some("job.completed".into()),
        target: "/webhooks/q".into(),
        headers: bytes::Bytes::new(),
        body: bytes::Bytes::from_static(b"{}"),
        destinations: destinations.iter().map(|d| d.to_string()).collect(),
        order_key: None,
        received_ms: now,
        max_queued: 1000,
    }
}

async fn queued(store: &PostgresStore, new: NewDelivery) -> DeliveryId {
    match store.enqueue(new).await {
        Ok(Enqueued::Queued(id)) => id,
        other => panic!("enqueue: {other:?}"),
    }
}

/// The outcome of attempt `attempt` of `id` at destination `app`: delivered on 200, else due
/// again in an hour.
fn outcome(id: DeliveryId, attempt: u32, status: u16, now: u64) -> AttemptResult {
    AttemptResult {
        id,
        destination: "app".into(),
        attempt,
        started_ms: now,
        duration_ms: 1,
        status: Some(status),
        error: None,
        next: if status == 200 {
            Next::Delivered
        } else {
            Next::RetryAt(now + 3_600_000)
        },
        counts: true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_of_a_key_accepted_at_once_store_it_once_and_keyless_deliveries_each_go_in() {
    // A key that comes several times in one group is claimed once and its copies are answered as
    // duplicates, never stored a second time.
    let db = TestDatabase::create();
    let store = ready_store(&db).await;
    let now = unix_ms(SystemTime::now());
    let destinations = ["app", "analytics"];
    // Rounds of 5 copies of each of 4 keys and 4 keyless deliveries, all submitted at once.
    for round in 0..5u128 {
        let keys: Vec<Option<u128>> = (0..4)
            .flat_map(|k| [Some(round * 10 + k); 5])
            .chain([None; 4])
            .collect();
        let outcomes = futures_util::future::join_all(
            keys.iter()
                .map(|k| store.enqueue(delivery(now, *k, &destinations))),
        )
        .await;
        for k in 0..4 {
            let of_key: Vec<&Enqueued> = keys
                .iter()
                .zip(&outcomes)
                .filter(|(key, _)| **key == Some(round * 10 + k))
                .map(|(_, o)| o.as_ref().expect("accepted or refused"))
                .collect();
            let queued = of_key
                .iter()
                .filter(|o| matches!(o, Enqueued::Queued(_)))
                .count();
            assert_eq!(queued, 1, "round {round}, key {k}: {of_key:?}");
            // Also a copy in a group committed by the other writer at the same moment, whose
            // claim its statement could not see: a duplicate, not one in progress.
            assert!(
                of_key
                    .iter()
                    .all(|o| matches!(o, Enqueued::Queued(_) | Enqueued::Duplicate)),
                "round {round}, key {k}: {of_key:?}"
            );
        }
        let keyless = outcomes[20..]
            .iter()
            .filter(|o| matches!(o, Ok(Enqueued::Queued(_))))
            .count();
        assert_eq!(keyless, 4, "round {round}: {:?}", &outcomes[20..]);
    }
    // One delivery per key and per keyless acceptance, two destinations each.
    assert_eq!(db.query("SELECT count(*) FROM hookgate_deliveries"), "40");
    assert_eq!(db.query("SELECT count(*) FROM hookgate_destinations"), "80");
    assert_eq!(db.query("SELECT count(*) FROM hookgate_claims"), "20");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_of_a_purged_delivery_does_not_fail_the_records_committed_with_it() {
    // The outcome of an attempt whose delivery was purged meanwhile (its lease ran out, another
    // replica finished it, retention passed) must neither fail nor take the other outcomes of its
    // group down with it: they would be attempted again, a duplicate at the app.
    let db = TestDatabase::create();
    let store = ready_store(&db).await;
    let now = unix_ms(SystemTime::now());
    let id = queued(&store, delivery(now, None, &["app"])).await;
    let taken = store
        .take_due("q", "app", now + 1_000, 10, Duration::from_secs(60))
        .await
        .expect("take");
    assert_eq!(taken.len(), 1, "the delivery is due");
    let purged = DeliveryId(id.0 + 1_000_000);
    let (real, gone) = tokio::join!(
        store.record(outcome(id, taken[0].attempt, 200, now)),
        store.record(outcome(purged, 1, 200, now)),
    );
    assert!(real.is_ok(), "the live delivery's outcome: {real:?}");
    assert!(gone.is_ok(), "the purged delivery's outcome: {gone:?}");
    let detail = store.get(id).await.expect("read").expect("the delivery");
    assert_eq!(detail.summary.state, DeliveryState::Delivered);
    assert_eq!(detail.attempts.len(), 1);
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM hookgate_attempts WHERE delivery_id = {}",
            purged.0
        )),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_attempts_outcome_committed_with_the_current_ones_leaves_the_current_in_charge() {
    // An attempt whose lease ran out was taken again (attempt 2). Both outcomes arrive at once and
    // share a group: the stale failure is logged, the current success delivers.
    let db = TestDatabase::create();
    let store = ready_store(&db).await;
    let now = unix_ms(SystemTime::now());
    // Both orders of arrival: which of two outcomes for one destination comes first in a group
    // must not matter.
    for current_first in [false, true] {
        let mut ids = Vec::new();
        for _ in 0..8 {
            ids.push(queued(&store, delivery(now, None, &["app"])).await);
        }
        let first = store
            .take_due("q", "app", now + 1_000, 100, Duration::from_millis(1))
            .await
            .expect("take");
        assert_eq!(first.len(), 8);
        // The first leases have run out: the same attempts are due again, as attempt 2.
        let second = store
            .take_due("q", "app", now + 60_000, 100, Duration::from_secs(60))
            .await
            .expect("take again");
        assert_eq!(second.len(), 8);
        assert!(second.iter().all(|a| a.attempt == 2), "{second:?}");
        let of = |taken: &[DueAttempt], status| -> Vec<AttemptResult> {
            taken
                .iter()
                .map(|a| outcome(a.id, a.attempt, status, now))
                .collect()
        };
        let (stale, current) = (of(&first, 500), of(&second, 200));
        let outcomes = if current_first {
            [current, stale].concat()
        } else {
            [stale, current].concat()
        };
        let records = outcomes.into_iter().map(|o| store.record(o));
        for r in futures_util::future::join_all(records).await {
            r.expect("recorded");
        }
        for id in ids {
            let detail = store.get(id).await.expect("read").expect("the delivery");
            assert_eq!(detail.summary.state, DeliveryState::Delivered, "{id:?}");
            assert_eq!(detail.attempts.len(), 2, "{id:?}: both attempts logged");
        }
    }
}
