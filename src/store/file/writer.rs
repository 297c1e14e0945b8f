//! The writer thread: every write of the store, grouped into one transaction per batch of
//! waiting writes (group commit), answered only once that transaction committed.

use super::counts::{Counts, Deltas};
use super::records::err;
use super::tables::Tables;
use super::{open_database, FileStore, Slot};
use crate::store::queue::DeliveryId;
use crate::store::StoreError;
use redb::{Database, Durability};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Operations grouped into one transaction at most.
pub(super) const MAX_BATCH: usize = 512;

/// What a writer op hands back to be sent once the commit's fate is known.
pub(super) type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
pub(super) type Apply = Box<
    dyn for<'a, 't> FnOnce(&'a mut Tables<'t>, &'a mut Batch) -> Result<Reply, StoreError> + Send,
>;

pub(super) struct Op {
    pub(super) durable: bool,
    pub(super) apply: Apply,
}

/// State one transaction's ops share: the count changes so far and the committed counts.
pub(super) struct Batch {
    pub(super) deltas: Deltas,
    pub(super) counts: Arc<Mutex<Counts>>,
    pub(super) next_id: Arc<AtomicU64>,
}

impl Batch {
    /// Undelivered deliveries of `route`, this transaction's changes included.
    pub(super) fn open_count(&self, route: &str) -> i64 {
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
    pub(super) fn new_id(&self, now_ms: u64) -> DeliveryId {
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

/// The writer thread's state: the database slot it may reopen, and what its batches share.
pub(super) struct Writer {
    pub(super) db: Slot,
    pub(super) path: std::path::PathBuf,
    pub(super) counts: Arc<Mutex<Counts>>,
    pub(super) next_id: Arc<AtomicU64>,
}

/// Commits that need no sync of their own (recorded attempts, claims) are synced at most this
/// long after, or with the next acceptance.
pub(super) const SYNC_EVERY: Duration = Duration::from_millis(100);

/// How long a reopen waits for reads in progress to let go of the old database.
pub(super) const REOPEN_WAIT: Duration = Duration::from_secs(5);

impl Writer {
    /// One transaction per batch of waiting ops; every op is answered after the commit. After a
    /// failed commit (a full disk, an I/O error) the file is reopened before the next batch, so
    /// the store recovers by itself once the disk is writable again.
    pub(super) fn run(&self, rx: &mpsc::Receiver<Op>) {
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
    pub(super) fn sync(&self) -> bool {
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

    pub(super) fn commit(
        &self,
        db: &Database,
        ops: Vec<Op>,
    ) -> Result<(Vec<Reply>, Deltas), StoreError> {
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
    pub(super) fn reopen(&self) -> Result<(), StoreError> {
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
                        return Err(StoreError::unavailable("reads still hold the store file"));
                    }
                }
            }
        }
        let db = open_database(&self.path)
            .map_err(|e| StoreError::unavailable(format!("{}: {e}", self.path.display())))?;
        let (counts, _) = FileStore::recount(&db)?;
        if let Ok(mut c) = self.counts.lock() {
            *c = counts;
        }
        self.db.store(Some(Arc::new(db)));
        Ok(())
    }
}
