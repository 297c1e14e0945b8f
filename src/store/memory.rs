//! The embedded store: a bounded moka cache with per-entry expiry (claims live `lease`, delivered
//! keys live `ttl`); expiry is amortised by moka, never an O(n) sweep on the request path.

use super::{Claim, ClaimToken, Store, StoreError};
use crate::pipeline::DeliveryKey;
use async_trait::async_trait;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use moka::Expiry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Token 0 marks a delivered key.
const DELIVERED: u128 = 0;

/// Check-then-set on one key must be atomic; a stripe of small locks (picked by the key, which is
/// already a hash) gives that without moka's heavier compute machinery on every request.
const STRIPES: usize = 64;

#[derive(Clone)]
struct Record {
    token: u128,
    life: Duration,
    since: Instant,
    /// The route's held-keys count, decremented when moka drops the record.
    held: Arc<AtomicI64>,
}

struct LifeFromRecord;

impl Expiry<u128, Record> for LifeFromRecord {
    fn expire_after_create(&self, _: &u128, r: &Record, _: Instant) -> Option<Duration> {
        Some(r.life)
    }
    fn expire_after_update(
        &self,
        _: &u128,
        r: &Record,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(r.life)
    }
}

pub struct MemoryStore {
    /// Keyed by the delivery id alone: the route name is already hashed into it.
    cache: Cache<u128, Record>,
    stripes: Vec<Mutex<()>>,
    held: RwLock<HashMap<Arc<str>, Arc<AtomicI64>>>,
}

impl MemoryStore {
    pub fn new(max_keys: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_keys)
            // Growing the hash table step by step showed up as rehashing under load.
            .initial_capacity(max_keys.min(1 << 16) as usize)
            .expire_after(LifeFromRecord)
            .eviction_listener(|_k, r: Record, cause| {
                // A claim turning into "delivered" replaces the record: still one key held.
                if cause != RemovalCause::Replaced {
                    r.held.fetch_sub(1, Ordering::Relaxed);
                }
            })
            .build();
        Self {
            cache,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            held: RwLock::new(HashMap::new()),
        }
    }

    fn counter(&self, route: &Arc<str>) -> Arc<AtomicI64> {
        if let Some(c) = self.held.read().ok().and_then(|m| m.get(route).cloned()) {
            return c;
        }
        let mut map = self.held.write().unwrap_or_else(|p| p.into_inner());
        map.entry(route.clone()).or_default().clone()
    }

    fn stripe(&self, id: u128) -> std::sync::MutexGuard<'_, ()> {
        self.stripes[(id as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, id: u128, record: Record, fresh: bool) {
        if fresh {
            record.held.fetch_add(1, Ordering::Relaxed);
        }
        self.cache.insert(id, record);
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn claim(&self, key: &DeliveryKey, lease: Duration) -> Result<Claim, StoreError> {
        let _guard = self.stripe(key.id);
        Ok(match self.cache.get(&key.id) {
            Some(r) if r.token == DELIVERED => Claim::Delivered,
            Some(r) => Claim::InFlight {
                retry_after: r.life.saturating_sub(r.since.elapsed()),
            },
            None => {
                let token = ClaimToken::random();
                let held = self.counter(&key.route);
                self.insert(
                    key.id,
                    Record {
                        token: token.0,
                        life: lease,
                        since: Instant::now(),
                        held,
                    },
                    true,
                );
                Claim::Claimed(token)
            }
        })
    }

    async fn complete(
        &self,
        key: &DeliveryKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let _guard = self.stripe(key.id);
        let existing = self.cache.get(&key.id);
        match existing {
            // Someone else's claim (ours ran out and was re-claimed): leave it alone.
            Some(r) if r.token != token.0 => {}
            // Our claim, or none left (our lease ran out): the app did accept it, remember so.
            _ => {
                let held = self.counter(&key.route);
                let fresh = existing.is_none();
                self.insert(
                    key.id,
                    Record {
                        token: DELIVERED,
                        life: ttl,
                        since: Instant::now(),
                        held,
                    },
                    fresh,
                );
            }
        }
        Ok(())
    }

    async fn release(&self, key: &DeliveryKey, token: ClaimToken) -> Result<(), StoreError> {
        let _guard = self.stripe(key.id);
        if self.cache.get(&key.id).is_some_and(|r| r.token == token.0) {
            self.cache.invalidate(&key.id);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn held_keys(&self) -> Vec<(Arc<str>, i64)> {
        // Let moka apply pending expirations and evictions so the count is current.
        self.cache.run_pending_tasks();
        let map = self.held.read().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(r, c)| (r.clone(), c.load(Ordering::Relaxed)))
            .collect()
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(route: &str, id: u128) -> DeliveryKey {
        DeliveryKey {
            route: Arc::from(route),
            id,
        }
    }

    #[tokio::test]
    async fn claim_complete_release() {
        let s = MemoryStore::new(100);
        let lease = Duration::from_secs(60);
        let Claim::Claimed(t) = s.claim(&key("r", 1), lease).await.unwrap() else {
            panic!()
        };
        assert!(matches!(
            s.claim(&key("r", 1), lease).await.unwrap(),
            Claim::InFlight { .. }
        ));
        // Another route's key (its id hashes the route name too).
        assert!(matches!(
            s.claim(&key("other", 2), lease).await.unwrap(),
            Claim::Claimed(_)
        ));
        s.release(&key("r", 1), t).await.unwrap();
        let Claim::Claimed(t2) = s.claim(&key("r", 1), lease).await.unwrap() else {
            panic!()
        };
        // A stale token cannot touch the new claim.
        s.release(&key("r", 1), t).await.unwrap();
        s.complete(&key("r", 1), t, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(matches!(
            s.claim(&key("r", 1), lease).await.unwrap(),
            Claim::InFlight { .. }
        ));
        s.complete(&key("r", 1), t2, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            s.claim(&key("r", 1), lease).await.unwrap(),
            Claim::Delivered
        );
        let held: HashMap<_, _> = s.held_keys().into_iter().collect();
        assert_eq!(held[&Arc::from("r")], 1);
        assert_eq!(held[&Arc::from("other")], 1);
    }

    #[tokio::test]
    async fn claims_and_deliveries_expire() {
        let s = MemoryStore::new(100);
        let Claim::Claimed(_) = s
            .claim(&key("r", 1), Duration::from_millis(50))
            .await
            .unwrap()
        else {
            panic!()
        };
        let Claim::Claimed(t) = s
            .claim(&key("r", 2), Duration::from_secs(60))
            .await
            .unwrap()
        else {
            panic!()
        };
        s.complete(&key("r", 2), t, Duration::from_millis(50))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(matches!(
            s.claim(&key("r", 1), Duration::from_secs(1)).await.unwrap(),
            Claim::Claimed(_)
        ));
        assert!(matches!(
            s.claim(&key("r", 2), Duration::from_secs(1)).await.unwrap(),
            Claim::Claimed(_)
        ));
    }

    #[tokio::test]
    async fn bounded() {
        let s = MemoryStore::new(1000);
        for i in 0..5000 {
            s.claim(&key("r", i), Duration::from_secs(60))
                .await
                .unwrap();
        }
        let held = s.held_keys()[0].1;
        assert!(held <= 1000, "held {held}");
        s.cache.run_pending_tasks();
        assert!(s.cache.entry_count() <= 1000);
    }
}
