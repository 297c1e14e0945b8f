//! The delivery queue of `mode: queue` routes (PRODUCT.md §9) and its log (§10), as a capability
//! a durable store offers besides idempotency keys.
//!
//! A delivery is accepted in one atomic write (its key claimed as delivered, its body, its
//! headers and one due attempt per destination); the worker takes due attempts under a lease
//! (a crashed attempt is due again when the lease runs out) and records each outcome.

use super::breaker::BreakerState;
use super::StoreError;
use crate::pipeline::DeliveryKey;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: what the store keeps times as.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// A clean delivery to store.
pub struct NewDelivery {
    pub route: String,
    pub key: Option<DeliveryKey>,
    pub event: Option<String>,
    /// Path and query the sender used; the destinations receive the same.
    pub target: String,
    /// The header lines the apps receive (PRODUCT.md §6), without Content-Length.
    pub headers: Bytes,
    pub body: Bytes,
    /// The destinations this delivery goes to (the route's, filtered by event).
    pub destinations: Vec<String>,
    /// With `order_by`: deliveries with the same key are taken one at a time per destination,
    /// each only when no earlier one of that key is pending there.
    pub order_key: Option<String>,
    pub received_ms: u64,
    /// Refuse when the route already holds this many undelivered deliveries.
    pub max_queued: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored durably under this id.
    Queued(DeliveryId),
    /// The key was accepted before.
    Duplicate,
    /// A forward route sharing the key's scope is delivering it right now.
    InFlight { retry_after: Duration },
    /// The route holds `max_queued` undelivered deliveries.
    Full,
}

/// A delivery's id: its acceptance time in milliseconds in the high bits and a sequence below,
/// so ids sort newest-last and never repeat across restarts of one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryId(pub u64);

impl DeliveryId {
    const SEQ_BITS: u32 = 20;

    /// The first id of millisecond `ms`.
    pub fn at(ms: u64) -> Self {
        Self(ms << Self::SEQ_BITS)
    }

    pub fn accepted_ms(self) -> u64 {
        self.0 >> Self::SEQ_BITS
    }
}

impl std::fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dlv_{:016x}", self.0)
    }
}

impl std::str::FromStr for DeliveryId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let hex = s.strip_prefix("dlv_").ok_or(())?;
        if hex.len() != 16 {
            return Err(());
        }
        u64::from_str_radix(hex, 16).map(Self).map_err(|_| ())
    }
}

/// One attempt the worker is to make now.
#[derive(Debug, Clone)]
pub struct DueAttempt {
    pub id: DeliveryId,
    pub destination: String,
    /// 1 for the first attempt of this destination.
    pub attempt: u32,
    /// Attempts since the last retry by hand: indexes the retry schedule.
    pub scheduled: u32,
    pub target: String,
    pub headers: Bytes,
    pub body: Bytes,
    pub received_ms: u64,
    /// The idempotency key (hex) stored with the delivery: a Kafka message's default key.
    pub key: Option<String>,
    /// The event name stored with the delivery.
    pub event: Option<String>,
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub id: DeliveryId,
    pub destination: String,
    pub attempt: u32,
    pub started_ms: u64,
    pub duration_ms: u64,
    /// The app's status, when it answered.
    pub status: Option<u16>,
    /// Why it failed without an answer (`timeout`, `unavailable`).
    pub error: Option<String>,
    /// What becomes of the destination.
    pub next: Next,
    /// Whether it counts against the delivery's retries: a failure while the destination's
    /// breaker holds it open does not (its schedule stays where it was).
    pub counts: bool,
}

/// What an attempt's outcome makes of its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The destination has it: done.
    Delivered,
    /// Try again at this time (Unix ms).
    RetryAt(u64),
    /// No retry is left: dead until retried by hand.
    Dead,
}

