//! The embedded durable store (`store.url: file:PATH`): one redb file holding idempotency keys
//! and, for queue routes, the deliveries, their attempts and the due-attempt index.
//!
//! Every write goes through one writer thread that groups whatever is waiting into one
//! transaction (group commit): concurrent acceptances share one fsync instead of paying one each.
//! A caller's answer is sent only after its transaction committed, so `queued` is never said
//! before the delivery is on disk. Writes that a crash may lose without breaking a promise (a
//! claim, an attempt's outcome: losing it only delivers the attempt again) commit without a
//! sync, and are synced within `SYNC_EVERY` or by the next acceptance's sync.

use super::queue::{
    rfc3339, unix_ms, AttemptResult, AttemptView, DeliveryDetail, DeliveryId, DeliveryState,
    DeliverySummary, DestinationState, DestinationStats, DestinationView, DueAttempt, Enqueued,
    ListFilter, NewDelivery, Queue,
};
use super::{Claim, ClaimToken, Store, StoreError};
use crate::pipeline::DeliveryKey;
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::Bytes;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

/// Idempotency records: key → (claim token, or 0 once delivered; expiry in Unix ms).
const CLAIMS: TableDefinition<u128, (u128, u64)> = TableDefinition::new("claims");
/// (expiry ms, key): purges expired keys without a scan.
const CLAIM_EXPIRY: TableDefinition<(u64, u128), ()> = TableDefinition::new("claim_expiry");
/// id → the delivery's record (JSON, small: no body).
const DELIVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("deliveries");
/// id → the header lines, then the body.
const PAYLOADS: TableDefinition<u64, &[u8]> = TableDefinition::new("payloads");
/// (id, n) → one attempt (JSON).
const ATTEMPTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("attempts");
/// ("route/destination", due ms, id): the worker reads each destination's due attempts in order.
const DUE: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("due");
/// ("route/destination", id) of every pending destination: counts and the oldest pending.
const PENDING: TableDefinition<(&str, u64), ()> = TableDefinition::new("pending");
/// ("route/destination", id) of every dead destination.
const DEAD: TableDefinition<(&str, u64), ()> = TableDefinition::new("dead");
/// (finished ms, id) of delivered and dead deliveries: the retention purge.
const FINISHED: TableDefinition<(u64, u64), ()> = TableDefinition::new("finished");

