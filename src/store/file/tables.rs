//! The store file's tables, and the writes that keep them consistent with each other.

use super::counts::Deltas;
use super::records::{decode, dest_key, encode, err, StoredDelivery};
use crate::store::queue::DestinationState;
use crate::store::{ClaimToken, StoreError};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

/// Idempotency records: key → (claim token, or 0 once delivered; expiry in Unix ms).
pub(super) const CLAIMS: TableDefinition<u128, (u128, u64)> = TableDefinition::new("claims");
/// (expiry ms, key): purges expired keys without a scan.
pub(super) const CLAIM_EXPIRY: TableDefinition<(u64, u128), ()> =
    TableDefinition::new("claim_expiry");
/// id → the delivery's record (JSON, small: no body).
pub(super) const DELIVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("deliveries");
/// id → the header lines, then the body.
pub(super) const PAYLOADS: TableDefinition<u64, &[u8]> = TableDefinition::new("payloads");
/// (id, n) → one attempt (JSON).
pub(super) const ATTEMPTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("attempts");
/// ("route/destination", due ms, id): the worker reads each destination's due attempts in order.
pub(super) const DUE: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("due");
/// ("route/destination", id) of every pending destination: counts and the oldest pending.
pub(super) const PENDING: TableDefinition<(&str, u64), ()> = TableDefinition::new("pending");
/// ("route/destination", id) of every dead destination.
pub(super) const DEAD: TableDefinition<(&str, u64), ()> = TableDefinition::new("dead");
/// ("route/destination", order key, id) of every pending destination of an ordered delivery:
/// one is taken only when no earlier id of its key is pending there (`order_by`).
pub(super) const ORDERED: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("ordered");
/// (finished ms, id) of delivered and dead deliveries: the retention purge.
pub(super) const FINISHED: TableDefinition<(u64, u64), ()> = TableDefinition::new("finished");

/// Token 0 marks a delivered key.
pub(super) const DELIVERED: u128 = ClaimToken::DELIVERED.0;

/// The delivery record `id` in a `DELIVERIES` table, read or written.
pub(super) fn stored_delivery(
    table: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Option<StoredDelivery>, StoreError> {
    match table.get(id).map_err(err)? {
        Some(v) => decode(v.value()).map(Some),
        None => Ok(None),
    }
}

/// Every table, opened once per transaction.
pub(super) struct Tables<'t> {
    pub(super) claims: Table<'t, u128, (u128, u64)>,
    pub(super) claim_expiry: Table<'t, (u64, u128), ()>,
    pub(super) deliveries: Table<'t, u64, &'static [u8]>,
    pub(super) payloads: Table<'t, u64, &'static [u8]>,
    pub(super) attempts: Table<'t, (u64, u32), &'static [u8]>,
    pub(super) due: Table<'t, (&'static str, u64, u64), ()>,
    pub(super) pending: Table<'t, (&'static str, u64), ()>,
    pub(super) dead: Table<'t, (&'static str, u64), ()>,
    pub(super) finished: Table<'t, (u64, u64), ()>,
    pub(super) ordered: Table<'t, (&'static str, &'static str, u64), ()>,
}

impl<'t> Tables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<Self, redb::Error> {
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
            ordered: txn.open_table(ORDERED)?,
        })
    }

    pub(super) fn delivery(&self, id: u64) -> Result<Option<StoredDelivery>, StoreError> {
        stored_delivery(&self.deliveries, id)
    }

    pub(super) fn put_delivery(&mut self, id: u64, d: &StoredDelivery) -> Result<(), StoreError> {
        self.deliveries
            .insert(id, encode(d).as_slice())
            .map_err(err)?;
        Ok(())
    }

    /// A live claim record of `key`, expired ones read as absent.
    pub(super) fn claim_of(
        &self,
        key: u128,
        now_ms: u64,
    ) -> Result<Option<(u128, u64)>, StoreError> {
        Ok(self
            .claims
            .get(key)
            .map_err(err)?
            .map(|v| v.value())
            .filter(|(_, expires)| *expires > now_ms))
    }

    pub(super) fn set_claim(
        &mut self,
        key: u128,
        token: u128,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        if let Some(old) = self.claims.insert(key, (token, expires_ms)).map_err(err)? {
            let (_, old_expiry) = old.value();
            self.claim_expiry.remove((old_expiry, key)).map_err(err)?;
        }
        self.claim_expiry
            .insert((expires_ms, key), ())
            .map_err(err)?;
        Ok(())
    }

    pub(super) fn remove_claim(&mut self, key: u128) -> Result<(), StoreError> {
        if let Some(old) = self.claims.remove(key).map_err(err)? {
            let (_, expiry) = old.value();
            self.claim_expiry.remove((expiry, key)).map_err(err)?;
        }
        Ok(())
    }

    /// Enters (or removes) a pending destination of an ordered delivery in `ORDERED`.
    pub(super) fn order(
        &mut self,
        dest_key: &str,
        order_key: Option<&str>,
        id: u64,
        pending: bool,
    ) -> Result<(), StoreError> {
        let Some(order_key) = order_key else {
            return Ok(());
        };
        if pending {
            self.ordered
                .insert((dest_key, order_key, id), ())
                .map_err(err)?;
        } else {
            self.ordered
                .remove((dest_key, order_key, id))
                .map_err(err)?;
        }
        Ok(())
    }

    /// Makes destination `i` of `d` due at `at` (pending), from whatever state it was in.
    pub(super) fn schedule(
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
                self.order(&key, d.order_key.as_deref(), id, true)?;
            }
            DestinationState::Delivered => {
                self.pending.insert((key.as_str(), id), ()).map_err(err)?;
                counts.pending(&key, 1);
                self.order(&key, d.order_key.as_deref(), id, true)?;
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
    pub(super) fn finish_if_done(
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
