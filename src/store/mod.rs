//! Idempotency stores: a delivery key is claimed (for `lease`) only after every check passed,
//! becomes delivered (for `ttl`) on an upstream 2xx, and is released otherwise.
//!
//! Each record has two states, like svix's `Start` / `Finished`: a short-lived claim owned by one
//! gateway's token, and a long-lived "delivered" marker. Only the claim's owner may complete or
//! release it, so a gateway whose lease ran out can never undo another gateway's claim.

pub mod breaker;
#[cfg(test)]
pub mod conformance;
pub mod file;
pub mod memory;
pub mod postgres;
pub mod queue;
pub mod redis;

use crate::pipeline::DeliveryKey;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Identifies one claim; random, so owners never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimToken(pub u128);

impl ClaimToken {
    /// What every engine stores in a delivered key's claim: no owner's token is ever this.
    pub const DELIVERED: ClaimToken = ClaimToken(0);

    pub fn random() -> Self {
        // Odd, so never `DELIVERED`, not even in the memory store's low 64 bits.
        Self(rand::random::<u128>() | 1)
    }
}

/// How long a sender is asked to wait for a claim that holds until `until_ms` (Unix ms), seen
/// at `now_ms`: until it runs out, or a second when the store cannot tell.
pub fn claim_wait(until_ms: Option<i64>, now_ms: i64) -> Duration {
    until_ms.map_or(Duration::from_secs(1), |until| {
        Duration::from_millis(until.saturating_sub(now_ms).max(0) as u64)
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This delivery may go upstream; decide the claim with the token afterwards.
    Claimed(ClaimToken),
    /// Already delivered: answer already_processed.
    Delivered,
    /// Another delivery of the key is in flight; retry after about this long.
    InFlight { retry_after: Duration },
}

/// Why a store operation failed, in the kinds a caller acts on differently; the cause below it
/// is kept for the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time (Redis or Postgres down, the store
    /// file being reopened): the same operation may succeed later, so senders are told to retry.
    #[error("store unavailable: {0}")]
    Unavailable(Cause),
    /// The store has no room left (a full disk): nothing more is accepted until room is made.
    #[error("store full: {0}")]
    Full(Cause),
    /// A stored record cannot be read back: that record is damaged, not the store.
    #[error("corrupt record in the store: {0}")]
    Corrupt(Cause),
    /// The store cannot be set up as configured (a URL that does not parse, a TLS setting, a
    /// thread, runtime or pool that does not start): hookgate does not start on it.
    #[error("store cannot start: {0}")]
    Setup(Cause),
}

type BoxedError = Box<dyn std::error::Error + Send + Sync>;

impl StoreError {
    pub fn unavailable(cause: impl Into<BoxedError>) -> Self {
        Self::Unavailable(Cause::from(cause.into()))
    }

    pub fn full(cause: impl Into<BoxedError>) -> Self {
        Self::Full(Cause::from(cause.into()))
    }

    pub fn corrupt(cause: impl Into<BoxedError>) -> Self {
        Self::Corrupt(Cause::from(cause.into()))
    }

    pub fn setup(cause: impl Into<BoxedError>) -> Self {
        Self::Setup(Cause::from(cause.into()))
    }
}

/// A store error's cause, shared rather than copied: one failed group write is the answer of
/// every operation that waited on it.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl From<BoxedError> for Cause {
    fn from(e: BoxedError) -> Self {
        Self(Arc::from(e))
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Atomically claims `key` for `lease` unless it is claimed or delivered.
    async fn claim(&self, key: &DeliveryKey, lease: Duration) -> Result<Claim, StoreError>;
    /// The upstream answered 2xx: remember the key as delivered for `ttl`.
    async fn complete(
        &self,
        key: &DeliveryKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// The upstream failed: forget our claim so the sender's retry goes through.
    async fn release(&self, key: &DeliveryKey, token: ClaimToken) -> Result<(), StoreError>;
    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Keys held per scope, where the store can tell cheaply (memory store).
    fn held_keys(&self) -> Vec<(Arc<str>, i64)> {
        Vec::new()
    }
    /// Delivered keys forgotten early to stay within a bound, per scope (memory store).
    fn evictions(&self) -> Vec<(Arc<str>, u64)> {
        Vec::new()
    }
    fn kind(&self) -> &'static str;
}
