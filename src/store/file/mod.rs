//! The embedded durable store (`store.url: file:PATH`): one redb file holding idempotency keys
//! and, for queue routes, the deliveries, their attempts and the due-attempt index.
//!
//! Every write goes through one writer thread that groups whatever is waiting into one
//! transaction (group commit): concurrent acceptances share one fsync instead of paying one each.
//! A caller's answer is sent only after its transaction committed, so `queued` is never said
//! before the delivery is on disk. Writes that a crash may lose without breaking a promise (a
//! claim, an attempt's outcome: losing it only delivers the attempt again; an attempt's count
//! when it is taken: losing it only numbers the next attempt the same) commit without a sync,
//! and are synced within `writer::SYNC_EVERY` or by the next acceptance's sync.
//!
//! Here: opening the file and the idempotency keys of forward routes. `tables` holds the file's
//! tables and the writes that keep them consistent, `records` what is kept per delivery and
//! attempt, `writer` the group-commit thread, `queue` the delivery queue, `log` the delivery
//! log's reads.

mod counts;
mod log;
mod queue;
mod records;
mod tables;
mod writer;

use super::{Claim, ClaimToken, Store, StoreError};
use crate::pipeline::DeliveryKey;
use crate::store::claim_wait;
use crate::store::queue::unix_ms;
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use counts::Counts;
use records::err;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tables::{Tables, DEAD, DELIVERED, DELIVERIES, PENDING};
use tokio::sync::oneshot;
use writer::{Apply, Batch, Op, Reply, Writer};

/// redb's page cache: the hot pages (due index, newest deliveries) fit; without a bound it grows
/// toward 1 GiB with the backlog, and pending work belongs on disk, not in memory.
const CACHE_BYTES: usize = 64 << 20;

fn open_database(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

/// The open database, or none while it is being reopened after an I/O failure (redb refuses
/// every write after one until the file is opened again).
type Slot = Arc<ArcSwapOption<Database>>;

pub struct FileStore {
    db: Slot,
    writer: Mutex<mpsc::Sender<Op>>,
    counts: Arc<Mutex<Counts>>,
    /// Attempts in progress: destination → delivery id → held until (their lease). A take walks
    /// past the held rows at the front of its destination's due index, so each costs one probe.
    in_flight: Mutex<HashMap<String, HashMap<u64, Instant>>>,
}

impl FileStore {
    /// Opens (or creates) the store file and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::setup(format!("{}: {e}", dir.display())))?;
            }
        }
        let db = open_database(path)
            .map_err(|e| StoreError::setup(format!("{}: {e}", path.display())))?;
        let (counts, last_id) = Self::recount(&db)?;
        let db: Slot = Arc::new(ArcSwapOption::from_pointee(db));
        let counts = Arc::new(Mutex::new(counts));
        let next_id = Arc::new(AtomicU64::new(last_id.map_or(0, |l| l + 1)));
        let (tx, rx) = mpsc::channel::<Op>();
        let writer = Writer {
            db: db.clone(),
            path: path.to_path_buf(),
            counts: counts.clone(),
            next_id,
        };
        std::thread::Builder::new()
            .name("hookgate-store".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| StoreError::setup(format!("cannot start the store writer: {e}")))?;
        Ok(Self {
            db,
            writer: Mutex::new(tx),
            counts,
            in_flight: Mutex::default(),
        })
    }

    /// Creates every table, and counts what is open, pending and dead.
    fn recount(db: &Database) -> Result<(Counts, Option<u64>), StoreError> {
        let txn = db.begin_write().map_err(err)?;
        Tables::open(&txn).map_err(err)?;
        txn.commit().map_err(err)?;
        let read = db.begin_read().map_err(err)?;
        let mut counts = Counts::default();
        let count = |def: TableDefinition<(&str, u64), ()>,
                     into: &mut HashMap<String, i64>|
         -> Result<(), StoreError> {
            let table = read.open_table(def).map_err(err)?;
            for row in table.iter().map_err(err)? {
                let (k, _) = row.map_err(err)?;
                *into.entry(k.value().0.to_string()).or_default() += 1;
            }
            Ok(())
        };
        // Pending destinations, and the deliveries they keep open: a delivery is open while any
        // of its destinations is pending. The rows of one route ("route/destination") are
        // contiguous in key order.
        let pending = read.open_table(PENDING).map_err(err)?;
        let (mut route, mut ids) = (String::new(), std::collections::HashSet::new());
        for row in pending.iter().map_err(err)? {
            let (k, _) = row.map_err(err)?;
            let (key, id) = k.value();
            *counts.pending.entry(key.to_string()).or_default() += 1;
            let this = key.split_once('/').map_or(key, |(r, _)| r);
            if this != route {
                route = this.to_string();
                ids.clear();
            }
            if ids.insert(id) {
                *counts.open.entry(route.clone()).or_default() += 1;
            }
        }
        count(DEAD, &mut counts.dead)?;
        let deliveries = read.open_table(DELIVERIES).map_err(err)?;
        let last = deliveries.last().map_err(err)?.map(|(k, _)| k.value());
        Ok((counts, last))
    }

    async fn write<R: Send + 'static>(
        &self,
        durable: bool,
        f: impl for<'a, 't> FnOnce(&'a mut Tables<'t>, &'a mut Batch) -> Result<R, StoreError>
            + Send
            + 'static,
    ) -> Result<R, StoreError> {
        self.submit(durable, f)?
            .await
            .map_err(|_| StoreError::unavailable("the write was not committed"))?
    }

    /// Hands `f` to the writer thread now, in order with every other write, and returns the
    /// receiver of its outcome: a caller that does not need it may drop it.
    fn submit<R: Send + 'static>(
        &self,
        durable: bool,
        f: impl for<'a, 't> FnOnce(&'a mut Tables<'t>, &'a mut Batch) -> Result<R, StoreError>
            + Send
            + 'static,
    ) -> Result<oneshot::Receiver<Result<R, StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel::<Result<R, StoreError>>();
        let apply: Apply = Box::new(move |tables, batch| {
            let value = f(tables, batch)?;
            Ok(Box::new(move |committed: Result<(), StoreError>| {
                let _ = tx.send(committed.map(|()| value));
            }) as Reply)
        });
        self.writer
            .lock()
            .map_err(|_| StoreError::unavailable("store writer lock poisoned"))?
            .send(Op { durable, apply })
            .map_err(|_| StoreError::unavailable("the store writer stopped"))?;
        Ok(rx)
    }

    /// The open database, unless it is being reopened.
    fn database(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .load_full()
            .ok_or_else(|| StoreError::unavailable("the store file is being reopened"))
    }

    /// Runs a read on a blocking thread.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let db = self.database()?;
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::unavailable(format!("store read failed: {e}")))?
    }
}

