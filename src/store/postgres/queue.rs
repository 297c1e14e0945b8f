//! The delivery queue on Postgres: acceptances, the workers' takes and records, the retention
//! purge, gauges, and retries by hand.

use super::accept::Acceptance;
use super::breaker::PostgresBreaker;
use super::record::Record;
use super::{log, ms, PostgresStore};
use crate::pipeline::DeliveryKey;
use crate::store::breaker::BreakerState;
use crate::store::queue::{
    unix_ms, AttemptResult, DeliveryDetail, DeliveryId, DeliveryLog, DeliverySummary,
    DestinationStats, DueAttempt, Enqueued, ListFilter, NewDelivery, Queue, QueueGauges,
};
use crate::store::StoreError;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[async_trait]
impl Queue for PostgresStore {
    fn shared_breaker(
        self: Arc<Self>,
        route: &str,
        destination: &str,
    ) -> Option<Arc<dyn BreakerState>> {
        Some(Arc::new(PostgresBreaker::new(self, route, destination)))
    }

    async fn enqueue(&self, new: NewDelivery) -> Result<Enqueued, StoreError> {
        if self.open_count(&new.route).await? >= ms(new.max_queued) {
            return Ok(Enqueued::Full);
        }
        self.ensure_ready()?;
        let now = ms(unix_ms(SystemTime::now()));
        let route = new.route.clone();
        let outcome = self
            .accepts
            .submit(Acceptance {
                key: new.key.as_ref().map(|k| k.id.to_be_bytes().to_vec()),
                key_hex: new.key.as_ref().map(DeliveryKey::hex),
                key_expires: new
                    .key
                    .as_ref()
                    .map_or(0, |k| now + ms(k.ttl.as_millis() as u64)),
                now,
                received_ms: ms(new.received_ms),
                route: new.route,
                event: new.event,
                target: new.target,
                headers: new.headers,
                body: new.body,
                destinations: new.destinations,
                order_key: new.order_key,
            })
            .await?;
        if matches!(outcome, Enqueued::Queued(_)) {
            self.count_accepted(&route);
        }
        Ok(outcome)
    }

    async fn take_due(
        &self,
        route: &str,
        destination: &str,
        now_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<DueAttempt>, StoreError> {
        let (route, destination) = (route.to_string(), destination.to_string());
        let name = destination.clone();
        let held_until = ms(now_ms + lease.as_millis() as u64);
        // The taken rows are updated by their keys as an array. Joined to the `due` rows instead,
        // the plan a connection keeps could be one made while the table was nearly empty: read
        // every row of the destination's name and filter by delivery, which costs as much as the
        // table is large, for each take, for the connection's whole life.
        let rows = self
            .run_on(&self.worker_pool, move |c| async move {
                c.query(
                    &c.prepare_cached(
                        "WITH due AS (
                            SELECT delivery_id FROM hookgate_destinations d
                            WHERE route = $1 AND name = $2 AND state = 'pending' AND due_ms <= $3
                              AND (order_key IS NULL OR NOT EXISTS (
                                  SELECT 1 FROM hookgate_destinations e
                                  WHERE e.route = $1 AND e.name = $2 AND e.state = 'pending'
                                    AND e.order_key = d.order_key
                                    AND e.delivery_id < d.delivery_id))
                            ORDER BY due_ms LIMIT $4
                            FOR UPDATE SKIP LOCKED),
                        taken AS (
                            UPDATE hookgate_destinations d
                            SET due_ms = $5, attempts = d.attempts + 1, scheduled = d.scheduled + 1
                            WHERE d.delivery_id = ANY (ARRAY (SELECT delivery_id FROM due))
                              AND d.name = $2
                            RETURNING d.delivery_id, d.attempts, d.scheduled)
                        SELECT t.delivery_id, t.attempts, t.scheduled, x.target, x.headers, x.body,
                               x.received_ms, x.event, x.key
                        FROM taken t JOIN hookgate_deliveries x ON x.id = t.delivery_id",
                    )
                    .await?,
                    &[
                        &route,
                        &destination,
                        &ms(now_ms),
                        &(limit as i64),
                        &held_until,
                    ],
                )
                .await
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| DueAttempt {
                id: DeliveryId(r.get::<_, i64>(0) as u64),
                destination: name.clone(),
                attempt: r.get::<_, i32>(1).max(0) as u32,
                scheduled: r.get::<_, i32>(2).max(0) as u32,
                target: r.get(3),
                headers: Bytes::from(r.get::<_, Vec<u8>>(4)),
                body: Bytes::from(r.get::<_, Vec<u8>>(5)),
                received_ms: r.get::<_, i64>(6).max(0) as u64,
                event: r.get(7),
                key: r.get(8),
            })
            .collect())
    }

