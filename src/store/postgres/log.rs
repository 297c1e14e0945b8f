//! The delivery log's reads (§10): pages of deliveries, one delivery with its attempts, a body.

use crate::store::queue::{
    AttemptView, DeliveryDetail, DeliveryId, DeliveryState, DeliverySummary, DestinationState,
    DestinationView, ListFilter,
};
use bytes::Bytes;
use deadpool_postgres::Object;
use std::collections::HashMap;
use tokio_postgres::Row;

fn destination_state(s: &str) -> DestinationState {
    match s {
        "delivered" => DestinationState::Delivered,
        "dead" => DestinationState::Dead,
        _ => DestinationState::Pending,
    }
}

fn delivery_state(destinations: &[DestinationView]) -> DeliveryState {
    DeliveryState::of(destinations.iter().map(|d| d.state))
}

fn destination_view(row: &Row) -> DestinationView {
    let state = destination_state(row.get("state"));
    DestinationView {
        name: row.get("name"),
        state,
        attempts: row.get::<_, i32>("attempts").max(0) as u32,
        next_attempt_ms: match state {
            DestinationState::Pending => {
                row.get::<_, Option<i64>>("due_ms").map(|d| d.max(0) as u64)
            }
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
    c: &Object,
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
                received_ms: r.get::<_, i64>("received_ms").max(0) as u64,
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

pub(super) async fn list(
    c: &Object,
    filter: ListFilter,
) -> Result<(Vec<DeliverySummary>, Option<DeliveryId>), tokio_postgres::Error> {
    let limit = filter.limit;
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
    Ok((summaries(c, page).await?, next))
}

pub(super) async fn detail(
    c: &Object,
    id: DeliveryId,
) -> Result<Option<DeliveryDetail>, tokio_postgres::Error> {
    let id = id.0 as i64;
    let Some(row) = c
        .query_opt(
            &c.prepare_cached(
                "SELECT id, route, received_ms, key, event FROM hookgate_deliveries WHERE id = $1",
            )
            .await?,
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let Some(summary) = summaries(c, std::slice::from_ref(&row)).await?.pop() else {
        return Ok(None);
    };
    let attempts = c
        .query(
            &c.prepare_cached(
                "SELECT destination, n, started_ms, duration_ms, status, error
             FROM hookgate_attempts WHERE delivery_id = $1 ORDER BY started_ms, destination, n",
            )
            .await?,
            &[&id],
        )
        .await?
        .iter()
        .map(|a| AttemptView {
            destination: a.get(0),
            n: a.get::<_, i32>(1).max(0) as u32,
            started_ms: a.get::<_, i64>(2).max(0) as u64,
            duration_ms: a.get::<_, i64>(3).max(0) as u64,
            status: a.get::<_, Option<i32>>(4).map(|s| s.clamp(0, 999) as u16),
            error: a.get(5),
        })
        .collect();
    Ok(Some(DeliveryDetail { summary, attempts }))
}

pub(super) async fn body(
    c: &Object,
    id: DeliveryId,
) -> Result<Option<Bytes>, tokio_postgres::Error> {
    Ok(c.query_opt(
        &c.prepare_cached("SELECT body FROM hookgate_deliveries WHERE id = $1")
            .await?,
        &[&(id.0 as i64)],
    )
    .await?
    .map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
}