#[async_trait]
impl Store for FileStore {
    async fn claim(&self, key: &DeliveryKey, lease: Duration) -> Result<Claim, StoreError> {
        let (id, lease) = (key.id, lease);
        self.write(false, move |t, _| {
            let now = unix_ms(SystemTime::now());
            Ok(match t.claim_of(id, now)? {
                Some((DELIVERED, _)) => Claim::Delivered,
                Some((_, expires)) => Claim::InFlight {
                    retry_after: claim_wait(Some(expires as i64), now as i64),
                },
                None => {
                    let token = ClaimToken::random();
                    t.set_claim(id, token.0, now + lease.as_millis() as u64)?;
                    Claim::Claimed(token)
                }
            })
        })
        .await
    }

    async fn complete(
        &self,
        key: &DeliveryKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let id = key.id;
        self.write(true, move |t, _| {
            let now = unix_ms(SystemTime::now());
            match t.claim_of(id, now)? {
                // Someone else's claim (ours ran out and was re-claimed): leave it alone.
                Some((owner, _)) if owner != token.0 && owner != DELIVERED => Ok(()),
                _ => t.set_claim(id, DELIVERED, now + ttl.as_millis() as u64),
            }
        })
        .await
    }

    async fn release(&self, key: &DeliveryKey, token: ClaimToken) -> Result<(), StoreError> {
        let id = key.id;
        self.write(false, move |t, _| {
            let now = unix_ms(SystemTime::now());
            if t.claim_of(id, now)?
                .is_some_and(|(owner, _)| owner == token.0)
            {
                t.remove_claim(id)?;
            }
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.write(false, |_, _| Ok(())).await
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[tokio::test]
    async fn the_file_store_keeps_every_promise_of_a_store_and_a_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&dir.path().join("state.db")).unwrap();
        conformance::claims(&store).await;
        conformance::queue(&store).await;
    }
}
