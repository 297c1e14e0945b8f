//! The queue worker (PRODUCT.md §9): takes each destination's due attempts from the store,
//! delivers them over the same exchange as forward routes, and records each outcome.
//!
//! Each destination is served on its own: it takes at most `max_in_flight` attempts at once and
//! starts at most `rate` per second, so a slow or dead destination never holds up another. The
//! worker sleeps until the earliest due attempt, and is woken early when a delivery is accepted
//! or retried, or when an attempt finishes and frees room.

use super::active::{ActiveConfig, DestinationLink};
use super::breaker::Breaker;
use super::forward::{self, UpstreamLink};
use super::runtime::Runtime;
use crate::config::{DeliveryPolicy, Mode, QueueSettings, Route};
use crate::destination::{self, Message, Publisher};
use crate::exchange::ExchangeError;
use crate::metrics::status_class;
use crate::schedule;
use crate::spans::{self, Kind, OpenSpan, Value};
use crate::store::breaker::Gate;
use crate::store::queue::{unix_ms, AttemptResult, DueAttempt, Next, Queue};
use crate::trace;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::task::JoinSet;

/// The longest the worker sleeps without looking (a due time it cannot know of, e.g. a lease
/// that ran out, is seen within this).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Attempts taken per destination per pass.
const TAKE_AT_ONCE: usize = 64;
/// How often delivered and dead deliveries past `retention` are purged, and how many at once.
const PURGE_EVERY: Duration = Duration::from_secs(10);
const PURGE_BATCH: usize = 500;

pub struct Worker {
    pub runtime: Arc<Runtime>,
    pub queue: Arc<dyn Queue>,
    /// How long attempts in progress may finish on shutdown.
    pub grace_period: Duration,
}

/// Attempts of one destination whose outcome waits to be recorded, at most, per `max_in_flight`.
/// An attempt frees its place at the app once the app answered; its record follows. This bounds
/// what waits for the store when the app is faster than the store's commits.
const UNRECORDED_PER_IN_FLIGHT: usize = 4;

/// One destination's room: attempts at the app, attempts not yet recorded, its rate's token
/// bucket and its breaker.
struct Room {
    in_flight: AtomicUsize,
    unrecorded: AtomicUsize,
    tokens: Mutex<Option<(f64, Instant)>>,
    breaker: Arc<Breaker>,
}

impl Room {
    fn new(breaker: Arc<Breaker>) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            unrecorded: AtomicUsize::new(0),
            tokens: Mutex::new(None),
            breaker,
        }
    }

    /// How many attempts may start now; with a rate, also when the next one may.
    fn available(&self, policy: &DeliveryPolicy) -> (usize, Option<Duration>) {
        let free = policy
            .max_in_flight
            .saturating_sub(self.in_flight.load(Ordering::Acquire))
            .min(
                (policy.max_in_flight * UNRECORDED_PER_IN_FLIGHT)
                    .saturating_sub(self.unrecorded.load(Ordering::Acquire)),
            );
        let Some(rate) = policy.rate else {
            return (free, None);
        };
        let Ok(mut bucket) = self.tokens.lock() else {
            return (0, Some(IDLE_POLL));
        };
        let now = Instant::now();
        let burst = rate.max(1.0);
        let (tokens, since) = bucket.unwrap_or((burst, now));
        let tokens = (tokens + now.duration_since(since).as_secs_f64() * rate).min(burst);
        *bucket = Some((tokens, now));
        let whole = tokens.floor() as usize;
        let wait = (whole == 0).then(|| Duration::from_secs_f64((1.0 - tokens) / rate));
        (free.min(whole), wait)
    }

    /// Whether to take attempts now, with `free` places: while attempts are at the app, only
    /// once a quarter of its places are free, so that a busy destination costs the store one
    /// read per batch rather than one per answer. With a `rate`, every token is used at once.
    fn worth_a_pass(&self, policy: &DeliveryPolicy, free: usize) -> bool {
        policy.rate.is_some()
            || self.in_flight.load(Ordering::Acquire) == 0
            || free >= (policy.max_in_flight / 4).clamp(1, TAKE_AT_ONCE)
    }

    fn spend(&self, policy: &DeliveryPolicy, n: usize) {
        if policy.rate.is_some() {
            if let Ok(mut bucket) = self.tokens.lock() {
                if let Some((tokens, _)) = bucket.as_mut() {
                    *tokens -= n as f64;
                }
            }
        }
        self.in_flight.fetch_add(n, Ordering::AcqRel);
        self.unrecorded.fetch_add(n, Ordering::AcqRel);
    }
}

