//! Destinations' breakers kept in the database, so that every replica holds a destination that is
//! down, and one replica's probe decides for all (the rules: `store::breaker`).
//!
//! Each call is one statement on the worker's pool. A success writes only when the breaker is
//! known to be dirty (failures counted or open, as of this replica's last look), so a healthy
//! destination costs one read per worker pass and no write per delivery.

use super::{ms, PostgresStore};
use crate::config::BreakerPolicy;
use crate::store::breaker::{BreakerState, BreakerView, Gate};
use crate::store::StoreError;
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct PostgresBreaker {
    store: Arc<PostgresStore>,
    route: String,
    destination: String,
    /// The row may hold failures or an open state: a success must reset it.
    dirty: AtomicBool,
}

impl PostgresBreaker {
    pub fn new(store: Arc<PostgresStore>, route: &str, destination: &str) -> Self {
        Self {
            store,
            route: route.to_string(),
            destination: destination.to_string(),
            // Another replica, or an earlier run, may have left it open.
            dirty: AtomicBool::new(true),
        }
    }

    fn names(&self) -> (String, String) {
        (self.route.clone(), self.destination.clone())
    }

    /// The row's (failures, open_until_ms, probe_until_ms); `None`: never failed.
    async fn read(&self) -> Result<Option<(i32, Option<i64>, Option<i64>)>, StoreError> {
        let (route, destination) = self.names();
        let store = &self.store;
        store
            .run_on(&store.worker_pool, move |c| async move {
                let row = c
                    .query_opt(
                        &c.prepare_cached(
                            "SELECT failures, open_until_ms, probe_until_ms FROM hookgate_breakers
                             WHERE route = $1 AND destination = $2",
                        )
                        .await?,
                        &[&route, &destination],
                    )
                    .await?;
                Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
            })
            .await
    }
}

