//! Attempts' outcomes, written in groups (`group`) on the worker's connections, whose commits do
//! not wait for the WAL flush: what a database crash loses of them is an attempt made again.
//! A group takes its deliveries' locks in id order.

use super::group::GroupWrite;
use super::ms;
use crate::store::queue::{AttemptResult, Next};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use std::cmp::Ordering;
use tokio_postgres::types::ToSql;

/// The statements of a group, in the order they run, each over the group's records as arrays.
///
/// The first locks the group's deliveries' rows in id order (a lock only: the rows are not
/// written), so that the records of one delivery's destinations, in this group or another, run
/// one after the other and the last one's finish check sees the others' states committed; two
/// records at once would each see the other's destination still pending, and neither would
/// finish the delivery.
const LOCK_DELIVERIES: &str = "SELECT 1 FROM hookgate_deliveries WHERE id = ANY ($1::bigint[])
    ORDER BY id FOR NO KEY UPDATE";
/// Then each record's attempt row and destination.
/// - An attempt is numbered as its destination numbered it (`Hookgate-Attempt`); an attempt
///   whose lease ran out and was taken again has a number of its own, so a record never collides
///   but for the same attempt recorded twice, which keeps the first.
/// - A delivery purged meanwhile gets no attempt row: the row would break its foreign key and so
///   fail the whole group.
/// - Only the attempt in progress moves the destination's state: a retry by hand may have
///   superseded it. Taking it counted it in `scheduled`; one that does not count (a failure
///   while the breaker is open) gives that back.
/// - Deliveries and destinations are found by the array of ids (`= ANY`), which their keys'
///   indexes serve whatever plan the connection keeps. Joined on `r` alone, a kept plan can read
///   every delivery to hash them, once per group.
const WRITE_RECORDS: &str = "WITH r AS (
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::bigint[],
                             $6::int[], $7::text[], $8::text[], $9::bigint[], $10::int[])
            AS r(id, destination, attempt, started_ms, duration_ms, status, error, state, due,
                 uncounted)),
    attempt AS (
        INSERT INTO hookgate_attempts
            (delivery_id, n, destination, started_ms, duration_ms, status, error)
        SELECT id, attempt, destination, started_ms, duration_ms, status, error FROM r
        WHERE EXISTS (SELECT 1 FROM hookgate_deliveries x
                      WHERE x.id = r.id AND x.id = ANY ($1::bigint[]))
        ON CONFLICT DO NOTHING)
    UPDATE hookgate_destinations d SET last_status = r.status, last_error = r.error,
        state = CASE WHEN d.state = 'pending' AND d.attempts = r.attempt
                     THEN r.state ELSE d.state END,
        due_ms = CASE WHEN d.state = 'pending' AND d.attempts = r.attempt
                      THEN r.due ELSE d.due_ms END,
        scheduled = CASE WHEN d.state = 'pending' AND d.attempts = r.attempt
                         THEN d.scheduled - r.uncounted ELSE d.scheduled END
    FROM r
    WHERE d.delivery_id = ANY ($1::bigint[]) AND d.delivery_id = r.id AND d.name = r.destination";
/// Last, in a statement of its own so that it sees the states just written, each delivery none
/// of whose destinations waits any more is finished. Its destinations are read by its key alone:
/// with `state = 'pending'` in the condition, the generic plan Postgres settles on walks the
/// partial index of pending destinations instead, which costs as much as the backlog is long.
const FINISH_DELIVERIES: &str = "INSERT INTO hookgate_finished (delivery_id, finished_ms)
    SELECT f.id, $2 FROM unnest($1::bigint[]) AS f(id)
    WHERE (SELECT bool_and(d.state <> 'pending') FROM hookgate_destinations d
           WHERE d.delivery_id = f.id)
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
    /// 1 when it does not count against the delivery's retries, else 0.
    uncounted: i32,
    /// When it was recorded (a delivery it finishes is finished then).
    now: i64,
}

