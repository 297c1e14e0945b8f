//! The shared durable store (`store.url: postgres://…`): idempotency keys for forward routes and
//! the delivery queue for queue routes, shared by every replica.
//!
//! Each acceptance is one statement (claim, delivery, destinations and a NOTIFY in one writable
//! CTE), and acceptances that arrive together share one transaction and one commit (`accept`).
//! Workers
//! take due attempts with `FOR UPDATE SKIP LOCKED`, hold them with a lease (their due time moved
//! past `delivery.timeout` + 30s), and are woken by LISTEN/NOTIFY when another replica accepts or
//! retries a delivery. All database work runs on a runtime of the store's own, so connections
//! outlive any one Pingora service runtime. A database that does not answer at start does not stop
//! the gateway: migrations are retried every second, and until they are applied every operation
//! fails as unavailable (503 `store_unavailable`, `/readyz` 503).

mod accept;
mod migrations;

use super::queue::{
    rfc3339, unix_ms, AttemptResult, AttemptView, DeliveryDetail, DeliveryId, DeliveryState,
    DeliverySummary, DestinationState, DestinationStats, DestinationView, DueAttempt, Enqueued,
    ListFilter, NewDelivery, Queue,
};
use super::{Claim, ClaimToken, Store, StoreError};
use crate::pipeline::DeliveryKey;
use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Row};

/// The NOTIFY channel acceptances and retries signal on.
const CHANNEL: &str = "hookgate_queue";
/// One operation's limit: a database that hangs is a database that is down.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long a route's count of unfinished deliveries (`max_queued`) is reused.
const OPEN_COUNT_FOR: Duration = Duration::from_secs(1);
const POOL_SIZE: usize = 16;
const DELIVERED: [u8; 16] = [0; 16];

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn token_bytes(t: ClaimToken) -> [u8; 16] {
    t.0.to_be_bytes()
}

pub struct PostgresStore {
    pool: Pool,
    /// The worker's bookkeeping (taking due attempts, recording their outcome, purging) commits
    /// without waiting for the WAL flush: what a database crash loses of it is an attempt made
    /// again, which at-least-once allows; acceptances and keys keep synchronous commits.
    worker_pool: Pool,
    accepts: accept::GroupCommit,
    runtime: tokio::runtime::Handle,
    /// Migrations applied: operations may run.
    ready: Arc<AtomicBool>,
    changed: Arc<Notify>,
    /// Per route: unfinished deliveries and when they were counted.
    open: Mutex<HashMap<String, (i64, Instant)>>,
}

