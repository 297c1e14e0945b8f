//! Attempts' outcomes, written in groups (`group`) on the worker's connections, whose commits do
//! not wait for the WAL flush: what a database crash loses of them is an attempt made again.
//! A group takes its deliveries' locks in id order.

use super::group::GroupWrite;
use super::ms;
use crate::store::queue::AttemptResult;
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use std::cmp::Ordering;
use tokio_postgres::types::ToSql;

/// The statements of a record, in the order they run. The first locks the delivery's
/// row (a lock only: the row is not written), so that the records of one delivery's
/// destinations run one after the other and the last one's finish check sees the others' states
/// committed; two records at once would each see the other's destination still pending, and
/// neither would finish the delivery.
const LOCK_DELIVERY: &str = "SELECT 1 FROM hookgate_deliveries WHERE id = $1 FOR NO KEY UPDATE";
/// An attempt is numbered as its destination numbered it (`Hookgate-Attempt`); an attempt whose
/// lease ran out and was taken again has a number of its own, so a record never collides but
/// for the same attempt recorded twice, which keeps the first. A delivery purged meanwhile gets
/// no attempt row: the row would break its foreign key and so fail the whole group.
const INSERT_ATTEMPT: &str = "INSERT INTO hookgate_attempts
        (delivery_id, n, destination, started_ms, duration_ms, status, error)
    SELECT $1, $2, $3, $4, $5, $6, $7
    WHERE EXISTS (SELECT 1 FROM hookgate_deliveries WHERE id = $1)
    ON CONFLICT DO NOTHING";
/// Only the attempt in progress moves the state: a retry by hand may have superseded it.
const UPDATE_DESTINATION: &str =
    "UPDATE hookgate_destinations SET last_status = $3, last_error = $4,
        state = CASE WHEN state = 'pending' AND attempts = $5 THEN $6 ELSE state END,
        due_ms = CASE WHEN state = 'pending' AND attempts = $5 THEN $7 ELSE due_ms END
    WHERE delivery_id = $1 AND name = $2";
/// The delivery's destinations are read by its key alone: with `state = 'pending'` in the
/// condition, the generic plan Postgres settles on after five calls walks the partial index of
/// pending destinations instead, which costs as much as the backlog is long.
const FINISH_DELIVERY: &str = "INSERT INTO hookgate_finished (delivery_id, finished_ms)
    SELECT $1, $2 WHERE (
        SELECT bool_and(state <> 'pending') FROM hookgate_destinations WHERE delivery_id = $1)
    ON CONFLICT DO NOTHING";

/// One attempt's outcome, as its statements' parameters.
pub struct Record {
    id: i64,
    destination: String,
    attempt: i32,
    started_ms: i64,
    duration_ms: i64,
    status: Option<i32>,
    error: Option<String>,
    /// The destination's state after it, and when it is due again.
    state: &'static str,
    due: Option<i64>,
    /// When it was recorded (a delivery it finishes is finished then).
    now: i64,
}

impl Record {
    pub fn of(r: AttemptResult, now: i64) -> Self {
        let (state, due) = match r.next {
            None => ("delivered", None),
            Some(Some(at)) => ("pending", Some(ms(at))),
            Some(None) => ("dead", None),
        };
        Self {
            id: r.id.0 as i64,
            destination: r.destination,
            attempt: r.attempt as i32,
            started_ms: ms(r.started_ms),
            duration_ms: ms(r.duration_ms),
            status: r.status.map(i32::from),
            error: r.error,
            state,
            due,
            now,
        }
    }
}

/// Attempts' outcomes as group writes.
pub struct Records;

#[async_trait]
impl GroupWrite for Records {
    type Item = Record;
    type Outcome = ();

    fn order(a: &Record, b: &Record) -> Ordering {
        (a.id, &a.destination).cmp(&(b.id, &b.destination))
    }

    async fn write(
        txn: &Transaction<'_>,
        items: &[Record],
    ) -> Result<Vec<()>, tokio_postgres::Error> {
        let (lock, insert, update, finish) = futures_util::try_join!(
            txn.prepare_cached(LOCK_DELIVERY),
            txn.prepare_cached(INSERT_ATTEMPT),
            txn.prepare_cached(UPDATE_DESTINATION),
            txn.prepare_cached(FINISH_DELIVERY),
        )?;
        type Param<'a> = &'a (dyn ToSql + Sync);
        let params: Vec<([Param; 1], [Param; 7], [Param; 7], [Param; 2])> = items
            .iter()
            .map(|r| {
                (
                    [&r.id as Param],
                    [
                        &r.id as Param,
                        &r.attempt,
                        &r.destination,
                        &r.started_ms,
                        &r.duration_ms,
                        &r.status,
                        &r.error,
                    ],
                    [
                        &r.id as Param,
                        &r.destination,
                        &r.status,
                        &r.error,
                        &r.attempt,
                        &r.state,
                        &r.due,
                    ],
                    [&r.id as Param, &r.now],
                )
            })
            .collect();
        // Every statement of the group goes out at once (one round trip); Postgres runs them in
        // order, each seeing the ones before it.
        futures_util::future::try_join_all(params.iter().flat_map(|(l, i, u, f)| {
            [
                (&lock, &l[..]),
                (&insert, &i[..]),
                (&update, &u[..]),
                (&finish, &f[..]),
            ]
            .map(|(statement, values)| txn.execute(statement, values))
        }))
        .await?;
        Ok(vec![(); items.len()])
    }
}