    async fn next_due(&self, route: &str, destination: &str) -> Result<Option<u64>, StoreError> {
        let (route, destination) = (route.to_string(), destination.to_string());
        let row = self
            .run(move |c| async move {
                c.query_one(
                    &c.prepare_cached(
                        "SELECT min(due_ms) FROM hookgate_destinations
                     WHERE route = $1 AND name = $2 AND state = 'pending'",
                    )
                    .await?,
                    &[&route, &destination],
                )
                .await
            })
            .await?;
        Ok(row.get::<_, Option<i64>>(0).map(|d| d.max(0) as u64))
    }

    async fn record(&self, r: AttemptResult) -> Result<(), StoreError> {
        self.ensure_ready()?;
        let now = ms(unix_ms(SystemTime::now()));
        self.records.submit(Record::of(r, now)).await
    }

    async fn purge(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let now = ms(unix_ms(SystemTime::now()));
        self.run_on(&self.worker_pool, move |c| async move {
            let deliveries = c
                .execute(
                    &c.prepare_cached(
                        "DELETE FROM hookgate_deliveries WHERE id IN (
                        SELECT delivery_id FROM hookgate_finished WHERE finished_ms < $1
                        ORDER BY finished_ms LIMIT $2)",
                    )
                    .await?,
                    &[&ms(before_ms), &(limit as i64)],
                )
                .await?;
            let keys = c
                .execute(
                    &c.prepare_cached(
                        "DELETE FROM hookgate_claims WHERE key IN (
                        SELECT key FROM hookgate_claims WHERE expires_ms < $1
                        ORDER BY expires_ms LIMIT $2)",
                    )
                    .await?,
                    &[&now, &(limit as i64)],
                )
                .await?;
            Ok((deliveries + keys) as usize)
        })
        .await
    }

    async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[async_trait]
impl QueueGauges for PostgresStore {
    async fn stats(&self) -> Result<Vec<DestinationStats>, StoreError> {
        let rows = self
            .run(|c| async move {
                c.query(
                    &c.prepare_cached(
                        "SELECT route, name, state, count(*), min(delivery_id)
                     FROM hookgate_destinations WHERE state <> 'delivered'
                     GROUP BY route, name, state",
                    )
                    .await?,
                    &[],
                )
                .await
            })
            .await?;
        let mut stats: HashMap<(String, String), DestinationStats> = HashMap::new();
        for r in &rows {
            let (route, name): (String, String) = (r.get(0), r.get(1));
            let s = stats
                .entry((route.clone(), name.clone()))
                .or_insert_with(|| DestinationStats {
                    route,
                    destination: name,
                    ..DestinationStats::default()
                });
            let count: i64 = r.get(3);
            match r.get::<_, &str>(2) {
                "dead" => s.dead = count,
                _ => {
                    s.pending = count;
                    s.oldest_pending_ms = Some(DeliveryId(r.get::<_, i64>(4) as u64).accepted_ms());
                }
            }
        }
        Ok(stats.into_values().collect())
    }
}

#[async_trait]
impl DeliveryLog for PostgresStore {
    async fn list(
        &self,
        filter: ListFilter,
    ) -> Result<(Vec<DeliverySummary>, Option<DeliveryId>), StoreError> {
        self.run(move |c| async move { log::list(&c, filter).await })
            .await
    }

    async fn get(&self, id: DeliveryId) -> Result<Option<DeliveryDetail>, StoreError> {
        self.run(move |c| async move { log::detail(&c, id).await })
            .await
    }

    async fn body(&self, id: DeliveryId) -> Result<Option<Bytes>, StoreError> {
        self.run(move |c| async move { log::body(&c, id).await })
            .await
    }

    async fn retry(
        &self,
        id: DeliveryId,
        destination: Option<&str>,
        now_ms: u64,
    ) -> Result<Option<usize>, StoreError> {
        let destination = destination.map(str::to_string);
        self.run(move |c| async move {
            let row = c
                .query_one(
                    &c.prepare_cached(
                    "WITH requeued AS (
                        UPDATE hookgate_destinations SET state = 'pending', due_ms = $3, scheduled = 0
                        WHERE delivery_id = $1
                          AND (($2::text IS NULL AND state = 'dead') OR name = $2)
                        RETURNING 1),
                    reopened AS (
                        DELETE FROM hookgate_finished
                        WHERE delivery_id = $1 AND EXISTS (SELECT 1 FROM requeued) RETURNING 1),
                    wake AS (SELECT pg_notify('hookgate_queue', '')
                             WHERE EXISTS (SELECT 1 FROM requeued))
                    SELECT EXISTS (SELECT 1 FROM hookgate_deliveries WHERE id = $1),
                           (SELECT count(*) FROM requeued),
                           (SELECT count(*) FROM reopened) + (SELECT count(*) FROM wake)")
.await?,
                    &[&(id.0 as i64), &destination, &ms(now_ms)],
                )
                .await?;
            Ok(row
                .get::<_, bool>(0)
                .then(|| row.get::<_, i64>(1) as usize))
        })
        .await
    }

