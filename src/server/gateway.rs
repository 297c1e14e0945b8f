//! The webhook listener: one request's path through the gateway, from head to answer.
//!
//! hookgate does not use Pingora's `ProxyHttp`: its body phases run after the upstream is
//! contacted, so a refused delivery would already have leaked. It serves Pingora's lower-level
//! `HttpServerApp` instead: read the head, run the head checks, read the whole body, run the body
//! checks, claim the key, and only then open (or reuse) an upstream connection.

use super::live::{Live, RouteState};
use super::{body, forward};
use crate::config::{OnError, Route};
use crate::metrics::{status_class, Metrics, StoreOp};
use crate::pipeline::{self, DeliveryKey, Head};
use crate::rejection::{Answer, Rejection};
use crate::store::{Claim, ClaimToken, Store};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How long a refused request's unread body is drained so the sender reads our answer instead
/// of a connection reset.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// What every request shares: the current config, the store, metrics and the connector that
/// opens new upstream connections (each route keeps its own idle ones, `super::pool`).
pub struct Shared {
    pub live: ArcSwap<Live>,
    pub store: Arc<dyn Store>,
    pub on_error: OnError,
    pub metrics: Arc<Metrics>,
    pub connector: TransportConnector,
}

pub struct GatewayApp {
    pub shared: Arc<Shared>,
}

/// What the one log event per request says.
struct Record {
    request_id: String,
    route: Option<Arc<str>>,
    client: Option<IpAddr>,
    outcome: &'static str,
    status: u16,
    upstream_status: Option<u16>,
}

/// The client address as logged: `unknown` when a trusted proxy forwarded something else.
struct ClientAddr(Option<IpAddr>);

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// How the request ended for the connection.
enum Ended {
    /// Answered after the body was read: the connection may be reused.
    Complete,
    /// Answered before or while reading the body: drain what is left (bounded by time) so the
    /// sender reads the answer, not a reset; the connection is reused if the answer said so.
    Early,
    /// Nothing more can be said on this connection.
    Close,
}

#[async_trait]
impl HttpServerApp for GatewayApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let client_timeout = self.shared.live.load().gateway.client_timeout;
        match tokio::time::timeout(client_timeout, session.read_request()).await {
            Ok(Ok(true)) => {}
            _ => return None,
        }
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        // hookgate decides itself whether a refused request's unread body is drained (and the
        // connection kept) or the connection closed; see `Ended`.
        session.set_close_on_response_before_downstream_finish(false);
        let ended = self.handle(&mut session).await;
        match ended {
            Ended::Complete => {}
            Ended::Early => {
                let drained = tokio::time::timeout(DRAIN_LIMIT, session.drain_request_body()).await;
                if !matches!(drained, Ok(Ok(()))) {
                    session.set_keepalive(None);
                }
            }
            Ended::Close => session.set_keepalive(None),
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, settings)),
            _ => None,
        }
    }
}

impl GatewayApp {
    async fn handle(&self, session: &mut ServerSession) -> Ended {
        let started = Instant::now();
        let received_at = SystemTime::now();
        let shared = &self.shared;
        // In-flight requests keep the config they started with; a reload affects new ones.
        let live = shared.live.load_full();
        let gateway = &live.gateway;
        let deadline = tokio::time::Instant::now() + gateway.client_timeout;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip().to_canonical());
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        let req = session.req_header();
        let request_id = request_id(req.headers.get("x-request-id"));
        let expects_continue = req
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let head = Head {
            method: &req.method,
            path: req.uri.path(),
            headers: &req.headers,
            peer,
            tls,
        };
        let mut record = Record {
            request_id,
            route: None,
            client: Some(peer),
            outcome: "",
            status: 0,
            upstream_status: None,
        };

        // Head steps: route → method → address → transport → declared size.
        let admitted = pipeline::check_head(gateway, &head);
        let (route, client) = match admitted {
            Ok(a) => (a.route.clone(), a.client),
            Err((route, rejection)) => {
                record.route = route.map(|r| r.name.clone());
                // A too-large body is not worth reading on; a sender waiting for 100 Continue
                // will not upload at all. Either way the answer itself says `Connection: close`.
                if rejection == Rejection::PayloadTooLarge || expects_continue {
                    session.set_keepalive(None);
                }
                self.answer(session, &Answer::Reject(rejection), record, None, started)
                    .await;
                return if expects_continue {
                    Ended::Close
                } else {
                    Ended::Early
                };
            }
        };
        record.route = Some(route.name.clone());
        record.client = client.addr;
        let state = live.route(&route);