/// Token 0 marks a delivered key.
const DELIVERED: u128 = 0;
/// Operations grouped into one transaction at most.
const MAX_BATCH: usize = 512;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredDelivery {
    route: String,
    received_ms: u64,
    key: Option<String>,
    event: Option<String>,
    target: String,
    /// Length of the header lines at the start of the payload.
    head_len: usize,
    destinations: Vec<StoredDestination>,
    /// Attempts recorded, over every destination (numbers the `ATTEMPTS` rows).
    attempts_recorded: u32,
    finished_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredDestination {
    name: String,
    state: DestinationState,
    /// Attempts started.
    attempts: u32,
    /// Attempts since the last retry by hand (indexes the retry schedule).
    scheduled: u32,
    /// Where this destination's `DUE` row is, while pending.
    due_ms: Option<u64>,
    last_status: Option<u16>,
    last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredAttempt {
    destination: String,
    n: u32,
    started_ms: u64,
    duration_ms: u64,
    status: Option<u16>,
    error: Option<String>,
}

impl StoredDelivery {
    fn state(&self) -> DeliveryState {
        let states = || self.destinations.iter().map(|d| d.state);
        if states().any(|s| s == DestinationState::Dead) {
            DeliveryState::Dead
        } else if states().any(|s| s == DestinationState::Pending) {
            DeliveryState::Pending
        } else {
            DeliveryState::Delivered
        }
    }

    fn summary(&self, id: DeliveryId) -> DeliverySummary {
        DeliverySummary {
            id: id.to_string(),
            route: self.route.clone(),
            received_at: rfc3339(self.received_ms),
            key: self.key.clone(),
            event: self.event.clone(),
            state: self.state(),
            destinations: self
                .destinations
                .iter()
                .map(|d| DestinationView {
                    name: d.name.clone(),
                    state: d.state,
                    attempts: d.attempts,
                    next_attempt_at: match d.state {
                        DestinationState::Pending => d.due_ms.map(rfc3339),
                        _ => None,
                    },
                    last_status: d.last_status,
                    last_error: d.last_error.clone(),
                })
                .collect(),
        }
    }
}

/// The delivery record `id` in a `DELIVERIES` table, read or written.
fn stored_delivery(
    table: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Option<StoredDelivery>, StoreError> {
    match table.get(id).map_err(err)? {
        Some(v) => decode(v.value()).map(Some),
        None => Ok(None),
    }
}

fn dest_key(route: &str, destination: &str) -> String {
    format!("{route}/{destination}")
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Failed(format!("corrupt record: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Every table, opened once per transaction.
struct Tables<'t> {
    claims: Table<'t, u128, (u128, u64)>,
    claim_expiry: Table<'t, (u64, u128), ()>,
    deliveries: Table<'t, u64, &'static [u8]>,
    payloads: Table<'t, u64, &'static [u8]>,
    attempts: Table<'t, (u64, u32), &'static [u8]>,
    due: Table<'t, (&'static str, u64, u64), ()>,
    pending: Table<'t, (&'static str, u64), ()>,
    dead: Table<'t, (&'static str, u64), ()>,
    finished: Table<'t, (u64, u64), ()>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            claims: txn.open_table(CLAIMS)?,
            claim_expiry: txn.open_table(CLAIM_EXPIRY)?,
            deliveries: txn.open_table(DELIVERIES)?,
            payloads: txn.open_table(PAYLOADS)?,
            attempts: txn.open_table(ATTEMPTS)?,
            due: txn.open_table(DUE)?,
            pending: txn.open_table(PENDING)?,
            dead: txn.open_table(DEAD)?,
            finished: txn.open_table(FINISHED)?,
        })
    }

    fn delivery(&self, id: u64) -> Result<Option<StoredDelivery>, StoreError> {
        stored_delivery(&self.deliveries, id)
    }

    fn put_delivery(&mut self, id: u64, d: &StoredDelivery) -> Result<(), StoreError> {
        self.deliveries
            .insert(id, encode(d).as_slice())
            .map_err(err)?;
        Ok(())
    }

    /// A live claim record of `key`, expired ones read as absent.
    fn claim_of(&self, key: u128, now_ms: u64) -> Result<Option<(u128, u64)>, StoreError> {
        Ok(self
            .claims
            .get(key)
            .map_err(err)?
            .map(|v| v.value())
            .filter(|(_, expires)| *expires > now_ms))
    }

    fn set_claim(&mut self, key: u128, token: u128, expires_ms: u64) -> Result<(), StoreError> {
        if let Some(old) = self.claims.insert(key, (token, expires_ms)).map_err(err)? {
            let (_, old_expiry) = old.value();
            self.claim_expiry.remove((old_expiry, key)).map_err(err)?;
        }
        self.claim_expiry
            .insert((expires_ms, key), ())
            .map_err(err)?;
        Ok(())
    }

    fn remove_claim(&mut self, key: u128) -> Result<(), StoreError> {
        if let Some(old) = self.claims.remove(key).map_err(err)? {
            let (_, expiry) = old.value();
            self.claim_expiry.remove((expiry, key)).map_err(err)?;
        }
        Ok(())
    }

    /// Makes destination `i` of `d` due at `at` (pending), from whatever state it was in.
    fn schedule(
        &mut self,
        id: u64,
        d: &mut StoredDelivery,
        i: usize,
        at: u64,
        counts: &mut Deltas,
    ) -> Result<(), StoreError> {
        let key = dest_key(&d.route, &d.destinations[i].name);
        let dest = &mut d.destinations[i];
        match dest.state {
            DestinationState::Pending => {
                if let Some(old) = dest.due_ms {
                    self.due.remove((key.as_str(), old, id)).map_err(err)?;
                }
            }
            DestinationState::Dead => {
                self.dead.remove((key.as_str(), id)).map_err(err)?;
                counts.dead(&key, -1);
                self.pending.insert((key.as_str(), id), ()).map_err(err)?;
                counts.pending(&key, 1);
            }
            DestinationState::Delivered => {
                self.pending.insert((key.as_str(), id), ()).map_err(err)?;
                counts.pending(&key, 1);
            }
        }
        dest.state = DestinationState::Pending;
        dest.due_ms = Some(at);
        self.due.insert((key.as_str(), at, id), ()).map_err(err)?;
        if let Some(finished) = d.finished_ms.take() {
            self.finished.remove((finished, id)).map_err(err)?;
            counts.open(&d.route, 1);
        }
        Ok(())
    }

    /// Marks `d` finished when no destination is pending any more.
    fn finish_if_done(
        &mut self,
        id: u64,
        d: &mut StoredDelivery,
        now_ms: u64,
        counts: &mut Deltas,
    ) -> Result<(), StoreError> {
        let done = d
            .destinations
            .iter()
            .all(|x| x.state != DestinationState::Pending);
        if done && d.finished_ms.is_none() {
            d.finished_ms = Some(now_ms);
            self.finished.insert((now_ms, id), ()).map_err(err)?;
            counts.open(&d.route, -1);
        }
        Ok(())
    }
}

