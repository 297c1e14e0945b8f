//! A route's `limit` (PRODUCT.md §3): a token bucket per client address, in a bounded cache.
//!
//! Each address may make `burst` requests at once and `rate` per second after that. At most
//! [`TRACKED_ADDRESSES`] addresses are remembered per route: beyond that the least recently
//! seen are forgotten, and a forgotten address starts again with a full bucket. So memory is
//! bounded for any number of senders, and under a flood from more addresses than that the
//! limit is lenient for the ones pushed out rather than refusing anyone it cannot remember.
//! Buckets are per process: replicas do not share them, and a reload starts them afresh.

use quick_cache::sync::Cache;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TRACKED_ADDRESSES: usize = 65_536;

pub struct RateLimit {
    /// Requests per second, refilled continuously.
    pub rate: f64,
    /// Requests an address may make at once.
    pub burst: f64,
    buckets: Cache<IpAddr, Arc<Mutex<Bucket>>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            buckets: Cache::new(TRACKED_ADDRESSES),
        }
    }

    /// Takes one request's token for `addr` at `now`; when there is none, how long until
    /// there is.
    pub fn take(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let bucket = self
            .buckets
            .get_or_insert_with(&addr, || {
                Ok::<_, std::convert::Infallible>(Arc::new(Mutex::new(Bucket {
                    tokens: self.burst,
                    at: now,
                })))
            })
            .unwrap_or_else(|never| match never {});
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now.max(b.at);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    /// Addresses remembered now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limit = RateLimit::new(2.0, 3.0);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(limit.take(addr(1), t).is_ok());
        }
        let wait = limit.take(addr(1), t).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(
            limit.take(addr(2), t).is_ok(),
            "another address has its own bucket"
        );
        assert!(limit.take(addr(1), t + Duration::from_millis(499)).is_err());
        assert!(limit.take(addr(1), t + Duration::from_millis(1000)).is_ok());
    }

    #[test]
    fn an_idle_address_refills_only_up_to_the_burst() {
        let limit = RateLimit::new(10.0, 2.0);
        let t = Instant::now();
        assert!(limit.take(addr(1), t).is_ok());
        let later = t + Duration::from_secs(3600);
        assert!(limit.take(addr(1), later).is_ok());
        assert!(limit.take(addr(1), later).is_ok());
        assert!(limit.take(addr(1), later).is_err());
    }

    #[test]
    fn memory_is_bounded_for_any_number_of_addresses() {
        let limit = RateLimit::new(1.0, 1.0);
        let t = Instant::now();
        for n in 0..(TRACKED_ADDRESSES as u32 * 3) {
            let _ = limit.take(addr(n), t);
        }
        assert!(limit.tracked() <= TRACKED_ADDRESSES + TRACKED_ADDRESSES / 10);
    }
}