        // Body: the whole of it, bounded, before anything else happens.
        if expects_continue
            && !session.is_http2()
            && session.write_continue_response().await.is_err()
        {
            return self.gone(record, state, started);
        }
        let body = match body::read(session, route.max_body, deadline).await {
            Ok(b) => b,
            Err(body::BodyError::Refused(r)) => {
                session.set_keepalive(None);
                let timed_out = r == Rejection::RequestTimeout;
                self.answer(session, &Answer::Reject(r), record, Some(state), started)
                    .await;
                return if timed_out {
                    Ended::Close
                } else {
                    Ended::Early
                };
            }
            Err(body::BodyError::ClientGone) => return self.gone(record, state, started),
        };

        // Body steps: signature → parse → schema → events → idempotency key.
        let key =
            match pipeline::check_body(&route, &session.req_header().headers, &body, received_at) {
                Ok(k) => k,
                Err(answer) => {
                    self.answer(session, &answer, record, Some(state), started)
                        .await;
                    return Ended::Complete;
                }
            };

        // Idempotency: claim only now that every check has passed.
        let claim = match &key {
            Some(k) => match self.claim(&route, k).await {
                Ok(c) => c,
                Err(answer) => {
                    self.answer(session, &answer, record, Some(state), started)
                        .await;
                    return Ended::Complete;
                }
            },
            None => None,
        };

        let head = forward::upstream_head(
            session.req_header(),
            &client,
            peer,
            &record.request_id,
            body.len(),
        );

