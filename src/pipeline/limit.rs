//! The rate limit step (PRODUCT.md §3): after transport, from the head alone, before a byte of
//! body is read. The client address is the one §5 decides (a trusted proxy's forwarded one).

use crate::rate_limit::RateLimit;
use crate::rejection::Rejection;
use std::net::IpAddr;
use std::time::Instant;

pub fn check(limit: &RateLimit, client: IpAddr, now: Instant) -> Result<(), Rejection> {
    limit
        .take(client, now)
        .map_err(|retry_after| Rejection::RateLimited { retry_after })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn over_the_limit_is_429_with_the_wait() {
        let limit = RateLimit::new(1.0, 1.0);
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let t = Instant::now();
        assert_eq!(check(&limit, ip, t), Ok(()));
        let refused = check(&limit, ip, t).unwrap_err();
        assert_eq!(refused.describe().0, 429);
        assert_eq!(refused.code(), "rate_limited");
        assert_eq!(refused.retry_after(), Some(1));
        assert_eq!(check(&limit, ip, t + Duration::from_secs(1)), Ok(()));
    }
}