/// Count changes a transaction makes, applied to [`Counts`] once it committed.
#[derive(Default)]
struct Deltas {
    open: Vec<(String, i64)>,
    pending: Vec<(String, i64)>,
    dead: Vec<(String, i64)>,
}

impl Deltas {
    fn open(&mut self, route: &str, n: i64) {
        self.open.push((route.to_string(), n));
    }
    fn pending(&mut self, key: &str, n: i64) {
        self.pending.push((key.to_string(), n));
    }
    fn dead(&mut self, key: &str, n: i64) {
        self.dead.push((key.to_string(), n));
    }
}

/// What the gauges and `max_queued` read without touching the file.
#[derive(Default)]
struct Counts {
    open: HashMap<String, i64>,
    pending: HashMap<String, i64>,
    dead: HashMap<String, i64>,
}

impl Counts {
    fn apply(&mut self, d: &Deltas) {
        for (map, changes) in [
            (&mut self.open, &d.open),
            (&mut self.pending, &d.pending),
            (&mut self.dead, &d.dead),
        ] {
            for (k, n) in changes {
                *map.entry(k.clone()).or_default() += n;
            }
        }
    }
}

/// What a writer op hands back to be sent once the commit's fate is known.
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Apply = Box<
    dyn for<'a, 't> FnOnce(&'a mut Tables<'t>, &'a mut Batch) -> Result<Reply, StoreError> + Send,
>;

struct Op {
    durable: bool,
    apply: Apply,
}

/// State one transaction's ops share: the count changes so far and the committed counts.
struct Batch {
    deltas: Deltas,
    counts: Arc<Mutex<Counts>>,
    next_id: Arc<AtomicU64>,
}

impl Batch {
    /// Undelivered deliveries of `route`, this transaction's changes included.
    fn open_count(&self, route: &str) -> i64 {
        let committed = self
            .counts
            .lock()
            .map(|c| c.open.get(route).copied().unwrap_or(0))
            .unwrap_or(0);
        committed
            + self
                .deltas
                .open
                .iter()
                .filter(|(r, _)| r == route)
                .map(|(_, n)| n)
                .sum::<i64>()
    }

    /// A new delivery id: after every earlier one, also across restarts.
    fn new_id(&self, now_ms: u64) -> DeliveryId {
        let floor = DeliveryId::at(now_ms).0;
        let mut current = self.next_id.load(Ordering::Relaxed);
        loop {
            let id = current.max(floor);
            match self.next_id.compare_exchange(
                current,
                id + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return DeliveryId(id),
                Err(seen) => current = seen,
            }
        }
    }
}

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
                    .map_err(|e| StoreError::Failed(format!("{}: {e}", dir.display())))?;
            }
        }
        let db = open_database(path)
            .map_err(|e| StoreError::Failed(format!("{}: {e}", path.display())))?;
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
            .map_err(|e| StoreError::Failed(format!("cannot start the store writer: {e}")))?;
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
        let (tx, rx) = oneshot::channel::<Result<R, StoreError>>();
        let apply: Apply = Box::new(move |tables, batch| {
            let value = f(tables, batch)?;
            Ok(Box::new(move |committed: Result<(), StoreError>| {
                let _ = tx.send(committed.map(|()| value));
            }) as Reply)
        });
        self.writer
            .lock()
            .map_err(|_| StoreError::Failed("store writer lock poisoned".into()))?
            .send(Op { durable, apply })
            .map_err(|_| StoreError::Failed("the store writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Failed("the write was not committed".into()))?
    }

    /// The open database, unless it is being reopened.
    fn database(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .load_full()
            .ok_or_else(|| StoreError::Unavailable("the store file is being reopened".into()))
    }

    /// Runs a read on a blocking thread.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let db = self.database()?;
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Failed(format!("store read failed: {e}")))?
    }
}