#[async_trait]
impl BackgroundService for Worker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let rooms: Mutex<HashMap<String, Arc<Room>>> = Mutex::default();
        let finished = Arc::new(tokio::sync::Notify::new());
        let mut attempts = JoinSet::new();
        let mut last_purge = Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let active = self.runtime.active.load_full();
            let now = SystemTime::now();
            let mut wake = IDLE_POLL;
            for route in &active.policy.route_order {
                let Mode::Queue(q) = &route.mode else {
                    continue;
                };
                for dest in &q.destinations {
                    let room = {
                        let mut rooms = rooms.lock().unwrap_or_else(|p| p.into_inner());
                        rooms
                            .entry(format!("{}/{}", route.name, dest.name))
                            .or_insert_with(|| {
                                Arc::new(Room::new(
                                    self.runtime.breakers.get(&route.name, &dest.name),
                                ))
                            })
                            .clone()
                    };
                    let (free, rate_wait) = room.available(&q.policy);
                    if let Some(w) = rate_wait {
                        wake = wake.min(w);
                    }
                    // Without a pass, an attempt's answer or the rate's next token wakes the
                    // loop: the next due time does not matter yet.
                    if free == 0 || !room.worth_a_pass(&q.policy, free) {
                        continue;
                    }
                    // An open breaker starts nothing until its cooldown ends, then one probe;
                    // the probe's end (an attempt finishing) wakes the loop.
                    let gate = match q.policy.breaker {
                        Some(_) => room.breaker.gate(q.policy.lease()).await,
                        None => Gate::Open,
                    };
                    let probe = match gate {
                        Gate::Open => false,
                        Gate::Probe => true,
                        Gate::Held(wait) => {
                            if let Some(w) = wait {
                                wake = wake.min(w);
                            }
                            continue;
                        }
                    };
                    let limit = if probe { 1 } else { free.min(TAKE_AT_ONCE) };
                    let taken = self
                        .queue
                        .take_due(
                            &route.name,
                            &dest.name,
                            unix_ms(now),
                            limit,
                            q.policy.lease(),
                        )
                        .await;
                    if probe && !taken.as_ref().is_ok_and(|due| !due.is_empty()) {
                        room.breaker.no_probe().await;
                    }
                    match taken {
                        Ok(due) => {
                            room.spend(&q.policy, due.len());
                            if due.len() == limit && !probe {
                                // There may be more due right now.
                                wake = Duration::ZERO;
                            }
                            for a in due {
                                let job = Attempt {
                                    runtime: self.runtime.clone(),
                                    queue: self.queue.clone(),
                                    active: active.clone(),
                                    route: route.clone(),
                                    settings: q.clone(),
                                    room: room.clone(),
                                    finished: finished.clone(),
                                    probe,
                                };
                                attempts.spawn(job.run(a));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(route = %route.name, destination = %dest.name, error = %e, "cannot take due attempts");
                        }
                    }
                    if wake.is_zero() {
                        continue;
                    }
                    if let Ok(Some(at)) = self.queue.next_due(&route.name, &dest.name).await {
                        wake = wake.min(Duration::from_millis(at.saturating_sub(unix_ms(now))));
                    }
                }
            }
            if last_purge.elapsed() >= PURGE_EVERY {
                last_purge = Instant::now();
                self.purge(&active).await;
            }
            while attempts.try_join_next().is_some() {}
            tokio::select! {
                _ = tokio::time::sleep(wake) => {}
                _ = self.runtime.queue_wake.notified() => {}
                _ = finished.notified() => {}
                _ = self.queue.changed() => {}
                _ = shutdown.changed() => {}
            }
        }
        // Attempts in progress get the grace period; the rest stay stored and are taken up
        // again (after their lease) by the next process.
        let drained = tokio::time::timeout(self.grace_period, async {
            while attempts.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = attempts.len(),
                "queue attempts still in progress at shutdown; they are retried after their lease"
            );
        }
    }
}

