//! Destinations' breakers as the worker and the delivery log use them: each one's state (the
//! rules and where it is kept: `store::breaker`) with its `hookgate_destination_open` gauge.
//!
//! A breaker is made on first use and kept for the process: in the store that replicas share
//! when the queue engine offers one (Postgres), else in this process.

use crate::config::BreakerPolicy;
use crate::metrics::Metrics;
use crate::store::breaker::{BreakerState, BreakerView, Gate, LocalBreaker};
use crate::store::queue::{unix_ms, Queue};
use prometheus::IntGauge;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub struct Breaker {
    state: Arc<dyn BreakerState>,
    /// `hookgate_destination_open` of this destination: 1 while, as this process last saw it,
    /// the breaker holds the destination.
    gauge: IntGauge,
    route: Arc<str>,
    destination: Arc<str>,
}

impl Breaker {
    /// Whether attempts may start now; a store that cannot answer holds this pass.
    pub async fn gate(&self, probe_lease: Duration) -> Gate {
        match self.state.gate(now(), probe_lease).await {
            Ok(gate) => {
                self.gauge.set(i64::from(gate != Gate::Open));
                gate
            }
            Err(e) => {
                tracing::warn!(route = %self.route, destination = %self.destination, error = %e, "cannot read the destination's breaker");
                Gate::Held(Some(Duration::from_secs(1)))
            }
        }
    }

    /// The probe handed out found nothing due.
    pub async fn no_probe(&self) {
        if let Err(e) = self.state.no_probe().await {
            // Shared: the probe's lease runs out and another pass takes it.
            tracing::warn!(route = %self.route, destination = %self.destination, error = %e, "cannot give the breaker's probe back");
        }
    }

    pub async fn succeeded(&self) {
        match self.state.succeeded().await {
            Ok(()) => self.gauge.set(0),
            Err(e) => {
                tracing::warn!(route = %self.route, destination = %self.destination, error = %e, "cannot close the destination's breaker");
            }
        }
    }

    /// A failed attempt: when it is due again if the breaker is (now) open, uncounted; `None`:
    /// the delivery's own schedule applies (also when the store cannot answer).
    pub async fn failed(&self, policy: &BreakerPolicy, probe: bool) -> Option<SystemTime> {
        match self.state.failed(policy, probe, now()).await {
            Ok(Some(until)) => {
                self.gauge.set(1);
                Some(SystemTime::UNIX_EPOCH + Duration::from_millis(until))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(route = %self.route, destination = %self.destination, error = %e, "cannot count a failure on the destination's breaker");
                None
            }
        }
    }

    pub async fn view(&self) -> Result<BreakerView, crate::store::StoreError> {
        self.state.view(now()).await
    }
}

fn now() -> u64 {
    unix_ms(SystemTime::now())
}

/// A destination's name within its route's.
type DestinationKey = (Arc<str>, Arc<str>);

/// Every destination's breaker in this process, by route and destination.
pub struct Breakers {
    queue: Option<Arc<dyn Queue>>,
    metrics: Arc<Metrics>,
    made: Mutex<HashMap<DestinationKey, Arc<Breaker>>>,
}

impl Breakers {
    pub fn new(queue: Option<Arc<dyn Queue>>, metrics: Arc<Metrics>) -> Self {
        Self {
            queue,
            metrics,
            made: Mutex::default(),
        }
    }

    pub fn get(&self, route: &Arc<str>, destination: &str) -> Arc<Breaker> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let destination: Arc<str> = destination.into();
        made.entry((route.clone(), destination.clone()))
            .or_insert_with(|| {
                let state = self
                    .queue
                    .clone()
                    .and_then(|q| q.shared_breaker(route, &destination))
                    .unwrap_or_else(|| Arc::new(LocalBreaker::default()));
                let gauge = self
                    .metrics
                    .destination_open
                    .with_label_values(&[&**route, &*destination]);
                gauge.set(0);
                Arc::new(Breaker {
                    state,
                    gauge,
                    route: route.clone(),
                    destination,
                })
            })
            .clone()
    }
}