/// The writer thread's state: the database slot it may reopen, and what its batches share.
struct Writer {
    db: Slot,
    path: std::path::PathBuf,
    counts: Arc<Mutex<Counts>>,
    next_id: Arc<AtomicU64>,
}

/// Commits that need no sync of their own (recorded attempts, claims) are synced at most this
/// long after, or with the next acceptance.
const SYNC_EVERY: Duration = Duration::from_millis(100);

/// How long a reopen waits for reads in progress to let go of the old database.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

impl Writer {
    /// One transaction per batch of waiting ops; every op is answered after the commit. After a
    /// failed commit (a full disk, an I/O error) the file is reopened before the next batch, so
    /// the store recovers by itself once the disk is writable again.
    fn run(&self, rx: &mpsc::Receiver<Op>) {
        let mut broken = false;
        // A commit without a sync happened since the last synced one.
        let mut unsynced = false;
        loop {
            let first = if unsynced && !broken {
                match rx.recv_timeout(SYNC_EVERY) {
                    Ok(op) => op,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        unsynced = !self.sync();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match rx.recv() {
                    Ok(op) => op,
                    Err(_) => return,
                }
            };
            let mut ops = vec![first];
            while ops.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            if broken {
                match self.reopen() {
                    Ok(()) => {
                        broken = false;
                        tracing::info!(file = %self.path.display(), "store file reopened; writes resume");
                    }
                    // The ops are dropped unanswered: their callers see a failed write.
                    Err(e) => {
                        tracing::warn!(error = %e, "store file still not writable");
                        continue;
                    }
                }
            }
            let Some(db) = self.db.load_full() else {
                broken = true;
                continue;
            };
            let durable = ops.iter().any(|o| o.durable);
            match self.commit(&db, ops) {
                Ok((replies, deltas)) => {
                    unsynced = !durable;
                    if let Ok(mut c) = self.counts.lock() {
                        c.apply(&deltas);
                    }
                    for reply in replies {
                        reply(Ok(()));
                    }
                }
                // Every op of the batch is answered with an error: their senders drop with it.
                Err(e) => {
                    tracing::error!(error = %e, "store write failed; nothing of it was kept");
                    broken = true;
                }
            }
        }
    }

    /// Syncs what earlier commits left unsynced (an empty synced commit persists them).
    fn sync(&self) -> bool {
        let Some(db) = self.db.load_full() else {
            return false;
        };
        let synced = db.begin_write().map_err(err).and_then(|mut txn| {
            txn.set_durability(Durability::Immediate).map_err(err)?;
            txn.commit().map_err(err)
        });
        if let Err(e) = &synced {
            tracing::warn!(error = %e, "store sync failed");
        }
        synced.is_ok()
    }

    fn commit(&self, db: &Database, ops: Vec<Op>) -> Result<(Vec<Reply>, Deltas), StoreError> {
        let durable = ops.iter().any(|o| o.durable);
        let mut batch = Batch {
            deltas: Deltas::default(),
            counts: self.counts.clone(),
            next_id: self.next_id.clone(),
        };
        let mut txn = db.begin_write().map_err(err)?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(err)?;
        let mut replies = Vec::with_capacity(ops.len());
        {
            let mut tables = Tables::open(&txn).map_err(err)?;
            for op in ops {
                replies.push((op.apply)(&mut tables, &mut batch)?);
            }
        }
        txn.commit().map_err(err)?;
        Ok((replies, batch.deltas))
    }

    /// Closes the database (once reads in progress let go of it) and opens the file again.
    fn reopen(&self) -> Result<(), StoreError> {
        if let Some(mut old) = self.db.swap(None) {
            let deadline = std::time::Instant::now() + REOPEN_WAIT;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_read) if std::time::Instant::now() < deadline => {
                        old = still_read;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(still_read) => {
                        self.db.store(Some(still_read));
                        return Err(StoreError::Unavailable(
                            "reads still hold the store file".into(),
                        ));
                    }
                }
            }
        }
        let db = open_database(&self.path)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", self.path.display())))?;
        let (counts, _) = FileStore::recount(&db)?;
        if let Ok(mut c) = self.counts.lock() {
            *c = counts;
        }
        self.db.store(Some(Arc::new(db)));
        Ok(())
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
                    retry_after: Duration::from_millis(expires - now),
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

#[async_trait]
impl Queue for FileStore {
    async fn enqueue(&self, new: NewDelivery) -> Result<Enqueued, StoreError> {
        self.write(true, move |t, batch| {
            let now = unix_ms(SystemTime::now());
            if let Some(key) = &new.key {
                match t.claim_of(key.id, now)? {
                    Some((DELIVERED, _)) => return Ok(Enqueued::Duplicate),
                    Some((_, expires)) => {
                        return Ok(Enqueued::InFlight {
                            retry_after: Duration::from_millis(expires - now),
                        })
                    }
                    None => {}
                }
            }
            if batch.open_count(&new.route).max(0) as u64 >= new.max_queued {
                return Ok(Enqueued::Full);
            }
            let id = batch.new_id(new.received_ms);
            if let Some(key) = &new.key {
                t.set_claim(key.id, DELIVERED, now + key.ttl.as_millis() as u64)?;
            }
            let mut payload = Vec::with_capacity(new.headers.len() + new.body.len());
            payload.extend_from_slice(&new.headers);
            payload.extend_from_slice(&new.body);
            t.payloads.insert(id.0, payload.as_slice()).map_err(err)?;
            let mut stored = StoredDelivery {
                route: new.route.clone(),
                received_ms: new.received_ms,
                key: new.key.as_ref().map(DeliveryKey::hex),
                event: new.event.clone(),
                target: new.target.clone(),
                head_len: new.headers.len(),
                destinations: Vec::with_capacity(new.destinations.len()),
                attempts_recorded: 0,
                finished_ms: None,
            };
            for name in &new.destinations {
                let key = dest_key(&new.route, name);
                t.due.insert((key.as_str(), now, id.0), ()).map_err(err)?;
                t.pending.insert((key.as_str(), id.0), ()).map_err(err)?;
                batch.deltas.pending(&key, 1);
                stored.destinations.push(StoredDestination {
                    name: name.clone(),
                    state: DestinationState::Pending,
                    attempts: 0,
                    scheduled: 0,
                    due_ms: Some(now),
                    last_status: None,
                    last_error: None,
                });
            }
            if stored.destinations.is_empty() {
                stored.finished_ms = Some(now);
                t.finished.insert((now, id.0), ()).map_err(err)?;
            } else {
                batch.deltas.open(&new.route, 1);
            }
            t.put_delivery(id.0, &stored)?;
            Ok(Enqueued::Queued(id))
        })
        .await
    }

