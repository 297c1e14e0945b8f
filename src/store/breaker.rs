//! The state of a destination's circuit breaker (PRODUCT.md §9): after `failures` failed attempts
//! in a row it opens, and for `cooldown` no attempt starts; then one attempt probes the
//! destination. A success closes it; a failure opens it again.
//!
//! While it is open, a failed attempt (the probe, or one that was already running when it
//! opened) is due again at the end of the cooldown and does not count against its delivery's
//! retries, so a destination that is down does not turn its backlog dead.
//!
//! Where it is kept is the queue engine's choice: [`LocalBreaker`] in this process (the file
//! store, one process), or in the store that replicas share (Postgres), so that one replica's
//! probe decides for all of them. Both follow the rules written here and are tested with the
//! same scenario ([`conformance`]).

use crate::config::BreakerPolicy;
use crate::store::StoreError;
use async_trait::async_trait;
use std::sync::Mutex;
use std::time::Duration;

/// What the worker may take for a destination now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Closed: as many as there is room for.
    Open,
    /// The cooldown ended and this caller holds the probe: it takes at most one attempt and
    /// reports it, or gives the probe back with [`BreakerState::no_probe`].
    Probe,
    /// Held: nothing, for this long (`None`: until the probe out now ends).
    Held(Option<Duration>),
}

/// A breaker as the delivery log shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerView {
    /// Attempts flow; `failures` failed in a row so far.
    Closed { failures: u32 },
    /// No attempt starts before `until_ms` (Unix ms).
    Open { until_ms: u64 },
    /// The cooldown ended; one attempt probes the destination.
    Probing,
}

/// One destination's breaker, wherever it is kept. Times are Unix ms.
#[async_trait]
pub trait BreakerState: Send + Sync {
    /// Whether attempts may start now. `probe_lease`: how long a probe handed out is held for
    /// its caller, should it never report (a process that died).
    async fn gate(&self, now_ms: u64, probe_lease: Duration) -> Result<Gate, StoreError>;
    /// The probe handed out found nothing due: the next pass may probe again.
    async fn no_probe(&self) -> Result<(), StoreError>;
    /// A delivered attempt closes the breaker.
    async fn succeeded(&self) -> Result<(), StoreError>;
    /// A failed attempt; `probe`: it was the probe. When the breaker is (now) open, when the
    /// attempt is due again: the end of the cooldown. `None`: closed, the delivery's own
    /// schedule applies.
    async fn failed(
        &self,
        policy: &BreakerPolicy,
        probe: bool,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError>;
    async fn view(&self, now_ms: u64) -> Result<BreakerView, StoreError>;
}

/// A breaker kept in this process.
#[derive(Default)]
pub struct LocalBreaker {
    state: Mutex<Local>,
}

#[derive(Default)]
struct Local {
    /// Failed attempts in a row while closed.
    failures: u32,
    /// Open until then; `None`: closed.
    open_until: Option<u64>,
    /// The cooldown ended and a probe is out.
    probing: bool,
}

impl LocalBreaker {
    fn state(&self) -> std::sync::MutexGuard<'_, Local> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl BreakerState for LocalBreaker {
    async fn gate(&self, now_ms: u64, _probe_lease: Duration) -> Result<Gate, StoreError> {
        let mut s = self.state();
        Ok(match s.open_until {
            None => Gate::Open,
            Some(_) if s.probing => Gate::Held(None),
            Some(until) if now_ms < until => {
                Gate::Held(Some(Duration::from_millis(until - now_ms)))
            }
            Some(_) => {
                s.probing = true;
                Gate::Probe
            }
        })
    }

    async fn no_probe(&self) -> Result<(), StoreError> {
        self.state().probing = false;
        Ok(())
    }

    async fn succeeded(&self) -> Result<(), StoreError> {
        *self.state() = Local::default();
        Ok(())
    }

    async fn failed(
        &self,
        policy: &BreakerPolicy,
        probe: bool,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut s = self.state();
        if probe || s.open_until.is_none() && s.failures + 1 >= policy.failures {
            *s = Local {
                failures: 0,
                open_until: Some(now_ms + policy.cooldown.as_millis() as u64),
                probing: false,
            };
            return Ok(s.open_until);
        }
        if s.open_until.is_none() {
            s.failures += 1;
        }
        // Already running when it opened: it waits with the rest.
        Ok(s.open_until)
    }

    async fn view(&self, now_ms: u64) -> Result<BreakerView, StoreError> {
        let s = self.state();
        Ok(match s.open_until {
            None => BreakerView::Closed {
                failures: s.failures,
            },
            Some(until) if now_ms < until && !s.probing => BreakerView::Open { until_ms: until },
            Some(_) => BreakerView::Probing,
        })
    }
}

/// The rules every [`BreakerState`] follows, as one scenario; each engine's tests run it on a
/// fresh breaker (three failures, a cooldown of 10 s).
#[cfg(test)]
pub mod conformance {
    use super::*;

    pub fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures: 3,
            cooldown: Duration::from_secs(10),
        }
    }

    pub async fn scenario(b: &dyn BreakerState) {
        let (p, t) = (policy(), 1_000_000);
        let lease = Duration::from_secs(40);
        let view = |at| async move { b.view(at).await.unwrap() };
        assert_eq!(view(t).await, BreakerView::Closed { failures: 0 });

        // Failures in a row open it, and a success between resets the count.
        assert_eq!(b.failed(&p, false, t).await.unwrap(), None);
        assert_eq!(b.failed(&p, false, t).await.unwrap(), None);
        assert_eq!(view(t).await, BreakerView::Closed { failures: 2 });
        b.succeeded().await.unwrap();
        assert_eq!(b.failed(&p, false, t).await.unwrap(), None);
        assert_eq!(b.failed(&p, false, t).await.unwrap(), None);
        assert_eq!(b.gate(t, lease).await.unwrap(), Gate::Open);
        let until = t + 10_000;
        assert_eq!(b.failed(&p, false, t).await.unwrap(), Some(until));
        assert_eq!(view(t).await, BreakerView::Open { until_ms: until });
        assert_eq!(
            b.gate(t + 4_000, lease).await.unwrap(),
            Gate::Held(Some(Duration::from_secs(6)))
        );
        // An attempt that was running when it opened waits with the rest.
        assert_eq!(b.failed(&p, false, t + 1).await.unwrap(), Some(until));

        // After the cooldown, one probe at a time.
        assert_eq!(b.gate(until, lease).await.unwrap(), Gate::Probe);
        assert_eq!(b.gate(until, lease).await.unwrap(), Gate::Held(None));
        assert_eq!(view(until).await, BreakerView::Probing);
        // A failed probe opens it again.
        let again = until + 10_000;
        assert_eq!(b.failed(&p, true, until).await.unwrap(), Some(again));
        assert_eq!(view(until).await, BreakerView::Open { until_ms: again });
        // Nothing was due for the probe: it is handed out again.
        assert_eq!(b.gate(again, lease).await.unwrap(), Gate::Probe);
        b.no_probe().await.unwrap();
        assert_eq!(b.gate(again, lease).await.unwrap(), Gate::Probe);
        // A success closes it.
        b.succeeded().await.unwrap();
        assert_eq!(b.gate(again, lease).await.unwrap(), Gate::Open);
        assert_eq!(view(again).await, BreakerView::Closed { failures: 0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_breaker_follows_the_rules() {
        conformance::scenario(&LocalBreaker::default()).await;
    }
}
