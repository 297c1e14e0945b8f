//! Idempotency stores: a delivery key is claimed (for `lease`) only after every check passed,
//! becomes delivered (for `ttl`) on an upstream 2xx, and is released otherwise.
//!
//! Each record has two states, like svix's `Start` / `Finished`: a short-lived claim owned by one
//! gateway's token, and a long-lived "delivered" marker. Only the claim's owner may complete or
//! release it, so a gateway whose lease ran out can never undo another gateway's claim.

pub mod breaker;
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
    pub fn random() -> Self {
        // Never 0: the memory store uses 0 for "delivered".
        Self(rand::random::<u128>() | 1)
    }
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

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (Redis down, connection lost).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered but the operation failed (disk full, corrupt record).
    #[error("store operation failed: {0}")]
    Failed(String),
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