    async fn retry_dead(&self, route: &str, now_ms: u64) -> Result<usize, StoreError> {
        let route = route.to_string();
        self.run(move |c| async move {
            let row = c
                .query_one(
                    &c.prepare_cached(
                    "WITH requeued AS (
                        UPDATE hookgate_destinations SET state = 'pending', due_ms = $2, scheduled = 0
                        WHERE route = $1 AND state = 'dead'
                        RETURNING delivery_id),
                    reopened AS (
                        DELETE FROM hookgate_finished
                        WHERE delivery_id IN (SELECT delivery_id FROM requeued) RETURNING 1),
                    wake AS (SELECT pg_notify('hookgate_queue', '')
                             WHERE EXISTS (SELECT 1 FROM requeued))
                    SELECT (SELECT count(*) FROM requeued),
                           (SELECT count(*) FROM reopened) + (SELECT count(*) FROM wake)")
.await?,
                    &[&route, &ms(now_ms)],
                )
                .await?;
            Ok(row.get::<_, i64>(0) as usize)
        })
        .await
    }

    async fn replay(
        &self,
        route: &str,
        ids: std::ops::Range<DeliveryId>,
        destination: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<(usize, Option<DeliveryId>), StoreError> {
        let (route, destination) = (route.to_string(), destination.map(str::to_string));
        self.run(move |c| async move {
            // A named destination a delivery lacks is added to it (a backfill); one it has is
            // requeued whatever its state. Without a name, every destination it has.
            let row = c
                .query_one(
                    &c.prepare_cached(
                    "WITH page AS (
                        SELECT id FROM hookgate_deliveries
                        WHERE route = $1 AND id >= $2 AND id < $3 ORDER BY id LIMIT $4),
                    added AS (
                        INSERT INTO hookgate_destinations
                            (delivery_id, position, route, name, state, due_ms, order_key)
                        SELECT p.id,
                               COALESCE((SELECT max(position) + 1 FROM hookgate_destinations x
                                         WHERE x.delivery_id = p.id), 0),
                               $1, $5, 'pending', $6,
                               (SELECT max(order_key) FROM hookgate_destinations x
                                WHERE x.delivery_id = p.id)
                        FROM page p WHERE $5::text IS NOT NULL
                        ON CONFLICT (delivery_id, name)
                        DO UPDATE SET state = 'pending', due_ms = $6, scheduled = 0
                        RETURNING delivery_id),
                    requeued AS (
                        UPDATE hookgate_destinations SET state = 'pending', due_ms = $6, scheduled = 0
                        WHERE $5::text IS NULL AND delivery_id IN (SELECT id FROM page)
                        RETURNING delivery_id),
                    reopened AS (
                        DELETE FROM hookgate_finished
                        WHERE delivery_id IN (SELECT delivery_id FROM added
                                              UNION ALL SELECT delivery_id FROM requeued)
                        RETURNING 1),
                    wake AS (SELECT pg_notify('hookgate_queue', '')
                             WHERE EXISTS (SELECT 1 FROM added) OR EXISTS (SELECT 1 FROM requeued))
                    SELECT (SELECT count(*) FROM added) + (SELECT count(*) FROM requeued),
                           (SELECT count(*) FROM page), (SELECT max(id) FROM page),
                           (SELECT count(*) FROM reopened) + (SELECT count(*) FROM wake)")
                    .await?,
                    &[
                        &route,
                        &(ids.start.0 as i64),
                        &(ids.end.0.min(i64::MAX as u64) as i64),
                        &(limit as i64),
                        &destination,
                        &ms(now_ms),
                    ],
                )
                .await?;
            let requeued = row.get::<_, i64>(0) as usize;
            let full = row.get::<_, i64>(1) as usize == limit;
            let last: Option<i64> = row.get(2);
            Ok((
                requeued,
                last.filter(|_| full).map(|id| DeliveryId(id as u64)),
            ))
        })
        .await
    }
}
