//! Acceptances of queue routes, written in groups (`group`): one commit (one WAL flush) covers
//! many deliveries, and nobody is answered `queued` before the commit that holds their delivery.

use super::group::GroupWrite;
use super::DELIVERED;
use crate::store::queue::{DeliveryId, Enqueued};
use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::Transaction;
use std::cmp::Ordering;
use std::time::Duration;
use tokio_postgres::types::ToSql;

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

/// Acceptances as group writes. A group claims its keys in key order (`order`).
pub struct Accepts;

#[async_trait]
impl GroupWrite for Accepts {
    type Item = Acceptance;
    type Outcome = Enqueued;

    fn order(a: &Acceptance, b: &Acceptance) -> Ordering {
        a.key.cmp(&b.key)
    }

    async fn write(
        txn: &Transaction<'_>,
        items: &[Acceptance],
    ) -> Result<Vec<Enqueued>, tokio_postgres::Error> {
        let statement = txn.prepare_cached(ACCEPT).await?;
        let bytes: Vec<(&[u8], &[u8])> = items
            .iter()
            .map(|a| (a.headers.as_ref(), a.body.as_ref()))
            .collect();
        let params: Vec<[&(dyn ToSql + Sync); 12]> = items
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
        Ok(items
            .iter()
            .zip(rows)
            .map(|(a, row)| outcome(a, &row))
            .collect())
    }
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