impl Worker {
    /// Removes delivered and dead deliveries older than the longest `retention` of any queue
    /// route (the store's purge index is not per route), and expired keys, in small batches.
    async fn purge(&self, active: &ActiveConfig) {
        let retention = active
            .policy
            .route_order
            .iter()
            .filter_map(|r| match &r.mode {
                Mode::Queue(q) => Some(q.policy.retention),
                Mode::Forward { .. } => None,
            })
            .max();
        let Some(retention) = retention else {
            return;
        };
        let before = unix_ms(SystemTime::now()).saturating_sub(retention.as_millis() as u64);
        loop {
            match self.queue.purge(before, PURGE_BATCH).await {
                Ok(n) if n == PURGE_BATCH => tokio::task::yield_now().await,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "queue purge failed");
                    return;
                }
            }
        }
    }
}

/// What a destination answered: an app's status (and its Retry-After on 429 or 503), or a
/// broker's ack (no status).
struct Answered {
    status: Option<u16>,
    retry_after: Option<Duration>,
}

impl Answered {
    fn delivered(&self) -> bool {
        self.status.is_none_or(|s| (200..300).contains(&s))
    }
}

/// One attempt at one destination, with what it needs to report.
struct Attempt {
    runtime: Arc<Runtime>,
    queue: Arc<dyn Queue>,
    active: Arc<ActiveConfig>,
    route: Arc<Route>,
    /// The route's queue settings as the attempt was taken.
    settings: Arc<QueueSettings>,
    room: Arc<Room>,
    finished: Arc<tokio::sync::Notify>,
    /// The one attempt that probes a destination whose breaker's cooldown ended.
    probe: bool,
}

impl Attempt {
    async fn run(self, mut a: DueAttempt) {
        // A recorded trace gets a span per attempt, and the destination's traceparent names it.
        let span = self.attempt_span(&a);
        if let Some(s) = &span {
            let onward = s.traceparent();
            a.headers = bytes::Bytes::from(trace::restamped(&a.headers, &onward));
        }
        let result = self.deliver(&a).await;
        if let Some(s) = span {
            self.finish_span(&s, &a, &result);
        }
        // The app answered: its place there is free while the outcome is recorded. The store
        // holds the attempt (taken, not due) until its record commits.
        self.room.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.finished.notify_one();
        if let Err(e) = self.queue.record(result).await {
            // Not recorded: the attempt is due again when its lease runs out.
            tracing::error!(route = %self.route.name, destination = %a.destination, delivery_id = %a.id, error = %e, "cannot record a queue attempt");
        }
        self.room.unrecorded.fetch_sub(1, Ordering::AcqRel);
        self.finished.notify_one();
    }

    /// The attempt's span, when tracing is on and the stored trace is recorded.
    fn attempt_span(&self, a: &DueAttempt) -> Option<OpenSpan> {
        // Without `tracing`, no attempt reads its stored headers for a trace.
        let settings = self.active.policy.tracing.as_ref()?;
        let stored = trace::stored(&a.headers)?;
        if !spans::sampled(Some(settings), Some(&stored)) {
            return None;
        }
        Some(OpenSpan::start(
            &self.runtime.spans,
            stored.trace_id,
            stored.parent_id(),
            SystemTime::now(),
        ))
    }

