//! The shared durable store (`store.url: postgres://…`): idempotency keys for forward routes and
//! the delivery queue for queue routes, shared by every replica.
//!
//! Acceptances that arrive together share one transaction and one commit (`group`), as one
//! statement over arrays (claims, deliveries, destinations and a NOTIFY in one writable CTE);
//! so do the outcomes of attempts, in three statements a group. Workers take due attempts with
//! `FOR UPDATE SKIP LOCKED`, hold them with a lease (their due time moved past
//! `delivery.timeout` + 30s), and are woken by LISTEN/NOTIFY when another replica accepts or
//! retries a delivery. All database work runs on a runtime of the store's own, so connections
//! outlive any one Pingora service runtime. A database that does not answer at start does not
//! stop the gateway: migrations are retried
//! every second, and until they are applied every operation fails as unavailable (503
//! `store_unavailable`, `/readyz` 503).
//!
//! Here: the connection pools and the store's runtime. `claims` holds the idempotency keys of
//! forward routes, `group` the group commit, `accept` and `record` the acceptances and the
//! attempts' outcomes it writes, `queue` the rest of the delivery queue, `log` the delivery
//! log's reads, `listen` the migration and LISTEN connection, `migrations` the schema's
//! versions, `tls` the `sslmode` handling.

mod accept;
mod breaker;
mod claims;
mod group;
mod listen;
mod log;
mod migrations;
mod queue;
mod record;
mod tls;

use super::{ClaimToken, StoreError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use listen::background;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tls::{tls_connector, TlsVerify};
use tokio::sync::Notify;

/// The NOTIFY channel acceptances and retries signal on.
const CHANNEL: &str = "hookgate_queue";
/// One operation's limit: a database that hangs is a database that is down.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long a route's count of unfinished deliveries (`max_queued`) is reused.
const OPEN_COUNT_FOR: Duration = Duration::from_secs(1);
const POOL_SIZE: usize = 16;
const DELIVERED: [u8; 16] = ClaimToken::DELIVERED.0.to_be_bytes();

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(e.to_string())
}

/// What a Postgres error says, for logs: a server's error as its message and SQLSTATE, since
/// tokio-postgres's own text for one is only "db error"; another with its causes, since its
/// text for a TLS failure is only "error performing TLS handshake".
fn described(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A failed statement as unavailable, saying what Postgres said.
fn statement_failed(e: tokio_postgres::Error) -> StoreError {
    unavailable(described(&e))
}

/// `config` with session settings added to the URL's own `options`.
///
/// The store's connections plan without sequential scans (`enable_seqscan=off`). Every statement
/// here is written for an index, but a connection keeps the generic plan of a prepared statement,
/// and a plan made while a table held a few hundred rows reads the whole table: measured under
/// load, a worker's take that kept such a plan read every destination row once per take, and an
/// acceptance group's plan every claim, until the drain fell behind. The setting only prices
/// sequential scans out; one still runs where no index serves.
fn with_options(config: &tokio_postgres::Config, extra: &str) -> tokio_postgres::Config {
    let mut config = config.clone();
    let options = match config.get_options() {
        Some(own) if !own.is_empty() => format!("{own} {extra}"),
        _ => extra.to_string(),
    };
    config.options(&options);
    config
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
    accepts: group::Groups<accept::Accepts>,
    /// Attempts' outcomes, committed in groups on `worker_pool`.
    records: group::Groups<record::Records>,
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
            .map_err(|e| StoreError::setup(format!("invalid Postgres URL: {e}")))?;
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
        let (manager, worker_manager) = (
            manager(with_options(&config, "-c enable_seqscan=off")),
            manager(with_options(
                &config,
                "-c enable_seqscan=off -c synchronous_commit=off",
            )),
        );
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
            .map_err(|e| StoreError::setup(format!("cannot start the Postgres thread: {e}")))?;
        let runtime = handle_rx
            .recv()
            .map_err(|_| StoreError::setup("the Postgres thread ended"))?
            .map_err(|e| StoreError::setup(format!("cannot start the Postgres runtime: {e}")))?;
        let pool_of = |manager: Manager| {
            let _guard = runtime.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(2)))
                .create_timeout(Some(Duration::from_secs(2)))
                .recycle_timeout(Some(Duration::from_secs(2)))
                .build()
                .map_err(|e| StoreError::setup(format!("cannot build the Postgres pool: {e}")))
        };
        let (pool, worker_pool) = (pool_of(manager)?, pool_of(worker_manager)?);
        let store = Self {
            accepts: group::Groups::start(pool.clone(), &runtime),
            records: group::Groups::start(worker_pool.clone(), &runtime),
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
            Err(StoreError::unavailable(
                "Postgres is not reachable yet (or its schema is being migrated)",
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
                work(client).await.map_err(statement_failed)
            })
            .await
            .map_err(|_| StoreError::unavailable("Postgres did not answer in time"))?
        });
        task.await
            .map_err(|e| StoreError::unavailable(format!("Postgres task failed: {e}")))?
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::conformance;

    /// Runs `f` against its own database on this machine's PostgreSQL (user postgres, trust
    /// auth), dropped afterwards.
    pub(in crate::store::postgres) async fn on_a_fresh_database(
        name: &str,
    ) -> (Arc<PostgresStore>, impl FnOnce()) {
        let admin = |sql: String| {
            let out = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-qAt", "-c", &sql])
                .output()
                .expect("psql runs");
            assert!(
                out.status.success(),
                "PostgreSQL on 127.0.0.1:5432 must answer: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let db = format!("hookgate_unit_{name}_{:08x}", rand::random::<u32>());
        admin(format!("CREATE DATABASE {db}"));
        let store = Arc::new(
            PostgresStore::connect(&format!("postgres://postgres@127.0.0.1:5432/{db}")).unwrap(),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store.ensure_ready().is_err() {
            assert!(std::time::Instant::now() < deadline, "never migrated");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (store, move || {
            admin(format!("DROP DATABASE {db} WITH (FORCE)"))
        })
    }

    #[tokio::test]
    async fn postgres_keeps_every_promise_of_a_store_and_a_queue() {
        let (store, drop_db) = on_a_fresh_database("conformance").await;
        conformance::claims(&*store).await;
        conformance::queue(&*store).await;
        drop_db();
    }
}
