//! Group commit of acceptances: what arrives while a commit is in progress waits and is written
//! by the next one, all statements of a group pipelined on one connection in one transaction.
//! One commit (one WAL flush) then covers many deliveries, and nobody is answered `queued`
//! before the commit that holds their delivery.
//!
//! A group fails as a whole (a statement or the commit fails, the database is gone): every
//! acceptance in it is answered unavailable and nothing of it is kept, so each sender retries.

use super::{unavailable, DELIVERED, OP_TIMEOUT};
use crate::store::queue::{DeliveryId, Enqueued};
use crate::store::StoreError;
use bytes::Bytes;
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

/// Acceptances one commit holds at most.
const MAX_GROUP: usize = 128;
/// Commits in progress at once (each on its own pooled connection).
const WRITERS: usize = 2;
/// Acceptances waiting for a writer at most; beyond it the store answers unavailable.
const MAX_WAITING: usize = 4096;

/// Claim, delivery, destinations and a NOTIFY in one statement. Without a key, the claim is
/// skipped (`$1 IS NULL`) and the delivery always goes in.
const ACCEPT: &str = "WITH claim AS (
        INSERT INTO hookgate_claims (key, token, expires_ms)
        SELECT $1, $2, $3 WHERE $1::bytea IS NOT NULL
        ON CONFLICT (key) DO UPDATE
            SET token = EXCLUDED.token, expires_ms = EXCLUDED.expires_ms
            WHERE hookgate_claims.expires_ms <= $4
        RETURNING 1),
    delivery AS (
        INSERT INTO hookgate_deliveries
            (id, route, received_ms, key, event, target, headers, body)
        SELECT ($5::bigint << 20) | (nextval('hookgate_delivery_seq') & 1048575),
               $6, $5, $7, $8, $9, $10, $11
        WHERE $1::bytea IS NULL OR EXISTS (SELECT 1 FROM claim)
        RETURNING id),
    finished AS (
        INSERT INTO hookgate_finished (delivery_id, finished_ms)
        SELECT id, $4 FROM delivery WHERE cardinality($12::text[]) = 0),
    destinations AS (
        INSERT INTO hookgate_destinations
            (delivery_id, position, route, name, state, due_ms)
        SELECT delivery.id, d.position, $6, d.name, 'pending', $4
        FROM delivery, unnest($12::text[]) WITH ORDINALITY AS d(name, position)
        RETURNING 1),
    wake AS (SELECT pg_notify('hookgate_queue', '') FROM delivery)
    SELECT (SELECT id FROM delivery),
           (SELECT count(*) FROM destinations),
           (SELECT count(*) FROM wake),
           (SELECT token FROM hookgate_claims WHERE key = $1),
           (SELECT expires_ms FROM hookgate_claims WHERE key = $1)";

/// One acceptance's values, owned so that it can wait for the next commit.
pub struct Acceptance {
    pub key: Option<Vec<u8>>,
    pub key_hex: Option<String>,
    pub key_expires: i64,
    pub now: i64,
    pub received_ms: i64,
    pub route: String,
    pub event: Option<String>,
    pub target: String,
    pub headers: Bytes,
    pub body: Bytes,
    pub destinations: Vec<String>,
}

type Waiting = (Acceptance, oneshot::Sender<Result<Enqueued, StoreError>>);

/// The queue of acceptances and the writers that commit them.
pub struct GroupCommit {
    waiting: mpsc::Sender<Waiting>,
}

impl GroupCommit {
    /// Starts the writers on the store's runtime.
    pub fn start(pool: Pool, runtime: &tokio::runtime::Handle) -> Self {
        let (tx, rx) = mpsc::channel(MAX_WAITING);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            runtime.spawn(writer(pool.clone(), rx.clone()));
        }
        Self { waiting: tx }
    }

    /// Waits for the commit that holds `a` and answers what it did.
    pub async fn accept(&self, a: Acceptance) -> Result<Enqueued, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.waiting
            .try_send((a, answer))
            .map_err(|_| unavailable("too many acceptances wait for Postgres"))?;
        // The writer bounds its own work by OP_TIMEOUT; the margin covers the wait for a writer.
        tokio::time::timeout(OP_TIMEOUT * 2, answered)
            .await
            .map_err(|_| unavailable("Postgres did not answer in time"))?
            .map_err(|_| unavailable("the Postgres writer stopped"))?
    }
}

