//! Acceptances of queue routes, written in groups (`group`): one commit (one WAL flush) covers
//! many deliveries, and nobody is answered `queued` before the commit that holds their delivery.
//! A group is one statement: its acceptances go in as arrays, one element each, so Postgres
//! plans and runs the claim, delivery and destination inserts once per group, not per delivery.

use super::group::GroupWrite;
use super::DELIVERED;
use crate::store::claim_wait;
use crate::store::queue::{DeliveryId, Enqueued};
use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::Transaction;
use std::cmp::Ordering;
use std::collections::HashMap;

/// Claims, deliveries, destinations and one NOTIFY for a group of acceptances.
/// - `input` is one row per acceptance (`n` its place in the group). A keyless acceptance claims
///   nothing and always goes in.
/// - `claim` takes each key that is free or whose claim has expired, in key order (the group's).
/// - `accepted` numbers the deliveries that go in; the CTE runs once (`nextval` is volatile), so
///   every insert below sees the same ids.
/// - The main query gives each acceptance its delivery's id, or none. It also counts `wake`, a
///   plain CTE, which runs only when something reads it.
const ACCEPT: &str = "WITH input AS (
        SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                             $6::text[], $7::text[], $8::bytea[], $9::bytea[], $10::int[],
                             $16::text[])
            WITH ORDINALITY AS i(key, key_expires, received_ms, route, key_hex, event, target,
                                 headers, body, destination_count, order_key, n)),
    claim AS (
        INSERT INTO hookgate_claims (key, token, expires_ms)
        SELECT key, $11, key_expires FROM input WHERE key IS NOT NULL ORDER BY key
        ON CONFLICT (key) DO UPDATE
            SET token = EXCLUDED.token, expires_ms = EXCLUDED.expires_ms
            WHERE hookgate_claims.expires_ms <= $12
        RETURNING key),
    accepted AS (
        SELECT n, (received_ms << 20) | (nextval('hookgate_delivery_seq') & 1048575) AS id
        FROM input WHERE key IS NULL OR key IN (SELECT key FROM claim)
        ORDER BY n),
    delivery AS (
        INSERT INTO hookgate_deliveries
            (id, route, received_ms, key, event, target, headers, body)
        SELECT a.id, i.route, i.received_ms, i.key_hex, i.event, i.target, i.headers, i.body
        FROM accepted a JOIN input i USING (n)),
    finished AS (
        INSERT INTO hookgate_finished (delivery_id, finished_ms)
        SELECT a.id, $12 FROM accepted a JOIN input i USING (n) WHERE i.destination_count = 0),
    destinations AS (
        INSERT INTO hookgate_destinations
            (delivery_id, position, route, name, state, due_ms, order_key)
        SELECT a.id, d.position, i.route, d.name, 'pending', $12, i.order_key
        FROM unnest($13::bigint[], $14::text[], $15::int[]) AS d(n, name, position)
        JOIN accepted a USING (n) JOIN input i USING (n)),
    wake AS (SELECT pg_notify('hookgate_queue', '') WHERE EXISTS (SELECT 1 FROM accepted))
    SELECT a.id, (SELECT count(*) FROM wake)
    FROM input i LEFT JOIN accepted a USING (n)
    ORDER BY i.n";

/// The claims met by the keys `ACCEPT` did not claim, read in a statement of its own: its
/// snapshot also sees a claim committed while `ACCEPT` ran (another writer's group, another
/// replica), which `ACCEPT`'s own snapshot cannot.
const READ_CLAIMS: &str =
    "SELECT key, token, expires_ms FROM hookgate_claims WHERE key = ANY ($1::bytea[])";

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
    pub order_key: Option<String>,
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
        // A key may come twice in a group (a sender's copies at once). One insert cannot claim
        // a row twice, so only a key's first acceptance goes to Postgres, and each copy is
        // answered as if it had come right after the one before it.
        let is_copy =
            |i: usize| i > 0 && items[i].key.is_some() && items[i - 1].key == items[i].key;
        let firsts: Vec<&Acceptance> = (0..items.len())
            .filter(|&i| !is_copy(i))
            .map(|i| &items[i])
            .collect();
        let mut outcomes = accept(txn, &firsts).await?.into_iter();
        let mut answers: Vec<Enqueued> = Vec::with_capacity(items.len());
        for i in 0..items.len() {
            let answer = if is_copy(i) {
                match &answers[i - 1] {
                    Enqueued::Queued(_) => Enqueued::Duplicate,
                    before => before.clone(),
                }
            } else {
                // The statement answers every acceptance it is given; were a row missing, the
                // sender is asked to come back, which a stored delivery answers as a duplicate.
                outcomes.next().unwrap_or(Enqueued::InFlight {
                    retry_after: claim_wait(None, 0),
                })
            };
            answers.push(answer);
        }
        Ok(answers)
    }
}

