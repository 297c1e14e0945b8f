//! The delivery log's reads (§10): pages of deliveries, one delivery with its attempts, a body.

use super::records::{decode, err, StoredAttempt, StoredDelivery};
use super::tables::{stored_delivery, ATTEMPTS, DEAD, DELIVERIES, PAYLOADS};
use crate::store::queue::{
    AttemptView, DeliveryDetail, DeliveryId, DeliveryState, DeliverySummary, ListFilter,
};
use crate::store::StoreError;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable};

pub(super) fn list(
    db: &Database,
    filter: ListFilter,
) -> Result<(Vec<DeliverySummary>, Option<DeliveryId>), StoreError> {
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
}

pub(super) fn detail(db: &Database, id: DeliveryId) -> Result<Option<DeliveryDetail>, StoreError> {
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
            started_ms: a.started_ms,
            duration_ms: a.duration_ms,
            status: a.status,
            error: a.error,
        });
    }
    Ok(Some(DeliveryDetail {
        summary: d.summary(id),
        attempts,
    }))
}

pub(super) fn body(db: &Database, id: DeliveryId) -> Result<Option<Bytes>, StoreError> {
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
}
