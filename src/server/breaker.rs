//! A destination's circuit breaker (PRODUCT.md §9): after `failures` failed attempts in a row it
//! opens, and for `cooldown` no attempt starts; then one attempt probes the destination. A
//! success closes it; a failure opens it again.
//!
//! While it is open, a failed attempt (the probe, or one that was already running when it
//! opened) waits for the end of the cooldown and does not count against its delivery's retries,
//! so a destination that is down does not turn its backlog dead. The state is this process's:
//! replicas sharing a Postgres store each keep their own.

use crate::config::BreakerPolicy;
use prometheus::IntGauge;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Breaker {
    state: Mutex<State>,
    /// `hookgate_destination_open` of this destination.
    gauge: IntGauge,
}

#[derive(Default)]
struct State {
    /// Failed attempts in a row while closed.
    failures: u32,
    /// Open until then; `None`: closed.
    open_until: Option<Instant>,
    /// The cooldown ended and a probe is out.
    probing: bool,
}

/// What the worker may take for a destination now.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// Closed: as many as there is room for.
    Open,
    /// The cooldown ended: one attempt, the probe.
    Probe,
    /// Held: nothing, for this long (or until the probe out now ends).
    Held(Option<Duration>),
}

impl Breaker {
    pub fn new(gauge: IntGauge) -> Self {
        gauge.set(0);
        Self {
            state: Mutex::default(),
            gauge,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether attempts may start. A `Probe` answer hands out the one probe: the caller takes at
    /// most one attempt and reports it, or calls [`Breaker::no_probe`] when there was none due.
    pub fn gate(&self, policy: Option<&BreakerPolicy>, now: Instant) -> Gate {
        if policy.is_none() {
            return Gate::Open;
        }
        let mut s = self.state();
        match s.open_until {
            None => Gate::Open,
            Some(_) if s.probing => Gate::Held(None),
            Some(until) if now < until => Gate::Held(Some(until - now)),
            Some(_) => {
                s.probing = true;
                Gate::Probe
            }
        }
    }

    /// The probe handed out found nothing due: the next pass may probe again.
    pub fn no_probe(&self) {
        self.state().probing = false;
    }

    /// A delivered attempt closes the breaker.
    pub fn succeeded(&self) {
        let mut s = self.state();
        *s = State::default();
        self.gauge.set(0);
    }

    /// A failed attempt. When the breaker is (now) open, when the attempt is due again: the end
    /// of the cooldown, not counted against its delivery's retries. `None`: closed, the
    /// delivery's own schedule applies.
    pub fn failed(
        &self,
        policy: Option<&BreakerPolicy>,
        probe: bool,
        now: Instant,
    ) -> Option<Instant> {
        let policy = policy?;
        let mut s = self.state();
        if probe || s.open_until.is_none() && s.failures + 1 >= policy.failures {
            s.failures = 0;
            s.probing = false;
            s.open_until = Some(now + policy.cooldown);
            self.gauge.set(1);
            return s.open_until;
        }
        match s.open_until {
            // Already running when it opened: it waits with the rest.
            Some(until) => Some(until),
            None => {
                s.failures += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures: 3,
            cooldown: Duration::from_secs(10),
        }
    }

    fn breaker() -> Breaker {
        Breaker::new(IntGauge::new("g", "g").unwrap())
    }

    #[test]
    fn failures_in_a_row_open_it_and_a_success_between_resets_the_count() {
        let (b, p, t) = (breaker(), policy(), Instant::now());
        assert_eq!(b.failed(Some(&p), false, t), None);
        assert_eq!(b.failed(Some(&p), false, t), None);
        b.succeeded();
        assert_eq!(b.failed(Some(&p), false, t), None);
        assert_eq!(b.failed(Some(&p), false, t), None);
        assert_eq!(b.gate(Some(&p), t), Gate::Open);
        let until = t + Duration::from_secs(10);
        assert_eq!(b.failed(Some(&p), false, t), Some(until));
        assert_eq!(b.gauge.get(), 1);
        assert_eq!(
            b.gate(Some(&p), t + Duration::from_secs(4)),
            Gate::Held(Some(Duration::from_secs(6)))
        );
        // An attempt that was running when it opened waits with the rest.
        assert_eq!(b.failed(Some(&p), false, t), Some(until));
    }

    #[test]
    fn after_the_cooldown_one_probe_decides() {
        let (b, p, t) = (breaker(), policy(), Instant::now());
        for _ in 0..3 {
            b.failed(Some(&p), false, t);
        }
        let later = t + Duration::from_secs(10);
        assert_eq!(b.gate(Some(&p), later), Gate::Probe);
        assert_eq!(
            b.gate(Some(&p), later),
            Gate::Held(None),
            "one probe at a time"
        );
        assert_eq!(
            b.failed(Some(&p), true, later),
            Some(later + Duration::from_secs(10)),
            "a failed probe opens it again"
        );
        let again = later + Duration::from_secs(10);
        assert_eq!(b.gate(Some(&p), again), Gate::Probe);
        b.no_probe();
        assert_eq!(
            b.gate(Some(&p), again),
            Gate::Probe,
            "nothing was due: probe later"
        );
        b.succeeded();
        assert_eq!(b.gate(Some(&p), again), Gate::Open);
        assert_eq!(b.gauge.get(), 0);
    }

    #[test]
    fn without_a_policy_it_never_holds() {
        let (b, t) = (breaker(), Instant::now());
        for _ in 0..100 {
            assert_eq!(b.failed(None, false, t), None);
        }
        assert_eq!(b.gate(None, t), Gate::Open);
    }
}