impl PostgresStore {
    /// Starts the store's runtime, its pool, the migration and the LISTEN loop. Never waits for
    /// the database.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let (url, verify) = TlsVerify::from_url(url);
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Failed(format!("invalid Postgres URL: {e}")))?;
        let tls = tls_connector(verify)?;
        let manager = |config: tokio_postgres::Config| {
            Manager::from_config(
                config,
                tls.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            )
        };
        let mut worker_config = config.clone();
        worker_config.options("-c synchronous_commit=off");
        let (manager, worker_manager) = (manager(config.clone()), manager(worker_config));
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("hookgate-postgres".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("hookgate-postgres")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(std::future::pending::<()>());
            })
            .map_err(|e| StoreError::Failed(format!("cannot start the Postgres thread: {e}")))?;
        let runtime = handle_rx
            .recv()
            .map_err(|_| StoreError::Failed("the Postgres thread ended".into()))?
            .map_err(|e| StoreError::Failed(format!("cannot start the Postgres runtime: {e}")))?;
        let pool_of = |manager: Manager| {
            let _guard = runtime.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(2)))
                .create_timeout(Some(Duration::from_secs(2)))
                .recycle_timeout(Some(Duration::from_secs(2)))
                .build()
                .map_err(|e| StoreError::Failed(format!("cannot build the Postgres pool: {e}")))
        };
        let (pool, worker_pool) = (pool_of(manager)?, pool_of(worker_manager)?);
        let store = Self {
            accepts: accept::GroupCommit::start(pool.clone(), &runtime),
            pool,
            worker_pool,
            runtime,
            ready: Arc::new(AtomicBool::new(false)),
            changed: Arc::new(Notify::new()),
            open: Mutex::default(),
        };
        store.runtime.spawn(background(
            config,
            tls,
            store.ready.clone(),
            store.changed.clone(),
        ));
        Ok(store)
    }

    /// Operations run only once the schema is migrated.
    fn ensure_ready(&self) -> Result<(), StoreError> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "Postgres is not reachable yet (or its schema is being migrated)".into(),
            ))
        }
    }

    /// Runs `work` with a pooled connection on the store's runtime, within `OP_TIMEOUT`.
    async fn run<R, F, Fut>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, tokio_postgres::Error>> + Send,
    {
        self.run_on(&self.pool, work).await
    }

    /// `run` on `pool`: the worker's bookkeeping runs on `worker_pool`.
    async fn run_on<R, F, Fut>(&self, pool: &Pool, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, tokio_postgres::Error>> + Send,
    {
        self.ensure_ready()?;
        let pool = pool.clone();
        let task = self.runtime.spawn(async move {
            tokio::time::timeout(OP_TIMEOUT, async move {
                let client = pool.get().await.map_err(unavailable)?;
                work(client).await.map_err(unavailable)
            })
            .await
            .map_err(|_| StoreError::Unavailable("Postgres did not answer in time".into()))?
        });
        task.await
            .map_err(|e| StoreError::Failed(format!("Postgres task failed: {e}")))?
    }

    /// Unfinished deliveries of `route`, counted at most once a second.
    async fn open_count(&self, route: &str) -> Result<i64, StoreError> {
        if let Some((n, at)) = self.open.lock().ok().and_then(|m| m.get(route).copied()) {
            if at.elapsed() < OPEN_COUNT_FOR {
                return Ok(n);
            }
        }
        let r = route.to_string();
        let n = self
            .run(move |c| async move {
                let row = c
                    .query_one(
                        &c.prepare_cached(
                            "SELECT count(DISTINCT delivery_id) FROM hookgate_destinations
                         WHERE route = $1 AND state = 'pending'",
                        )
                        .await?,
                        &[&r],
                    )
                    .await?;
                Ok(row.get::<_, i64>(0))
            })
            .await?;
        if let Ok(mut m) = self.open.lock() {
            m.insert(route.to_string(), (n, Instant::now()));
        }
        Ok(n)
    }

    fn count_accepted(&self, route: &str) {
        if let Ok(mut m) = self.open.lock() {
            if let Some((n, _)) = m.get_mut(route) {
                *n += 1;
            }
        }
    }
}

/// How the server's certificate is checked, as libpq's `sslmode` says: `disable`, `prefer` and
/// `require` do not check it (encryption only), `verify-ca` checks the chain against the system's
/// CA bundle, `verify-full` the host name too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsVerify {
    None,
    Chain,
    ChainAndHost,
}

impl TlsVerify {
    /// The URL as tokio-postgres reads it (it knows `sslmode` up to `require`) and what to check.
    fn from_url(url: &str) -> (String, Self) {
        for (mode, verify) in [
            ("sslmode=verify-full", Self::ChainAndHost),
            ("sslmode=verify-ca", Self::Chain),
        ] {
            if url.contains(mode) {
                return (url.replace(mode, "sslmode=require"), verify);
            }
        }
        (url.to_string(), Self::None)
    }
}