        // Pingora never drops this future before it completes (it is only cancelled with the
        // whole runtime, like a crash, where the claim's lease covers it): a sender that hangs
        // up does not abort the exchange, so the app's answer still decides the claim and no
        // delivery is doubled.
        let result = deliver(shared, &route, state, head, body, key.zip(claim)).await;
        match result {
            Ok(answer) => {
                let status = answer.header.status.as_u16();
                record.upstream_status = Some(status);
                record.status = status;
                record.outcome = "forwarded";
                let header =
                    forward::relay_header(answer.header, answer.body.len(), &record.request_id);
                // Counted and logged before the answer leaves, so a sender that then reads
                // /metrics sees its own delivery.
                self.finish(&record, Some(state), started);
                let ok = write(session, header, answer.body).await;
                if ok {
                    Ended::Complete
                } else {
                    Ended::Close
                }
            }
            Err(rejection) => {
                self.answer(
                    session,
                    &Answer::Reject(rejection),
                    record,
                    Some(state),
                    started,
                )
                .await;
                Ended::Complete
            }
        }
    }

    /// Claims the key; a store failure answers 503 or, under `on_error: allow`, forwards undeduped.
    async fn claim(&self, route: &Route, key: &DeliveryKey) -> Result<Option<ClaimToken>, Answer> {
        let shared = &self.shared;
        let lease = route
            .idempotency
            .as_ref()
            .map_or(Duration::from_secs(60), |i| i.lease);
        let t = Instant::now();
        let result = shared.store.claim(key, lease).await;
        shared
            .metrics
            .store_op(StoreOp::Claim)
            .observe(t.elapsed().as_secs_f64());
        match result {
            Ok(Claim::Claimed(token)) => Ok(Some(token)),
            Ok(Claim::Delivered) => Err(Answer::AlreadyProcessed),
            Ok(Claim::InFlight { retry_after }) => {
                Err(Answer::Reject(Rejection::DeliveryInProgress {
                    retry_after,
                }))
            }
            Err(e) => {
                shared
                    .metrics
                    .store_errors
                    .with_label_values(&[StoreOp::Claim.label()])
                    .inc();
                tracing::warn!(route = %route.name, error = %e, "idempotency store failed");
                match shared.on_error {
                    OnError::Reject => Err(Answer::Reject(Rejection::StoreUnavailable)),
                    OnError::Allow => {
                        shared
                            .metrics
                            .dedupe_skipped
                            .with_label_values(&[&route.name])
                            .inc();
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Answers without the upstream; counted and logged before the answer leaves.
    async fn answer(
        &self,
        session: &mut ServerSession,
        answer: &Answer,
        mut record: Record,
        state: Option<&RouteState>,
        started: Instant,
    ) {
        record.status = answer.status();
        record.outcome = answer.outcome();
        self.finish(&record, state, started);
        let body = Bytes::from(answer.body());
        let Ok(mut header) = ResponseHeader::build(answer.status(), Some(4)) else {
            return;
        };
        let _ = header.insert_header(http::header::CONTENT_TYPE, "application/json");
        let _ = header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
        let _ = header.insert_header("X-Request-Id", record.request_id.as_str());
        for (name, value) in answer.headers() {
            let _ = header.insert_header(name, value);
        }
        write(session, Box::new(header), body).await;
    }

    /// The client went away or broke the protocol: log it, answer nothing.
    fn gone(&self, mut record: Record, state: &RouteState, started: Instant) -> Ended {
        record.outcome = "client_closed";
        record.status = 499;
        self.finish(&record, Some(state), started);
        Ended::Close
    }

    /// The metrics and the one structured log event of a request.
    /// `state` is the matched route's, `None` when no route matched.
    fn finish(&self, record: &Record, state: Option<&RouteState>, started: Instant) {
        let m = &self.shared.metrics;
        let route = record.route.as_deref().unwrap_or("-");
        let elapsed = started.elapsed();
        match state {
            Some(s) if record.outcome == "forwarded" => s.forwarded.inc(),
            _ => m.requests.with_label_values(&[route, record.outcome]).inc(),
        }
        match state {
            Some(s) => s.request_duration.observe(elapsed.as_secs_f64()),
            None => m
                .request_duration
                .with_label_values(&[route])
                .observe(elapsed.as_secs_f64()),
        }
        tracing::info!(
            target: "hookgate::request",
            request_id = record.request_id.as_str(),
            route,
            client = %ClientAddr(record.client),
            outcome = record.outcome,
            status = record.status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            upstream_status = record.upstream_status,
            "request"
        );
    }
}

/// Sends the delivery upstream and settles its claim by the answer: delivered on 2xx, released
/// on anything else so the sender's retry goes through.
async fn deliver(
    shared: &Shared,
    route: &Route,
    state: &RouteState,
    head: BytesMut,
    body: Bytes,
    claim: Option<(DeliveryKey, ClaimToken)>,
) -> Result<forward::UpstreamAnswer, Rejection> {
    let m = &shared.metrics;
    let t = Instant::now();
    let result = forward::exchange(
        &shared.connector,
        &state.pool,
        &state.peer,
        head,
        body,
        route.upstream_timeout,
    )
    .await;
    state.upstream_duration.observe(t.elapsed().as_secs_f64());
    let status = result.as_ref().ok().map(|a| a.header.status.as_u16());
    match status {
        Some(200..=299) => state.upstream_2xx.inc(),
        Some(s) => m
            .upstream_responses
            .with_label_values(&[&route.name, status_class(s)])
            .inc(),
        None => {}
    }
    if let Some((key, token)) = claim {
        let delivered = status.is_some_and(|s| (200..300).contains(&s));
        let t = Instant::now();
        let (op, outcome) = if delivered {
            let ttl = route
                .idempotency
                .as_ref()
                .map_or(Duration::from_secs(86400), |i| i.ttl);
            (
                StoreOp::Complete,
                shared.store.complete(&key, token, ttl).await,
            )
        } else {
            (StoreOp::Release, shared.store.release(&key, token).await)
        };
        m.store_op(op).observe(t.elapsed().as_secs_f64());
        if let Err(e) = outcome {
            m.store_errors.with_label_values(&[op.label()]).inc();
            tracing::warn!(route = %route.name, operation = op.label(), error = %e, "idempotency store failed");
        }
    }
    result
}

async fn write(session: &mut ServerSession, header: Box<ResponseHeader>, body: Bytes) -> bool {
    if session.write_response_header(header).await.is_err() {
        return false;
    }
    session.write_response_body(body, true).await.is_ok()
}

/// The sender's X-Request-Id when it is a sane token, else a fresh one.
fn request_id(given: Option<&http::HeaderValue>) -> String {
    given
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string)
}
