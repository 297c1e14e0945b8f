//! One broker connection shared by a destination's attempts: made on first use, dropped when it
//! fails, and made again no sooner than a backoff that doubles while the broker stays down.

use crate::exchange::ExchangeError;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct Connection<C> {
    state: Mutex<State<C>>,
}

struct State<C> {
    current: Option<C>,
    /// After a failed connect: no new try before this, and why it failed; attempts until then
    /// fail with the same error (a topic that is missing stays a refusal, not an outage).
    not_before: Option<(Instant, ExchangeError)>,
    backoff: Duration,
}

impl<C: Clone> Connection<C> {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                current: None,
                not_before: None,
                backoff: FIRST_BACKOFF,
            }),
        }
    }

    /// The open connection, or a new one from `connect`. Attempts that arrive while one is
    /// being made wait for it rather than each making their own.
    pub async fn get<F, Fut>(&self, connect: F) -> Result<C, ExchangeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<C, ExchangeError>>,
    {
        let mut state = self.state.lock().await;
        if let Some(c) = &state.current {
            return Ok(c.clone());
        }
        if let Some((t, why)) = &state.not_before {
            if Instant::now() < *t {
                return Err(why.clone());
            }
        }
        match connect().await {
            Ok(c) => {
                state.current = Some(c.clone());
                state.not_before = None;
                state.backoff = FIRST_BACKOFF;
                Ok(c)
            }
            Err(e) => {
                state.not_before = Some((Instant::now() + state.backoff, e.clone()));
                state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                Err(e)
            }
        }
    }

    /// Forgets the connection after a failure that may have broken it; the next attempt
    /// connects again.
    pub async fn reset(&self) {
        self.state.lock().await.current = None;
    }
}