    fn finish_span(&self, span: &OpenSpan, a: &DueAttempt, result: &AttemptResult) {
        let kind = match self.active.destination(&self.route, &a.destination) {
            Some(DestinationLink::Broker(_)) => Kind::Producer,
            _ => Kind::Client,
        };
        let mut attributes: Vec<(&'static str, Value)> = vec![
            ("hookgate.route", (&*self.route.name).into()),
            ("hookgate.destination", a.destination.as_str().into()),
            ("hookgate.delivery_id", a.id.to_string().into()),
            ("hookgate.attempt", i64::from(a.attempt).into()),
        ];
        if let Some(status) = result.status {
            attributes.push(("http.response.status_code", i64::from(status).into()));
        }
        if let Some(e) = &result.error {
            attributes.push(("error.message", e.clone().into()));
        }
        span.finish(
            "hookgate.attempt",
            kind,
            attributes,
            Vec::new(),
            result.error.clone(),
        );
    }

    async fn deliver(&self, a: &DueAttempt) -> AttemptResult {
        let rt = &self.runtime;
        let route = &self.route;
        let started = SystemTime::now();
        let t = Instant::now();
        let q = &self.settings;
        let Some(link) = self.active.destination(route, &a.destination) else {
            // The destination left the config: it waits, dead, for a retry by hand.
            return self.failed(a, started, t, None, "destination not in the config".into());
        };
        let exchanged = match link {
            DestinationLink::Http(link) => self.post(link, a).await,
            DestinationLink::Broker(publisher) => self.publish(&**publisher, &q.policy, a).await,
        };
        let labels = |result: &str| {
            rt.metrics
                .delivery_attempts
                .with_label_values(&[&*route.name, a.destination.as_str(), result])
                .inc();
        };
        match exchanged {
            Ok(answer) if answer.delivered() => {
                if q.policy.breaker.is_some() {
                    self.room.breaker.succeeded().await;
                }
                labels(answer.status.map_or("ack", status_class));
                rt.metrics
                    .deliveries
                    .with_label_values(&[&*route.name, a.destination.as_str(), "delivered"])
                    .inc();
                let lag = unix_ms(SystemTime::now()).saturating_sub(a.received_ms);
                rt.metrics
                    .delivery_lag
                    .with_label_values(&[&*route.name, a.destination.as_str()])
                    .observe(lag as f64 / 1000.0);
                AttemptResult {
                    id: a.id,
                    destination: a.destination.clone(),
                    attempt: a.attempt,
                    started_ms: unix_ms(started),
                    duration_ms: t.elapsed().as_millis() as u64,
                    status: answer.status,
                    error: None,
                    next: Next::Delivered,
                    counts: true,
                }
            }
            Ok(answer) => {
                let status = answer.status.unwrap_or_default();
                labels(status_class(status));
                let failed = self.failed(
                    a,
                    started,
                    t,
                    Some(status),
                    format!("the app answered {status}"),
                );
                self.schedule(failed, &q.policy, a, answer.retry_after)
                    .await
            }
            Err(e) => {
                labels(e.result());
                tracing::debug!(route = %route.name, destination = %a.destination, delivery_id = %a.id, error = %e, "queue attempt failed");
                let failed = self.failed(a, started, t, None, e.to_string());
                self.schedule(failed, &q.policy, a, None).await
            }
        }
    }