#[async_trait]
impl BreakerState for PostgresBreaker {
    async fn gate(&self, now_ms: u64, probe_lease: Duration) -> Result<Gate, StoreError> {
        let (route, destination) = self.names();
        let (now, probe_until) = (ms(now_ms), ms(now_ms + probe_lease.as_millis() as u64));
        let store = &self.store;
        let row = store
            .run_on(&store.worker_pool, move |c| async move {
                // The probe goes to whichever replica's update gets the row first; the others
                // see it taken.
                c.query_opt(
                    &c.prepare_cached(
                        "WITH probe AS (
                            UPDATE hookgate_breakers SET probe_until_ms = $4
                            WHERE route = $1 AND destination = $2 AND open_until_ms <= $3
                              AND (probe_until_ms IS NULL OR probe_until_ms <= $3)
                            RETURNING 1)
                         SELECT (SELECT count(*) FROM probe), failures, open_until_ms
                         FROM hookgate_breakers WHERE route = $1 AND destination = $2",
                    )
                    .await?,
                    &[&route, &destination, &now, &probe_until],
                )
                .await
            })
            .await?;
        let Some(row) = row else {
            self.dirty.store(false, Ordering::Release);
            return Ok(Gate::Open);
        };
        let (probe, failures, open_until): (i64, i32, Option<i64>) =
            (row.get(0), row.get(1), row.get(2));
        self.dirty
            .store(failures > 0 || open_until.is_some(), Ordering::Release);
        Ok(match open_until {
            _ if probe == 1 => Gate::Probe,
            None => Gate::Open,
            Some(until) if until > now => {
                Gate::Held(Some(Duration::from_millis((until - now).unsigned_abs())))
            }
            // Another replica's probe is out.
            Some(_) => Gate::Held(None),
        })
    }

    async fn no_probe(&self) -> Result<(), StoreError> {
        let (route, destination) = self.names();
        let store = &self.store;
        store
            .run_on(&store.worker_pool, move |c| async move {
                c.execute(
                    &c.prepare_cached(
                        "UPDATE hookgate_breakers SET probe_until_ms = NULL
                         WHERE route = $1 AND destination = $2",
                    )
                    .await?,
                    &[&route, &destination],
                )
                .await
            })
            .await
            .map(drop)
    }

    async fn succeeded(&self) -> Result<(), StoreError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let (route, destination) = self.names();
        let store = &self.store;
        let reset = store
            .run_on(&store.worker_pool, move |c| async move {
                c.execute(
                    &c.prepare_cached(
                        "UPDATE hookgate_breakers
                         SET failures = 0, open_until_ms = NULL, probe_until_ms = NULL
                         WHERE route = $1 AND destination = $2
                           AND (failures > 0 OR open_until_ms IS NOT NULL)",
                    )
                    .await?,
                    &[&route, &destination],
                )
                .await
            })
            .await;
        if reset.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        reset.map(drop)
    }

    async fn failed(
        &self,
        policy: &BreakerPolicy,
        probe: bool,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.dirty.store(true, Ordering::Release);
        let (route, destination) = self.names();
        let threshold = i32::try_from(policy.failures).unwrap_or(i32::MAX);
        let (now, cooldown) = (ms(now_ms), ms(policy.cooldown.as_millis() as u64));
        let store = &self.store;
        let row = store
            .run_on(&store.worker_pool, move |c| async move {
                // As `LocalBreaker::failed`: the probe, or the failure that completes the run
                // while closed, opens it; while open, an attempt waits for the cooldown's end.
                c.query_one(
                    &c.prepare_cached(
                        "INSERT INTO hookgate_breakers AS b (route, destination, failures, open_until_ms)
                         VALUES ($1, $2, CASE WHEN $4::BOOLEAN OR $3::INT <= 1 THEN 0 ELSE 1 END,
                                 CASE WHEN $4 OR $3 <= 1 THEN $5::BIGINT + $6::BIGINT END)
                         ON CONFLICT (route, destination) DO UPDATE SET
                           failures = CASE
                             WHEN $4 OR (b.open_until_ms IS NULL AND b.failures + 1 >= $3) THEN 0
                             WHEN b.open_until_ms IS NULL THEN b.failures + 1
                             ELSE b.failures END,
                           open_until_ms = CASE
                             WHEN $4 OR (b.open_until_ms IS NULL AND b.failures + 1 >= $3)
                               THEN $5 + $6
                             ELSE b.open_until_ms END,
                           probe_until_ms = CASE WHEN $4 THEN NULL ELSE b.probe_until_ms END
                         RETURNING open_until_ms",
                    )
                    .await?,
                    &[&route, &destination, &threshold, &probe, &now, &cooldown],
                )
                .await
            })
            .await?;
        let open_until: Option<i64> = row.get(0);
        Ok(open_until.map(|u| u.max(0) as u64))
    }

    async fn view(&self, now_ms: u64) -> Result<BreakerView, StoreError> {
        let now = ms(now_ms);
        Ok(match self.read().await? {
            None => BreakerView::Closed { failures: 0 },
            Some((failures, None, _)) => BreakerView::Closed {
                failures: failures.max(0) as u32,
            },
            Some((_, Some(until), _)) if until > now => BreakerView::Open {
                until_ms: until as u64,
            },
            Some(_) => BreakerView::Probing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::breaker::conformance;
    use crate::store::postgres::tests::on_a_fresh_database;

    #[tokio::test]
    async fn a_shared_breaker_follows_the_rules_and_one_replicas_probe_decides_for_all() {
        let (store, drop_db) = on_a_fresh_database("breaker").await;
        conformance::scenario(&PostgresBreaker::new(store.clone(), "r", "d")).await;

        // Two replicas' views of one destination: what one counts, the other sees.
        let (a, b) = (
            PostgresBreaker::new(store.clone(), "r", "e"),
            PostgresBreaker::new(store.clone(), "r", "e"),
        );
        let (p, t, lease) = (conformance::policy(), 5_000_000, Duration::from_secs(40));
        a.failed(&p, false, t).await.unwrap();
        b.failed(&p, false, t).await.unwrap();
        let until = t + 10_000;
        assert_eq!(a.failed(&p, false, t).await.unwrap(), Some(until));
        assert_eq!(
            b.gate(t, lease).await.unwrap(),
            Gate::Held(Some(Duration::from_secs(10)))
        );
        assert_eq!(a.gate(until, lease).await.unwrap(), Gate::Probe);
        assert_eq!(b.gate(until, lease).await.unwrap(), Gate::Held(None));
        // A probe whose replica died is handed out again after its lease.
        assert_eq!(b.gate(until + 40_000, lease).await.unwrap(), Gate::Probe);
        b.succeeded().await.unwrap();
        assert_eq!(a.gate(until + 40_000, lease).await.unwrap(), Gate::Open);
        drop(store);
        drop_db();
    }
}