impl Record {
    pub fn of(r: AttemptResult, now: i64) -> Self {
        let (state, due) = match r.next {
            Next::Delivered => ("delivered", None),
            Next::RetryAt(at) => ("pending", Some(ms(at))),
            Next::Dead => ("dead", None),
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
            uncounted: i32::from(!r.counts),
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
        let (lock, write, finish) = futures_util::try_join!(
            txn.prepare_cached(LOCK_DELIVERIES),
            txn.prepare_cached(WRITE_RECORDS),
            txn.prepare_cached(FINISH_DELIVERIES),
        )?;
        // The group is in id order (`order`), so equal ids are next to each other.
        let mut ids: Vec<i64> = items.iter().map(|r| r.id).collect();
        ids.dedup();
        let now = items.iter().map(|r| r.now).max().unwrap_or_default();
        let rounds = rounds(items);
        let columns: Vec<Columns> = rounds.iter().map(|round| Columns::of(round)).collect();
        // Every statement of the group goes out at once (one round trip); Postgres runs them in
        // order, each seeing the ones before it.
        let lock_params: [Param; 1] = [&ids];
        let finish_params: [Param; 2] = [&ids, &now];
        let write_params: Vec<[Param; 10]> = columns.iter().map(Columns::params).collect();
        let locked = txn.execute(&lock, &lock_params);
        let written =
            futures_util::future::try_join_all(write_params.iter().map(|p| txn.execute(&write, p)));
        let finished = txn.execute(&finish, &finish_params);
        futures_util::try_join!(locked, written, finished)?;
        Ok(vec![(); items.len()])
    }
}

/// A group's records split so that no destination comes twice in one statement (one UPDATE
/// changes a row once): the first record of each destination, then the second, and so on, each
/// round written after the one before, as one at a time would have been. `items` is in the
/// group's order, so a destination's records are next to each other.
fn rounds(items: &[Record]) -> Vec<Vec<&Record>> {
    let mut rounds: Vec<Vec<&Record>> = Vec::new();
    let mut repeat = 0;
    for (i, r) in items.iter().enumerate() {
        let same = i > 0 && (items[i - 1].id, &items[i - 1].destination) == (r.id, &r.destination);
        repeat = if same { repeat + 1 } else { 0 };
        if rounds.len() <= repeat {
            rounds.push(Vec::new());
        }
        rounds[repeat].push(r);
    }
    rounds
}

type Param<'a> = &'a (dyn ToSql + Sync);

/// One round's records as the columns `WRITE_RECORDS` takes.
struct Columns<'a> {
    id: Vec<i64>,
    destination: Vec<&'a str>,
    attempt: Vec<i32>,
    started_ms: Vec<i64>,
    duration_ms: Vec<i64>,
    status: Vec<Option<i32>>,
    error: Vec<Option<&'a str>>,
    state: Vec<&'static str>,
    due: Vec<Option<i64>>,
    uncounted: Vec<i32>,
}

impl<'a> Columns<'a> {
    fn of(records: &[&'a Record]) -> Self {
        Self {
            id: records.iter().map(|r| r.id).collect(),
            destination: records.iter().map(|r| r.destination.as_str()).collect(),
            attempt: records.iter().map(|r| r.attempt).collect(),
            started_ms: records.iter().map(|r| r.started_ms).collect(),
            duration_ms: records.iter().map(|r| r.duration_ms).collect(),
            status: records.iter().map(|r| r.status).collect(),
            error: records.iter().map(|r| r.error.as_deref()).collect(),
            state: records.iter().map(|r| r.state).collect(),
            due: records.iter().map(|r| r.due).collect(),
            uncounted: records.iter().map(|r| r.uncounted).collect(),
        }
    }

    fn params(&self) -> [Param<'_>; 10] {
        [
            &self.id,
            &self.destination,
            &self.attempt,
            &self.started_ms,
            &self.duration_ms,
            &self.status,
            &self.error,
            &self.state,
            &self.due,
            &self.uncounted,
        ]
    }
}