/// Runs the group's statement for acceptances whose keys are distinct.
async fn accept(
    txn: &Transaction<'_>,
    items: &[&Acceptance],
) -> Result<Vec<Enqueued>, tokio_postgres::Error> {
    let statement = txn.prepare_cached(ACCEPT).await?;
    let now = items.iter().map(|a| a.now).max().unwrap_or_default();
    let keys: Vec<Option<&[u8]>> = items.iter().map(|a| a.key.as_deref()).collect();
    let key_expires: Vec<i64> = items.iter().map(|a| a.key_expires).collect();
    let received: Vec<i64> = items.iter().map(|a| a.received_ms).collect();
    let routes: Vec<&str> = items.iter().map(|a| a.route.as_str()).collect();
    let key_hex: Vec<Option<&str>> = items.iter().map(|a| a.key_hex.as_deref()).collect();
    let events: Vec<Option<&str>> = items.iter().map(|a| a.event.as_deref()).collect();
    let targets: Vec<&str> = items.iter().map(|a| a.target.as_str()).collect();
    let headers: Vec<&[u8]> = items.iter().map(|a| a.headers.as_ref()).collect();
    let bodies: Vec<&[u8]> = items.iter().map(|a| a.body.as_ref()).collect();
    let counts: Vec<i32> = items.iter().map(|a| a.destinations.len() as i32).collect();
    let order_keys: Vec<Option<&str>> = items.iter().map(|a| a.order_key.as_deref()).collect();
    let (mut dest_of, mut dest_name, mut dest_position) = (Vec::new(), Vec::new(), Vec::new());
    for (n, a) in (1i64..).zip(items) {
        for (position, name) in (1i32..).zip(&a.destinations) {
            dest_of.push(n);
            dest_name.push(name.as_str());
            dest_position.push(position);
        }
    }
    let rows = txn
        .query(
            &statement,
            &[
                &keys,
                &key_expires,
                &received,
                &routes,
                &key_hex,
                &events,
                &targets,
                &headers,
                &bodies,
                &counts,
                &DELIVERED.as_slice(),
                &now,
                &dest_of,
                &dest_name,
                &dest_position,
                &order_keys,
            ],
        )
        .await?;
    let ids: Vec<Option<i64>> = rows.iter().map(|row| row.get(0)).collect();
    let refused: Vec<&[u8]> = items
        .iter()
        .zip(&ids)
        .filter(|(_, id)| id.is_none())
        .filter_map(|(a, _)| a.key.as_deref())
        .collect();
    let mut claims: HashMap<Vec<u8>, (Vec<u8>, i64)> = HashMap::new();
    if !refused.is_empty() {
        let read = txn.prepare_cached(READ_CLAIMS).await?;
        for row in txn.query(&read, &[&refused]).await? {
            claims.insert(row.get(0), (row.get(1), row.get(2)));
        }
    }
    Ok(items
        .iter()
        .zip(ids)
        .map(|(a, id)| {
            let claim = a.key.as_ref().and_then(|k| claims.get(k));
            outcome(
                now,
                id,
                claim.map(|(token, until)| (token.as_slice(), *until)),
            )
        })
        .collect())
}

/// What happened to an acceptance: its delivery's id, or else the claim its key met (its token
/// and until when it holds).
fn outcome(now: i64, id: Option<i64>, claim: Option<(&[u8], i64)>) -> Enqueued {
    match (id, claim) {
        (Some(id), _) => Enqueued::Queued(DeliveryId(id as u64)),
        (None, Some((token, _))) if token == DELIVERED => Enqueued::Duplicate,
        (None, claim) => Enqueued::InFlight {
            retry_after: claim_wait(claim.map(|(_, until)| until), now),
        },
    }
}