fn tls_connector(verify: TlsVerify) -> Result<postgres_openssl::MakeTlsConnector, StoreError> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut builder = SslConnector::builder(SslMethod::tls())
        .map_err(|e| StoreError::Failed(format!("TLS for Postgres: {e}")))?;
    if verify == TlsVerify::None {
        builder.set_verify(SslVerifyMode::NONE);
    } else {
        for ca in [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
        ] {
            if std::path::Path::new(ca).is_file() {
                builder
                    .set_ca_file(ca)
                    .map_err(|e| StoreError::Failed(format!("TLS for Postgres: {ca}: {e}")))?;
                break;
            }
        }
    }
    let mut connector = postgres_openssl::MakeTlsConnector::new(builder.build());
    if verify != TlsVerify::ChainAndHost {
        connector.set_callback(|config, _| {
            config.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(connector)
}

/// Applies migrations (retrying until the database answers), then listens for other replicas'
/// acceptances and retries, reconnecting when the connection drops.
async fn background(
    config: tokio_postgres::Config,
    tls: postgres_openssl::MakeTlsConnector,
    ready: Arc<AtomicBool>,
    changed: Arc<Notify>,
) {
    let mut warned = false;
    loop {
        let connected = config.connect(tls.clone()).await;
        let (mut client, mut connection) = match connected {
            Ok(pair) => pair,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "Postgres does not answer; trying again every second");
                    warned = true;
                }
                tokio::time::sleep(RETRY_EVERY).await;
                continue;
            }
        };
        // The connection is driven by a task of its own while the migration runs, then handed
        // to the notification loop below.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (notify_tx, mut notify_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let driver = tokio::spawn(async move {
            let mut stop = stop_rx;
            loop {
                let message = std::future::poll_fn(|cx| connection.poll_message(cx));
                tokio::select! {
                    m = message => match m {
                        Some(Ok(AsyncMessage::Notification(_))) => { let _ = notify_tx.send(()); }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return,
                    },
                    _ = &mut stop => return,
                }
            }
        });
        if !ready.load(Ordering::Acquire) {
            match migrations::migrate(&mut client).await {
                Ok(applied) => {
                    if !applied.is_empty() {
                        tracing::info!(versions = ?applied, "Postgres schema migrated");
                    }
                    ready.store(true, Ordering::Release);
                    tracing::info!("Postgres store ready");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Postgres schema migration failed; trying again");
                    let _ = stop_tx.send(());
                    let _ = driver.await;
                    tokio::time::sleep(RETRY_EVERY).await;
                    continue;
                }
            }
        }
        if client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .is_ok()
        {
            warned = false;
            while notify_rx.recv().await.is_some() {
                changed.notify_one();
            }
        }
        // The connection ended: catch up on anything missed, then reconnect.
        changed.notify_one();
        let _ = stop_tx.send(());
        let _ = driver.await;
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn claim(&self, key: &DeliveryKey, lease: Duration) -> Result<Claim, StoreError> {
        let id = key.id.to_be_bytes().to_vec();
        let token = ClaimToken::random();
        let now = unix_ms(SystemTime::now());
        let expires = ms(now + lease.as_millis() as u64);
        let row = self
            .run(move |c| async move {
                c.query_one(
                    &c.prepare_cached(
                        "WITH ins AS (
                        INSERT INTO hookgate_claims (key, token, expires_ms) VALUES ($1, $2, $3)
                        ON CONFLICT (key) DO UPDATE
                            SET token = EXCLUDED.token, expires_ms = EXCLUDED.expires_ms
                            WHERE hookgate_claims.expires_ms <= $4
                        RETURNING 1)
                    SELECT (SELECT count(*) FROM ins),
                           (SELECT token FROM hookgate_claims WHERE key = $1),
                           (SELECT expires_ms FROM hookgate_claims WHERE key = $1)",
                    )
                    .await?,
                    &[&id, &token_bytes(token).as_slice(), &expires, &ms(now)],
                )
                .await
            })
            .await?;
        if row.get::<_, i64>(0) == 1 {
            return Ok(Claim::Claimed(token));
        }
        let held: Option<Vec<u8>> = row.get(1);
        let until: Option<i64> = row.get(2);
        Ok(match held {
            Some(t) if t == DELIVERED => Claim::Delivered,
            // A claim another replica committed while this statement ran: in flight.
            _ => Claim::InFlight {
                retry_after: Duration::from_millis(
                    until.map_or(1000, |u| u.saturating_sub(ms(now)).max(0) as u64),
                ),
            },
        })
    }

    async fn complete(
        &self,
        key: &DeliveryKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let id = key.id.to_be_bytes().to_vec();
        let now = unix_ms(SystemTime::now());
        let expires = ms(now + ttl.as_millis() as u64);
        self.run(move |c| async move {
            // Ours, or none left (our lease ran out), or already delivered: delivered now.
            // Someone else's live claim is left alone.
            c.execute(
                &c.prepare_cached(
                    "INSERT INTO hookgate_claims (key, token, expires_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET token = $2, expires_ms = $3
                 WHERE hookgate_claims.token = $4 OR hookgate_claims.token = $2
                    OR hookgate_claims.expires_ms <= $5",
                )
                .await?,
                &[
                    &id,
                    &DELIVERED.as_slice(),
                    &expires,
                    &token_bytes(token).as_slice(),
                    &ms(now),
                ],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    async fn release(&self, key: &DeliveryKey, token: ClaimToken) -> Result<(), StoreError> {
        let id = key.id.to_be_bytes().to_vec();
        self.run(move |c| async move {
            c.execute(
                &c.prepare_cached("DELETE FROM hookgate_claims WHERE key = $1 AND token = $2")
                    .await?,
                &[&id, &token_bytes(token).as_slice()],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| async move { c.simple_query("SELECT 1").await.map(|_| ()) })
            .await
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}

fn destination_state(s: &str) -> DestinationState {
    match s {
        "delivered" => DestinationState::Delivered,
        "dead" => DestinationState::Dead,
        _ => DestinationState::Pending,
    }
}

fn delivery_state(destinations: &[DestinationView]) -> DeliveryState {
    if destinations
        .iter()
        .any(|d| d.state == DestinationState::Dead)
    {
        DeliveryState::Dead
    } else if destinations
        .iter()
        .any(|d| d.state == DestinationState::Pending)
    {
        DeliveryState::Pending
    } else {
        DeliveryState::Delivered
    }
}

fn destination_view(row: &Row) -> DestinationView {
    let state = destination_state(row.get("state"));
    DestinationView {
        name: row.get("name"),
        state,
        attempts: row.get::<_, i32>("attempts").max(0) as u32,
        next_attempt_at: match state {
            DestinationState::Pending => row
                .get::<_, Option<i64>>("due_ms")
                .map(|d| rfc3339(d.max(0) as u64)),
            _ => None,
        },
        last_status: row
            .get::<_, Option<i32>>("last_status")
            .map(|s| s.clamp(0, 999) as u16),
        last_error: row.get("last_error"),
    }
}

/// The summaries of delivery rows (id, route, received_ms, key, event) with their destinations.
async fn summaries(
    c: &deadpool_postgres::Object,
    rows: &[Row],
) -> Result<Vec<DeliverySummary>, tokio_postgres::Error> {
    let ids: Vec<i64> = rows.iter().map(|r| r.get("id")).collect();
    let dests = c
        .query(
            &c.prepare_cached(
                "SELECT delivery_id, name, state, attempts, due_ms, last_status, last_error
             FROM hookgate_destinations WHERE delivery_id = ANY($1)
             ORDER BY delivery_id, position",
            )
            .await?,
            &[&ids],
        )
        .await?;
    let mut by_id: HashMap<i64, Vec<DestinationView>> = HashMap::new();
    for d in &dests {
        by_id
            .entry(d.get("delivery_id"))
            .or_default()
            .push(destination_view(d));
    }
    Ok(rows
        .iter()
        .map(|r| {
            let id: i64 = r.get("id");
            let destinations = by_id.remove(&id).unwrap_or_default();
            DeliverySummary {
                id: DeliveryId(id as u64).to_string(),
                route: r.get("route"),
                received_at: rfc3339(r.get::<_, i64>("received_ms").max(0) as u64),
                key: r.get("key"),
                event: r.get("event"),
                state: delivery_state(&destinations),
                destinations,
            }
        })
        .collect())
}

/// A page of the delivery log, newest first, a delivery's state derived from its destinations
/// as [`delivery_state`] does. The aggregate runs per delivery on the destinations' key: as
/// subqueries of the `WHERE`, Postgres's generic plan hashed every pending destination for each
/// page.
const LIST: &str = "SELECT id, route, received_ms, key, event FROM hookgate_deliveries d
    CROSS JOIN LATERAL (
        SELECT bool_or(x.state = 'dead') AS dead, bool_or(x.state = 'pending') AS pending,
               bool_or(x.name = $3) AS named
        FROM hookgate_destinations x WHERE x.delivery_id = d.id) s
    WHERE id < $1
      AND ($2::text IS NULL OR route = $2)
      AND ($3::text IS NULL OR s.named)
      AND ($4::text IS NULL
           OR $4 = CASE WHEN s.dead THEN 'dead' WHEN s.pending THEN 'pending' ELSE 'delivered' END)
    ORDER BY id DESC LIMIT $5";
/// A page of the deliveries with a dead destination, found through that index.
const LIST_DEAD: &str = "SELECT id, route, received_ms, key, event FROM hookgate_deliveries d
    WHERE id IN (SELECT delivery_id FROM hookgate_destinations
                 WHERE state = 'dead' AND delivery_id < $1)
      AND ($2::text IS NULL OR route = $2)
      AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM hookgate_destinations x
                                       WHERE x.delivery_id = d.id AND x.name = $3))
    ORDER BY id DESC LIMIT $4";

/// The statements of [`Queue::record`], in the order they run. The first locks the delivery's
/// row (a lock only: the row is not written), so that the records of one delivery's
/// destinations run one after the other and the last one's finish check sees the others' states
/// committed; two records at once would each see the other's destination still pending, and
/// neither would finish the delivery.
const LOCK_DELIVERY: &str = "SELECT 1 FROM hookgate_deliveries WHERE id = $1 FOR NO KEY UPDATE";
/// An attempt is numbered as its destination numbered it (`Hookgate-Attempt`); an attempt whose
/// lease ran out and was taken again has a number of its own, so a record never collides but
/// for the same attempt recorded twice, which keeps the first.
const INSERT_ATTEMPT: &str = "INSERT INTO hookgate_attempts
        (delivery_id, n, destination, started_ms, duration_ms, status, error)
    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";
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

#[async_trait]
impl Queue for PostgresStore {
    async fn enqueue(&self, new: NewDelivery) -> Result<Enqueued, StoreError> {
        if self.open_count(&new.route).await? >= ms(new.max_queued) {
            return Ok(Enqueued::Full);
        }
        self.ensure_ready()?;
        let now = ms(unix_ms(SystemTime::now()));
        let route = new.route.clone();
        let outcome = self
            .accepts
            .accept(accept::Acceptance {
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
                            SELECT delivery_id FROM hookgate_destinations
                            WHERE route = $1 AND name = $2 AND state = 'pending' AND due_ms <= $3
                            ORDER BY due_ms LIMIT $4
                            FOR UPDATE SKIP LOCKED),
                        taken AS (
                            UPDATE hookgate_destinations d
                            SET due_ms = $5, attempts = d.attempts + 1, scheduled = d.scheduled + 1
                            WHERE d.delivery_id = ANY (ARRAY (SELECT delivery_id FROM due))
                              AND d.name = $2
                            RETURNING d.delivery_id, d.attempts, d.scheduled)
                        SELECT t.delivery_id, t.attempts, t.scheduled, x.target, x.headers, x.body,
                               x.received_ms
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
        let now = ms(unix_ms(SystemTime::now()));
        let (state, due) = match r.next {
            None => ("delivered", None),
            Some(Some(at)) => ("pending", Some(ms(at))),
            Some(None) => ("dead", None),
        };
        self.run_on(&self.worker_pool, move |mut c| async move {
            let id = r.id.0 as i64;
            let status = r.status.map(i32::from);
            let txn = c.transaction().await?;
            let (lock, insert, update, finish) = futures_util::try_join!(
                txn.prepare_cached(LOCK_DELIVERY),
                txn.prepare_cached(INSERT_ATTEMPT),
                txn.prepare_cached(UPDATE_DESTINATION),
                txn.prepare_cached(FINISH_DELIVERY),
            )?;
            let (started, took, attempt) = (ms(r.started_ms), ms(r.duration_ms), r.attempt as i32);
            let insert_params: [&(dyn ToSql + Sync); 7] = [
                &id,
                &attempt,
                &r.destination,
                &started,
                &took,
                &status,
                &r.error,
            ];
            let update_params: [&(dyn ToSql + Sync); 7] = [
                &id,
                &r.destination,
                &status,
                &r.error,
                &attempt,
                &state,
                &due,
            ];
            let lock_params: [&(dyn ToSql + Sync); 1] = [&id];
            let finish_params: [&(dyn ToSql + Sync); 2] = [&id, &now];
            // The four statements go out together (one round trip); Postgres runs them in order,
            // each seeing the ones before it.
            futures_util::try_join!(
                txn.execute(&lock, &lock_params),
                txn.execute(&insert, &insert_params),
                txn.execute(&update, &update_params),
                txn.execute(&finish, &finish_params),
            )?;
            txn.commit().await
        })
        .await
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

    async fn changed(&self) {
        self.changed.notified().await;
    }

    async fn list(
        &self,
        filter: ListFilter,
    ) -> Result<(Vec<DeliverySummary>, Option<DeliveryId>), StoreError> {
        let limit = filter.limit;
        self.run(move |c| async move {
            let before = filter.before.map_or(i64::MAX, |b| b.0 as i64);
            let state = filter.state.map(|s| match s {
                DeliveryState::Pending => "pending",
                DeliveryState::Delivered => "delivered",
                DeliveryState::Dead => "dead",
            });
            // Dead deliveries are few among many: their page is found from the dead
            // destinations' index rather than by walking every delivery newer than the last dead
            // one. The other states are read newest first, each delivery's destinations by key,
            // so a page costs the deliveries it passes over, never the whole pending backlog.
            let rows = if state == Some("dead") {
                c.query(
                    &c.prepare_cached(LIST_DEAD).await?,
                    &[
                        &before,
                        &filter.route,
                        &filter.destination,
                        &(limit as i64 + 1),
                    ],
                )
                .await?
            } else {
                c.query(
                    &c.prepare_cached(LIST).await?,
                    &[
                        &before,
                        &filter.route,
                        &filter.destination,
                        &state,
                        &(limit as i64 + 1),
                    ],
                )
                .await?
            };
            let more = rows.len() > limit;
            let page = &rows[..rows.len().min(limit)];
            let next = more
                .then(|| {
                    page.last()
                        .map(|r| DeliveryId(r.get::<_, i64>("id") as u64))
                })
                .flatten();
            Ok((summaries(&c, page).await?, next))
        })
        .await
    }

    async fn get(&self, id: DeliveryId) -> Result<Option<DeliveryDetail>, StoreError> {
        self.run(move |c| async move {
            let id = id.0 as i64;
            let Some(row) = c
                .query_opt(
                    &c.prepare_cached(
                    "SELECT id, route, received_ms, key, event FROM hookgate_deliveries WHERE id = $1")
.await?,
                    &[&id],
                )
                .await?
            else {
                return Ok(None);
            };
            let Some(summary) = summaries(&c, std::slice::from_ref(&row)).await?.pop() else {
                return Ok(None);
            };
            let attempts = c
                .query(
                    &c.prepare_cached(
                    "SELECT destination, n, started_ms, duration_ms, status, error
                     FROM hookgate_attempts WHERE delivery_id = $1 ORDER BY started_ms, destination, n")
.await?,
                    &[&id],
                )
                .await?
                .iter()
                .map(|a| AttemptView {
                    destination: a.get(0),
                    n: a.get::<_, i32>(1).max(0) as u32,
                    started_at: rfc3339(a.get::<_, i64>(2).max(0) as u64),
                    duration_ms: a.get::<_, i64>(3).max(0) as u64,
                    status: a.get::<_, Option<i32>>(4).map(|s| s.clamp(0, 999) as u16),
                    error: a.get(5),
                })
                .collect();
            Ok(Some(DeliveryDetail { summary, attempts }))
        })
        .await
    }

    async fn body(&self, id: DeliveryId) -> Result<Option<Bytes>, StoreError> {
        self.run(move |c| async move {
            Ok(c.query_opt(
                &c.prepare_cached("SELECT body FROM hookgate_deliveries WHERE id = $1")
                    .await?,
                &[&(id.0 as i64)],
            )
            .await?
            .map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
        })
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_verify_modes_become_require_plus_a_check() {
        let (url, v) = TlsVerify::from_url("postgres://u@db/h?sslmode=verify-full");
        assert_eq!(
            (url.as_str(), v),
            ("postgres://u@db/h?sslmode=require", TlsVerify::ChainAndHost)
        );
        let (_, v) = TlsVerify::from_url("postgres://u@db/h?sslmode=verify-ca");
        assert_eq!(v, TlsVerify::Chain);
        let (url, v) = TlsVerify::from_url("postgres://u@db/h?sslmode=require");
        assert_eq!(
            (url.as_str(), v),
            ("postgres://u@db/h?sslmode=require", TlsVerify::None)
        );
    }
}