    /// POSTs the delivery to an app.
    async fn post(&self, link: &UpstreamLink, a: &DueAttempt) -> Result<Answered, ExchangeError> {
        let mut head = BytesMut::with_capacity(a.headers.len() + 128);
        forward::write_request_line(&mut head, "POST", &a.target);
        head.extend_from_slice(&a.headers);
        let _ = write!(
            head,
            "Hookgate-Delivery-Id: {}\r\nHookgate-Attempt: {}\r\n",
            a.id, a.attempt
        );
        forward::end_head(&mut head, a.body.len());
        let answer = forward::exchange(&self.runtime.connector, link, head, a.body.clone()).await?;
        let status = answer.header.status.as_u16();
        let retry_after = matches!(status, 429 | 503)
            .then(|| answer.header.headers.get(http::header::RETRY_AFTER))
            .flatten()
            .and_then(|v| schedule::parse_retry_after(v.as_bytes()));
        Ok(Answered {
            status: Some(status),
            retry_after,
        })
    }

    /// Publishes the delivery to a broker, within `delivery.timeout`.
    async fn publish(
        &self,
        publisher: &dyn Publisher,
        policy: &DeliveryPolicy,
        a: &DueAttempt,
    ) -> Result<Answered, ExchangeError> {
        let mut headers = destination::header_pairs(&a.headers);
        headers.push(("Hookgate-Delivery-Id".into(), a.id.to_string()));
        headers.push(("Hookgate-Attempt".into(), a.attempt.to_string()));
        headers.push(("Hookgate-Route".into(), self.route.name.to_string()));
        if let Some(event) = &a.event {
            headers.push(("Hookgate-Event".into(), event.clone()));
        }
        let message = Message {
            id: a.id.to_string(),
            key: a.key.clone(),
            headers,
            body: a.body.clone(),
        };
        match tokio::time::timeout(policy.timeout, publisher.publish(&message)).await {
            Ok(published) => published.map(|()| Answered {
                status: None,
                retry_after: None,
            }),
            Err(_) => Err(ExchangeError::Timeout(policy.timeout)),
        }
    }

    /// When a failed attempt is tried again: at the end of the cooldown, uncounted, while the
    /// destination's breaker is open; else by the delivery's own schedule.
    async fn schedule(
        &self,
        mut failed: AttemptResult,
        policy: &DeliveryPolicy,
        a: &DueAttempt,
        retry_after: Option<Duration>,
    ) -> AttemptResult {
        let held_until = match &policy.breaker {
            Some(breaker) => self.room.breaker.failed(breaker, self.probe).await,
            None => None,
        };
        match held_until {
            Some(at) => {
                failed.next = Next::RetryAt(unix_ms(at));
                failed.counts = false;
                failed
            }
            None => failed.with_policy(policy, a, retry_after, &self.runtime, &self.route),
        }
    }

    /// A failed attempt, dead unless `with_policy` schedules the next one.
    fn failed(
        &self,
        a: &DueAttempt,
        started: SystemTime,
        t: Instant,
        status: Option<u16>,
        error: String,
    ) -> AttemptResult {
        AttemptResult {
            id: a.id,
            destination: a.destination.clone(),
            attempt: a.attempt,
            started_ms: unix_ms(started),
            duration_ms: t.elapsed().as_millis() as u64,
            status,
            error: Some(error),
            next: Next::Dead,
            counts: true,
        }
    }
}

impl AttemptResult {
    /// Schedules the next attempt by the route's policy, or leaves it dead (counted) after the
    /// last delay.
    fn with_policy(
        mut self,
        policy: &DeliveryPolicy,
        a: &DueAttempt,
        retry_after: Option<Duration>,
        rt: &Runtime,
        route: &Route,
    ) -> Self {
        let now = unix_ms(SystemTime::now());
        let next = schedule::next_attempt(policy, a.scheduled, now, retry_after, rand::random());
        if next.is_none() {
            rt.metrics
                .deliveries
                .with_label_values(&[&*route.name, a.destination.as_str(), "dead"])
                .inc();
            tracing::warn!(route = %route.name, destination = %a.destination, delivery_id = %a.id, attempts = a.attempt, "queued delivery is dead after its last retry");
        }
        self.next = Next::after_failure(next);
        self
    }
}