impl Next {
    /// After a failure: the retry the schedule gives, or dead when it gives none.
    pub fn after_failure(retry_at: Option<u64>) -> Self {
        retry_at.map_or(Self::Dead, Self::RetryAt)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationState {
    Pending,
    Delivered,
    Dead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not yet delivered to every destination, none dead.
    Pending,
    Delivered,
    /// Some destination is dead.
    Dead,
}

impl DeliveryState {
    /// A delivery's state from its destinations': dead if any is, else pending if any is.
    pub fn of(destinations: impl Iterator<Item = DestinationState> + Clone) -> Self {
        if destinations.clone().any(|s| s == DestinationState::Dead) {
            Self::Dead
        } else if destinations
            .into_iter()
            .any(|s| s == DestinationState::Pending)
        {
            Self::Pending
        } else {
            Self::Delivered
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

/// A destination of one delivery, as the log shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationView {
    pub name: String,
    pub state: DestinationState,
    pub attempts: u32,
    #[serde(rename = "next_attempt_at", serialize_with = "log_time::optional")]
    pub next_attempt_ms: Option<u64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// One attempt, as the log shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub destination: String,
    pub n: u32,
    #[serde(rename = "started_at", serialize_with = "log_time::at")]
    pub started_ms: u64,
    pub duration_ms: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// A delivery in the list.
#[derive(Debug, Clone, Serialize)]
pub struct DeliverySummary {
    pub id: String,
    pub route: String,
    #[serde(rename = "received_at", serialize_with = "log_time::at")]
    pub received_ms: u64,
    pub key: Option<String>,
    pub event: Option<String>,
    pub state: DeliveryState,
    pub destinations: Vec<DestinationView>,
}

/// One delivery with every attempt.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub summary: DeliverySummary,
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub route: Option<String>,
    pub state: Option<DeliveryState>,
    pub destination: Option<String>,
    /// Only deliveries older than this id (the previous page's `next`).
    pub before: Option<DeliveryId>,
    pub limit: usize,
}

/// Per destination: what the queue gauges show.
#[derive(Debug, Clone, Default)]
pub struct DestinationStats {
    pub route: String,
    pub destination: String,
    pub pending: i64,
    pub dead: i64,
    /// Acceptance time of the oldest pending delivery.
    pub oldest_pending_ms: Option<u64>,
}

/// A queue engine as the gateway (`enqueue`) and the worker use it. Its other two sides are the
/// gauges' ([`QueueGauges`]) and the delivery log's ([`DeliveryLog`]); every engine has all three.
#[async_trait]
pub trait Queue: QueueGauges + DeliveryLog {
    /// Claims the key (as delivered, for its ttl) and stores the delivery, atomically and
    /// durably: only an `Ok(Queued)` may be answered `queued`.
    async fn enqueue(&self, delivery: NewDelivery) -> Result<Enqueued, StoreError>;
    /// Takes up to `limit` attempts of `destination` due by `now_ms`, each held for `lease`.
    async fn take_due(
        &self,
        route: &str,
        destination: &str,
        now_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<DueAttempt>, StoreError>;
    /// When `destination`'s next attempt is due, if it has one.
    async fn next_due(&self, route: &str, destination: &str) -> Result<Option<u64>, StoreError>;
    /// Records an attempt's outcome durably.
    async fn record(&self, result: AttemptResult) -> Result<(), StoreError>;
    /// Removes up to `limit` delivered or dead deliveries finished before `before_ms`, and
    /// expired keys; returns how many went.
    async fn purge(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError>;
    /// The breaker of `destination`, kept where every process sharing the store sees it;
    /// `None` for a store only one process uses (the process keeps it).
    fn shared_breaker(
        self: Arc<Self>,
        _route: &str,
        _destination: &str,
    ) -> Option<Arc<dyn BreakerState>> {
        None
    }
    /// Resolves when another process sharing the store accepted or retried a delivery (the
    /// worker wakes on it); never, for a store only one process uses.
    async fn changed(&self) {
        std::future::pending::<()>().await;
    }
}

/// What the queue gauges read, at each scrape.
#[async_trait]
pub trait QueueGauges: Send + Sync {
    /// Pending and dead counts per destination, for the gauges. A destination with nothing
    /// pending or dead may be left out; the gauges then read zero.
    async fn stats(&self) -> Result<Vec<DestinationStats>, StoreError>;
}

/// The delivery log (PRODUCT.md §10): what an operator reads, and the retries and replays they
/// ask for. The worker never calls it.
#[async_trait]
pub trait DeliveryLog: Send + Sync {
    /// Newest first, after `filter.before`; the cursor of the next page, if any.
    async fn list(
        &self,
        filter: ListFilter,
    ) -> Result<(Vec<DeliverySummary>, Option<DeliveryId>), StoreError>;
    async fn get(&self, id: DeliveryId) -> Result<Option<DeliveryDetail>, StoreError>;
    async fn body(&self, id: DeliveryId) -> Result<Option<Bytes>, StoreError>;
    /// Every dead destination of `id` (or only `destination`) is due now with a fresh
    /// schedule; `None` when there is no such delivery.
    async fn retry(
        &self,
        id: DeliveryId,
        destination: Option<&str>,
        now_ms: u64,
    ) -> Result<Option<usize>, StoreError>;
    /// Every dead destination of `route` is due now with a fresh schedule.
    async fn retry_dead(&self, route: &str, now_ms: u64) -> Result<usize, StoreError>;
    /// One page of a replay: the deliveries of `route` with ids in `ids` (a window of
    /// acceptance times, see [`DeliveryId::at`]), oldest first, up to `limit` of them. Each of
    /// its destinations, whatever its state (or only `destination`, added to a delivery that
    /// lacks it), is due now with a fresh schedule. Returns how many destinations were requeued
    /// and, when the page was full, the id the next page starts after.
    async fn replay(
        &self,
        route: &str,
        ids: std::ops::Range<DeliveryId>,
        destination: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<(usize, Option<DeliveryId>), StoreError>;
}

/// The delivery log's times are Unix ms in the engines and RFC 3339 in its JSON: they are
/// formatted here, as they are serialized, and nowhere else.
mod log_time {
    use serde::Serializer;

    pub fn at<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*ms))
    }

    pub fn optional<S: Serializer>(ms: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&super::rfc3339(*ms)),
            None => s.serialize_none(),
        }
    }
}

/// RFC 3339 time in UTC with milliseconds, as the log API shows times.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