async fn writer(pool: Pool, waiting: Arc<Mutex<mpsc::Receiver<Waiting>>>) {
    loop {
        let mut group = Vec::with_capacity(MAX_GROUP);
        {
            let mut rx = waiting.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
        }
        // Each group claims its keys in key order: two writers' groups holding the same keys
        // then cannot wait on each other in a cycle.
        group.sort_by(|(a, _), (b, _)| a.key.cmp(&b.key));
        let (acceptances, answers): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        let outcome = tokio::time::timeout(OP_TIMEOUT, commit(&pool, &acceptances))
            .await
            .unwrap_or_else(|_| Err(unavailable("Postgres did not answer in time")));
        match outcome {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(Ok(result));
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Writes `group` (sorted by key) in one transaction, its statements pipelined; the outcomes
/// once committed. A deadlock with another statement (the purge) or a serialization failure
/// aborts the whole transaction, which is then written again.
async fn commit(pool: &Pool, group: &[Acceptance]) -> Result<Vec<Enqueued>, StoreError> {
    let mut client = pool.get().await.map_err(unavailable)?;
    let mut tries = 1;
    loop {
        match write(&mut client, group).await {
            Err(e) if tries < MAX_TRIES && is_transient(&e) => tries += 1,
            outcome => return outcome.map_err(unavailable),
        }
    }
}

/// Tries of one group that meets a deadlock or serialization failure.
const MAX_TRIES: u32 = 3;

fn is_transient(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// One transaction holding `group`, its statements issued in the group's order.
async fn write(
    client: &mut deadpool_postgres::Client,
    group: &[Acceptance],
) -> Result<Vec<Enqueued>, tokio_postgres::Error> {
    let txn = client.transaction().await?;
    let statement = txn.prepare_cached(ACCEPT).await?;
    let bytes: Vec<(&[u8], &[u8])> = group
        .iter()
        .map(|a| (a.headers.as_ref(), a.body.as_ref()))
        .collect();
    let params: Vec<[&(dyn ToSql + Sync); 12]> = group
        .iter()
        .zip(&bytes)
        .map(|(a, (headers, body))| -> [&(dyn ToSql + Sync); 12] {
            [
                &a.key,
                &DELIVERED_SLICE,
                &a.key_expires,
                &a.now,
                &a.received_ms,
                &a.route,
                &a.key_hex,
                &a.event,
                &a.target,
                headers,
                body,
                &a.destinations,
            ]
        })
        .collect();
    let rows = futures_util::future::try_join_all(
        params
            .iter()
            .map(|p| txn.query_one(&statement, p.as_slice())),
    )
    .await?;
    txn.commit().await?;
    Ok(group
        .iter()
        .zip(rows)
        .map(|(a, row)| outcome(a, &row))
        .collect())
}

/// What one statement's row says happened to its acceptance.
fn outcome(a: &Acceptance, row: &tokio_postgres::Row) -> Enqueued {
    match row.get::<_, Option<i64>>(0) {
        Some(id) => Enqueued::Queued(DeliveryId(id as u64)),
        None => match row.get::<_, Option<Vec<u8>>>(3) {
            Some(t) if t == DELIVERED => Enqueued::Duplicate,
            _ => Enqueued::InFlight {
                retry_after: Duration::from_millis(
                    row.get::<_, Option<i64>>(4)
                        .map_or(1000, |u| u.saturating_sub(a.now).max(0) as u64),
                ),
            },
        },
    }
}

/// The token a delivered key holds, as the statement's `$2`.
const DELIVERED_SLICE: &[u8] = &DELIVERED;
