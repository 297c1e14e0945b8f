//! The delivery queue on the store file: acceptances, the worker's takes and records, the
//! retention purge, and retries by hand.

use super::log;
use super::records::{dest_key, encode, err, StoredAttempt, StoredDelivery, StoredDestination};
use super::tables::{stored_delivery, DELIVERED, DELIVERIES, DUE, ORDERED, PAYLOADS, PENDING};
use super::FileStore;
use crate::pipeline::DeliveryKey;
use crate::store::claim_wait;
use crate::store::queue::{
    unix_ms, AttemptResult, DeliveryDetail, DeliveryId, DeliveryLog, DeliverySummary,
    DestinationState, DestinationStats, DueAttempt, Enqueued, ListFilter, NewDelivery, Next, Queue,
    QueueGauges,
};
use crate::store::StoreError;
use async_trait::async_trait;
use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable};
use std::time::{Duration, Instant, SystemTime};

impl FileStore {
    /// The due attempts of one destination, held as in progress here: one process serves the
    /// file, so which attempts are in progress is remembered in memory, and after a crash they
    /// are due again when the file reopens.
    fn take_from_file(
        &self,
        route: &str,
        destination: &str,
        now_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<DueAttempt>, StoreError> {
        let key = dest_key(route, destination);
        let read = self.database()?.begin_read().map_err(err)?;
        let due = read.open_table(DUE).map_err(err)?;
        let deliveries = read.open_table(DELIVERIES).map_err(err)?;
        let payloads = read.open_table(PAYLOADS).map_err(err)?;
        let ordered = read.open_table(ORDERED).map_err(err)?;
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
            // An ordered delivery waits while an earlier one of its key is pending here (being
            // attempted, or waiting for its next attempt).
            if let Some(order_key) = &d.order_key {
                let earlier = ordered
                    .range(
                        (key.as_str(), order_key.as_str(), 0)
                            ..(key.as_str(), order_key.as_str(), id),
                    )
                    .map_err(err)?
                    .next()
                    .is_some();
                if earlier {
                    continue;
                }
            }
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
                key: d.key.clone(),
                event: d.event.clone(),
            });
        }
        Ok(taken)
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
                            retry_after: claim_wait(Some(expires as i64), now as i64),
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
                order_key: new.order_key.clone(),
            };
            for name in &new.destinations {
                let key = dest_key(&new.route, name);
                t.due.insert((key.as_str(), now, id.0), ()).map_err(err)?;
                t.pending.insert((key.as_str(), id.0), ()).map_err(err)?;
                batch.deltas.pending(&key, 1);
                t.order(&key, new.order_key.as_deref(), id.0, true)?;
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
        let taken = self.take_from_file(route, destination, now_ms, limit, lease)?;
        if taken.is_empty() {
            return Ok(taken);
        }
        // `Hookgate-Attempt` is the number of attempts started (PRODUCT.md §9): each taken
        // attempt is counted in the file. The count goes to the writer now, ahead of the
        // attempt's own record, and is not waited for: it is synced within `SYNC_EVERY` or with
        // the next acceptance, so only a crash within that moment numbers the next attempt the
        // same. Waiting for it would hold the drain to one commit per take, and it then falls
        // behind the acceptances.
        let started: Vec<(u64, String)> = taken
            .iter()
            .map(|a| (a.id.0, a.destination.clone()))
            .collect();
        let counted = self.submit(false, move |t, _| {
            for (id, destination) in started {
                let Some(mut d) = t.delivery(id)? else {
                    continue;
                };
                if let Some(dest) = d.destinations.iter_mut().find(|x| x.name == destination) {
                    dest.attempts += 1;
                    t.put_delivery(id, &d)?;
                }
            }
            Ok(())
        });
        if let Err(e) = counted {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(held) = in_flight.get_mut(destination) {
                for a in &taken {
                    held.remove(&a.id.0);
                }
            }
            return Err(e);
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
                if dest.state != DestinationState::Pending || dest.attempts != r.attempt {
                    t.put_delivery(id, &d)?;
                    return Ok(());
                }
                if r.counts {
                    dest.scheduled += 1;
                }
                match r.next {
                    Next::RetryAt(at) => t.schedule(id, &mut d, i, at, &mut batch.deltas)?,
                    outcome => {
                        if let Some(old) = dest.due_ms.take() {
                            t.due.remove((key.as_str(), old, id)).map_err(err)?;
                        }
                        t.pending.remove((key.as_str(), id)).map_err(err)?;
                        batch.deltas.pending(&key, -1);
                        let order_key = d.order_key.clone();
                        t.order(&key, order_key.as_deref(), id, false)?;
                        if outcome == Next::Delivered {
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
}

#[async_trait]
impl QueueGauges for FileStore {
    async fn stats(&self) -> Result<Vec<DestinationStats>, StoreError> {
        let counts = self
            .counts
            .lock()
            .map_err(|_| StoreError::unavailable("store counts lock poisoned"))?;
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
}

#[async_trait]
impl DeliveryLog for FileStore {
    async fn list(
        &self,
        filter: ListFilter,
    ) -> Result<(Vec<DeliverySummary>, Option<DeliveryId>), StoreError> {
        self.read(move |db| log::list(db, filter)).await
    }

    async fn get(&self, id: DeliveryId) -> Result<Option<DeliveryDetail>, StoreError> {
        self.read(move |db| log::detail(db, id)).await
    }

    async fn body(&self, id: DeliveryId) -> Result<Option<Bytes>, StoreError> {
        self.read(move |db| log::body(db, id)).await
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

    async fn replay(
        &self,
        route: &str,
        ids: std::ops::Range<DeliveryId>,
        destination: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<(usize, Option<DeliveryId>), StoreError> {
        let (route, destination) = (route.to_string(), destination.map(str::to_string));
        self.write(true, move |t, batch| {
            // Ids lead with the acceptance time, so the window is one range of the table. It
            // holds every route's deliveries: the page counts what it passed over.
            let page: Vec<u64> = t
                .deliveries
                .range(ids.start.0..ids.end.0)
                .map_err(err)?
                .take(limit)
                .map(|row| row.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(err)?;
            let next = (page.len() == limit)
                .then(|| page.last().map(|&id| DeliveryId(id)))
                .flatten();
            let mut requeued = 0;
            for id in page {
                let Some(mut d) = t.delivery(id)? else {
                    continue;
                };
                if d.route != route {
                    continue;
                }
                let chosen: Vec<usize> = match &destination {
                    Some(name) => {
                        let i = match d.destinations.iter().position(|x| &x.name == name) {
                            Some(i) => i,
                            None => {
                                // Added as if delivered, so that scheduling it counts it pending.
                                d.destinations.push(StoredDestination {
                                    name: name.clone(),
                                    state: DestinationState::Delivered,
                                    attempts: 0,
                                    scheduled: 0,
                                    due_ms: None,
                                    last_status: None,
                                    last_error: None,
                                });
                                d.destinations.len() - 1
                            }
                        };
                        vec![i]
                    }
                    None => (0..d.destinations.len()).collect(),
                };
                for &i in &chosen {
                    t.schedule(id, &mut d, i, now_ms, &mut batch.deltas)?;
                    d.destinations[i].scheduled = 0;
                }
                t.put_delivery(id, &d)?;
                requeued += chosen.len();
            }
            Ok((requeued, next))
        })
        .await
    }
}