    async fn take_due(
        &self,
        route: &str,
        destination: &str,
        now_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<DueAttempt>, StoreError> {
        // Taking writes nothing: one process serves the file, so attempts in progress are
        // remembered here. After a crash they are simply due again when the file reopens.
        let key = dest_key(route, destination);
        let read = self.database()?.begin_read().map_err(err)?;
        let due = read.open_table(DUE).map_err(err)?;
        let deliveries = read.open_table(DELIVERIES).map_err(err)?;
        let payloads = read.open_table(PAYLOADS).map_err(err)?;
        let mut taken = Vec::new();
        let now = Instant::now();
        let held_until = now + lease;
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let held = in_flight.entry(destination.to_string()).or_default();
        // Holds whose lease ran out (their outcome was never recorded) are due again: forget them,
        // so the map stays as small as the attempts actually in progress.
        held.retain(|_, until| *until > now);
        for row in due
            .range((key.as_str(), 0, 0)..=(key.as_str(), now_ms, u64::MAX))
            .map_err(err)?
        {
            if taken.len() == limit {
                break;
            }
            let id = row.map_err(err)?.0.value().2;
            if held.contains_key(&id) {
                continue;
            }
            let Some(d) = stored_delivery(&deliveries, id)? else {
                continue;
            };
            let Some(dest) = d.destinations.iter().find(|x| x.name == destination) else {
                continue;
            };
            let payload = payloads
                .get(id)
                .map_err(err)?
                .map(|v| Bytes::copy_from_slice(v.value()))
                .unwrap_or_default();
            let head_len = d.head_len.min(payload.len());
            held.insert(id, held_until);
            taken.push(DueAttempt {
                id: DeliveryId(id),
                destination: destination.to_string(),
                attempt: dest.attempts + 1,
                scheduled: dest.scheduled + 1,
                target: d.target.clone(),
                headers: payload.slice(..head_len),
                body: payload.slice(head_len..),
                received_ms: d.received_ms,
            });
        }
        Ok(taken)
    }

    async fn next_due(&self, route: &str, destination: &str) -> Result<Option<u64>, StoreError> {
        let key = dest_key(route, destination);
        let read = self.database()?.begin_read().map_err(err)?;
        let due = read.open_table(DUE).map_err(err)?;
        let in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let held = in_flight.get(destination);
        let now = Instant::now();
        for row in due
            .range((key.as_str(), 0, 0)..=(key.as_str(), u64::MAX, u64::MAX))
            .map_err(err)?
        {
            let (_, at, id) = row.map_err(err)?.0.value();
            let is_held = held
                .and_then(|h| h.get(&id))
                .is_some_and(|until| *until > now);
            if !is_held {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    async fn record(&self, r: AttemptResult) -> Result<(), StoreError> {
        // Recorded without waiting for a sync: the writer syncs within `SYNC_EVERY` (or with the
        // next acceptance). A crash before that delivers the attempt again: at least once.
        let (taken, destination) = (r.id.0, r.destination.clone());
        let result = self
            .write(false, move |t, batch| {
                let now = unix_ms(SystemTime::now());
                let id = r.id.0;
                let Some(mut d) = t.delivery(id)? else {
                    return Ok(());
                };
                let Some(i) = d.destinations.iter().position(|x| x.name == r.destination) else {
                    return Ok(());
                };
                d.attempts_recorded += 1;
                let row = StoredAttempt {
                    destination: r.destination.clone(),
                    n: r.attempt,
                    started_ms: r.started_ms,
                    duration_ms: r.duration_ms,
                    status: r.status,
                    error: r.error.clone(),
                };
                t.attempts
                    .insert((id, d.attempts_recorded), encode(&row).as_slice())
                    .map_err(err)?;
                let key = dest_key(&d.route, &r.destination);
                let dest = &mut d.destinations[i];
                dest.last_status = r.status;
                dest.last_error = r.error.clone();
                // A retry by hand (or a newer attempt) superseded this one: keep its record only.
                if dest.state != DestinationState::Pending || dest.attempts + 1 != r.attempt {
                    t.put_delivery(id, &d)?;
                    return Ok(());
                }
                dest.attempts = r.attempt;
                dest.scheduled += 1;
                match r.next {
                    Some(Some(at)) => t.schedule(id, &mut d, i, at, &mut batch.deltas)?,
                    outcome => {
                        if let Some(old) = dest.due_ms.take() {
                            t.due.remove((key.as_str(), old, id)).map_err(err)?;
                        }
                        t.pending.remove((key.as_str(), id)).map_err(err)?;
                        batch.deltas.pending(&key, -1);
                        if outcome.is_none() {
                            dest.state = DestinationState::Delivered;
                        } else {
                            dest.state = DestinationState::Dead;
                            t.dead.insert((key.as_str(), id), ()).map_err(err)?;
                            batch.deltas.dead(&key, 1);
                        }
                        t.finish_if_done(id, &mut d, now, &mut batch.deltas)?;
                    }
                }
                t.put_delivery(id, &d)
            })
            .await;
        // Recorded: the destination is due again (or done) by what the store says. Not recorded:
        // it stays held until its lease runs out, then it is attempted again.
        if result.is_ok() {
            if let Some(held) = self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&destination)
            {
                held.remove(&taken);
            }
        }
        result
    }

    async fn purge(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.write(false, move |t, batch| {
            let now = unix_ms(SystemTime::now());
            let finished: Vec<(u64, u64)> = t
                .finished
                .range(..(before_ms, 0))
                .map_err(err)?
                .take(limit)
                .map(|row| row.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(err)?;
            let mut removed = 0;
            for (at, id) in finished {
                t.finished.remove((at, id)).map_err(err)?;
                if let Some(d) = t.delivery(id)? {
                    for dest in &d.destinations {
                        let key = dest_key(&d.route, &dest.name);
                        if t.dead.remove((key.as_str(), id)).map_err(err)?.is_some() {
                            batch.deltas.dead(&key, -1);
                        }
                    }
                    for n in 1..=d.attempts_recorded {
                        t.attempts.remove((id, n)).map_err(err)?;
                    }
                }
                t.deliveries.remove(id).map_err(err)?;
                t.payloads.remove(id).map_err(err)?;
                removed += 1;
            }
            let expired: Vec<(u64, u128)> = t
                .claim_expiry
                .range(..(now, 0))
                .map_err(err)?
                .take(limit)
                .map(|row| row.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(err)?;
            for (at, key) in expired {
                t.claim_expiry.remove((at, key)).map_err(err)?;
                if t.claims
                    .get(key)
                    .map_err(err)?
                    .is_some_and(|v| v.value().1 == at)
                {
                    t.claims.remove(key).map_err(err)?;
                }
                removed += 1;
            }
            Ok(removed)
        })
        .await
    }

    async fn stats(&self) -> Result<Vec<DestinationStats>, StoreError> {
        let counts = self
            .counts
            .lock()
            .map_err(|_| StoreError::Failed("store counts lock poisoned".into()))?;
        let mut keys: Vec<&String> = counts.pending.keys().chain(counts.dead.keys()).collect();
        keys.sort();
        keys.dedup();
        let oldest = |key: &str| -> Option<u64> {
            let read = self.database().ok()?.begin_read().ok()?;
            let pending = read.open_table(PENDING).ok()?;
            let mut rows = pending.range((key, 0)..=(key, u64::MAX)).ok()?;
            let (k, _) = rows.next()?.ok()?;
            Some(DeliveryId(k.value().1).accepted_ms())
        };
        Ok(keys
            .into_iter()
            .filter_map(|key| {
                let (route, destination) = key.split_once('/')?;
                let pending = counts.pending.get(key).copied().unwrap_or(0);
                Some(DestinationStats {
                    route: route.to_string(),
                    destination: destination.to_string(),
                    pending,
                    dead: counts.dead.get(key).copied().unwrap_or(0),
                    oldest_pending_ms: if pending > 0 { oldest(key) } else { None },
                })
            })
            .collect())
    }

    async fn list(
        &self,
        filter: ListFilter,
    ) -> Result<(Vec<DeliverySummary>, Option<DeliveryId>), StoreError> {
        self.read(move |db| {
            let read = db.begin_read().map_err(err)?;
            let deliveries = read.open_table(DELIVERIES).map_err(err)?;
            let before = filter.before.map_or(u64::MAX, |b| b.0);
            let keep = |d: &StoredDelivery| {
                !(filter.route.as_ref().is_some_and(|r| *r != d.route)
                    || filter.state.is_some_and(|s| s != d.state())
                    || filter
                        .destination
                        .as_ref()
                        .is_some_and(|n| !d.destinations.iter().any(|x| &x.name == n)))
            };
            let mut page = Vec::new();
            let mut next = None;
            let mut push = |id: u64, d: StoredDelivery| -> bool {
                if page.len() == filter.limit {
                    next = page
                        .last()
                        .map(|s: &DeliverySummary| s.id.parse().unwrap_or(DeliveryId(0)));
                    return false;
                }
                page.push(d.summary(DeliveryId(id)));
                true
            };
            if filter.state == Some(DeliveryState::Dead) {
                // Dead deliveries are few and indexed: read them, not the whole log.
                let dead = read.open_table(DEAD).map_err(err)?;
                let prefix = filter.route.as_ref().map(|r| format!("{r}/"));
                let mut ids = Vec::new();
                for row in dead.iter().map_err(err)? {
                    let (k, _) = row.map_err(err)?;
                    let (key, id) = k.value();
                    if id < before && prefix.as_ref().is_none_or(|p| key.starts_with(p.as_str())) {
                        ids.push(id);
                    }
                }
                ids.sort_unstable_by(|a, b| b.cmp(a));
                ids.dedup();
                for id in ids {
                    let Some(d) = stored_delivery(&deliveries, id)? else {
                        continue;
                    };
                    if keep(&d) && !push(id, d) {
                        break;
                    }
                }
                return Ok((page, next));
            }
            for row in deliveries.range(..before).map_err(err)?.rev() {
                let (k, v) = row.map_err(err)?;
                let d: StoredDelivery = decode(v.value())?;
                if keep(&d) && !push(k.value(), d) {
                    break;
                }
            }
            Ok((page, next))
        })
        .await
    }

    async fn get(&self, id: DeliveryId) -> Result<Option<DeliveryDetail>, StoreError> {
        self.read(move |db| {
            let read = db.begin_read().map_err(err)?;
            let deliveries = read.open_table(DELIVERIES).map_err(err)?;
            let Some(d) = stored_delivery(&deliveries, id.0)? else {
                return Ok(None);
            };
            let attempts_table = read.open_table(ATTEMPTS).map_err(err)?;
            let mut attempts = Vec::new();
            for row in attempts_table
                .range((id.0, 0)..=(id.0, u32::MAX))
                .map_err(err)?
            {
                let (_, v) = row.map_err(err)?;
                let a: StoredAttempt = decode(v.value())?;
                attempts.push(AttemptView {
                    destination: a.destination,
                    n: a.n,
                    started_at: rfc3339(a.started_ms),
                    duration_ms: a.duration_ms,
                    status: a.status,
                    error: a.error,
                });
            }
            Ok(Some(DeliveryDetail {
                summary: d.summary(id),
                attempts,
            }))
        })
        .await
    }

    async fn body(&self, id: DeliveryId) -> Result<Option<Bytes>, StoreError> {
        self.read(move |db| {
            let read = db.begin_read().map_err(err)?;
            let deliveries = read.open_table(DELIVERIES).map_err(err)?;
            let Some(d) = stored_delivery(&deliveries, id.0)? else {
                return Ok(None);
            };
            let payloads = read.open_table(PAYLOADS).map_err(err)?;
            Ok(payloads.get(id.0).map_err(err)?.map(|p| {
                let p = p.value();
                Bytes::copy_from_slice(&p[d.head_len.min(p.len())..])
            }))
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
        self.write(true, move |t, batch| {
            let Some(mut d) = t.delivery(id.0)? else {
                return Ok(None);
            };
            let chosen: Vec<usize> = d
                .destinations
                .iter()
                .enumerate()
                .filter(|(_, x)| match &destination {
                    Some(name) => &x.name == name,
                    None => x.state == DestinationState::Dead,
                })
                .map(|(i, _)| i)
                .collect();
            for &i in &chosen {
                t.schedule(id.0, &mut d, i, now_ms, &mut batch.deltas)?;
                d.destinations[i].scheduled = 0;
            }
            t.put_delivery(id.0, &d)?;
            Ok(Some(chosen.len()))
        })
        .await
    }

    async fn retry_dead(&self, route: &str, now_ms: u64) -> Result<usize, StoreError> {
        let route = route.to_string();
        self.write(true, move |t, batch| {
            let (from, to) = (format!("{route}/"), format!("{route}0"));
            let dead: Vec<(String, u64)> = t
                .dead
                .range((from.as_str(), 0)..(to.as_str(), 0))
                .map_err(err)?
                .map(|row| row.map(|(k, _)| (k.value().0.to_string(), k.value().1)))
                .collect::<Result<_, _>>()
                .map_err(err)?;
            let mut requeued = 0;
            for (key, id) in dead {
                let Some(mut d) = t.delivery(id)? else {
                    continue;
                };
                let name = key.split_once('/').map_or("", |(_, n)| n);
                if let Some(i) = d.destinations.iter().position(|x| x.name == name) {
                    t.schedule(id, &mut d, i, now_ms, &mut batch.deltas)?;
                    d.destinations[i].scheduled = 0;
                    t.put_delivery(id, &d)?;
                    requeued += 1;
                }
            }
            Ok(requeued)
        })
        .await
    }
}
