//! The body budget (`max_inflight_body`): every request body being read or held counts against
//! one global limit, so strangers cannot exhaust memory before a signature is checked.
//!
//! A request reserves its declared Content-Length before reading (a chunked body reserves as it
//! grows); a reservation that does not fit is refused with 503 `overloaded` and the sender
//! retries later. The reservation is returned when the request's body is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct BodyBudget {
    limit: usize,
    used: AtomicUsize,
}

impl BodyBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// An empty reservation that grows as the body arrives.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: 0,
        }
    }
}

/// Bytes one request holds against the budget; returned on drop.
pub struct Reservation {
    budget: Arc<BodyBudget>,
    held: usize,
}

impl Reservation {
    /// Makes sure `total` bytes are held; false when the budget cannot cover them.
    pub fn cover(&mut self, total: usize) -> bool {
        if total <= self.held {
            return true;
        }
        let more = total - self.held;
        if self.budget.take(more) {
            self.held = total;
            true
        } else {
            false
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_one_limit_and_return_on_drop() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reservation();
        assert!(a.cover(60));
        let mut b = budget.reservation();
        assert!(!b.cover(50), "60 + 50 exceeds 100");
        assert!(b.cover(40));
        assert_eq!(budget.used(), 100);
        assert!(a.cover(30), "covering less than held takes nothing");
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(b.cover(100));
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
