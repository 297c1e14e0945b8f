//! When a queued delivery's next attempt is due (PRODUCT.md §9): the route's `retry` delays with
//! jitter, a longer `Retry-After` from a 429 or 503 honoured up to an hour, dead after the last.

use crate::config::DeliveryPolicy;
use std::time::Duration;

/// The longest `Retry-After` honoured: a sender-chosen wait beyond this is capped.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// After failed attempt number `scheduled` (1-based, counted since the last retry by hand), the
/// Unix ms of the next attempt, or `None` when that was the last and the destination is dead.
/// `unit_random` is uniform in [0, 1): where in the jitter window the wait lands.
pub fn next_attempt(
    policy: &DeliveryPolicy,
    scheduled: u32,
    now_ms: u64,
    retry_after: Option<Duration>,
    unit_random: f64,
) -> Option<u64> {
    let index = usize::try_from(scheduled.checked_sub(1)?).ok()?;
    let delay = *policy.retry.get(index)?;
    let spread = policy.jitter * (2.0 * unit_random - 1.0);
    let mut wait = delay.mul_f64((1.0 + spread).max(0.0));
    if let Some(asked) = retry_after {
        wait = wait.max(asked.min(MAX_RETRY_AFTER));
    }
    Some(now_ms.saturating_add(wait.as_millis().min(u128::from(u64::MAX)) as u64))
}

/// A `Retry-After` value in seconds (the HTTP-date form is not honoured: webhook apps send
/// seconds, and a date needs a clock agreement the gateway cannot check).
pub fn parse_retry_after(value: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    text.parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retry: &[u64], jitter: f64) -> DeliveryPolicy {
        DeliveryPolicy {
            timeout: Duration::from_secs(30),
            retry: retry.iter().map(|s| Duration::from_secs(*s)).collect(),
            jitter,
            max_in_flight: 32,
            rate: None,
            max_queued: 10,
            retention: Duration::from_secs(60),
            order_by: None,
            breaker: None,
        }
    }

    #[test]
    fn each_failure_waits_the_next_delay_then_the_destination_is_dead() {
        let p = policy(&[30, 120], 0.0);
        assert_eq!(next_attempt(&p, 1, 1_000, None, 0.5), Some(31_000));
        assert_eq!(next_attempt(&p, 2, 1_000, None, 0.5), Some(121_000));
        assert_eq!(next_attempt(&p, 3, 1_000, None, 0.5), None);
        assert_eq!(next_attempt(&p, 0, 1_000, None, 0.5), None);
    }

    #[test]
    fn jitter_moves_the_wait_within_its_window() {
        let p = policy(&[100], 0.1);
        assert_eq!(next_attempt(&p, 1, 0, None, 0.0), Some(90_000));
        assert_eq!(next_attempt(&p, 1, 0, None, 0.5), Some(100_000));
        let high = next_attempt(&p, 1, 0, None, 0.999_999).unwrap();
        assert!((109_999..=110_000).contains(&high), "{high}");
    }

    #[test]
    fn a_longer_retry_after_is_honoured_up_to_an_hour() {
        let p = policy(&[10], 0.0);
        let longer = Some(Duration::from_secs(60));
        assert_eq!(next_attempt(&p, 1, 0, longer, 0.5), Some(60_000));
        let shorter = Some(Duration::from_secs(1));
        assert_eq!(next_attempt(&p, 1, 0, shorter, 0.5), Some(10_000));
        let huge = Some(Duration::from_secs(86_400));
        assert_eq!(next_attempt(&p, 1, 0, huge, 0.5), Some(3_600_000));
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(parse_retry_after(b" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
