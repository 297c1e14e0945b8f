//! The webhook listener: one request's session I/O, from head to answer, in the order of
//! PRODUCT.md §3. The checks are `crate::pipeline`'s; what happens to a clean delivery is
//! `delivery` (forward routes) or `enqueue` (queue routes); every exit is recorded by `outcome`.
//!
//! hookgate does not use Pingora's `ProxyHttp`: its body phases run after the upstream is
//! contacted, so a refused delivery would already have leaked. It serves Pingora's lower-level
//! `HttpServerApp` instead: read the head, run the head checks, read the whole body, run the body
//! checks, and only then hand the delivery on.

use super::active::{Dispatch, RouteState};
use super::forward;
use super::outcome::{self, Outcome, RequestLog};
use super::runtime::Runtime;
use super::{body, delivery, enqueue};
use crate::pipeline::{self, size, Head};
use crate::rejection::{Answer, Rejection};
use crate::spans::{self, Kind, OpenSpan};
use crate::store::queue::unix_ms;
use crate::trace::Traceparent;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::io::AsyncWriteExt;

/// How long a refused request's unread body is drained so the sender reads our answer instead
/// of a connection reset.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Concurrent HTTP/2 streams per connection: each may hold a body up to `max_body`, and
/// webhook senders do not multiplex much.
const MAX_H2_STREAMS: u32 = 16;

pub struct GatewayApp {
    pub runtime: Arc<Runtime>,
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
        let client_timeout = self.runtime.active.load().policy.client_timeout;
        // One deadline for the whole request, head and body (PRODUCT.md §2).
        let deadline = tokio::time::Instant::now() + client_timeout;
        match tokio::time::timeout_at(deadline, session.read_request()).await {
            Ok(Ok(true)) => {}
            Ok(Err(e)) if e.etype() == &pingora_core::ErrorType::InvalidHTTPHeader => {
                self.refuse_malformed(session).await;
                return None;
            }
            _ => return None,
        }
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        // hookgate decides itself whether a refused request's unread body is drained (and the
        // connection kept) or the connection closed; see `Ended`.
        session.set_close_on_response_before_downstream_finish(false);
        match self.handle(&mut session, deadline).await {
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

    fn h2_options(&self) -> Option<H2Options> {
        let mut options = default_h2_options();
        options.max_concurrent_streams(MAX_H2_STREAMS);
        Some(options)
    }
}

impl GatewayApp {
    async fn handle(&self, session: &mut ServerSession, deadline: tokio::time::Instant) -> Ended {
        let rt = &*self.runtime;
        let received_at = SystemTime::now();
        // In-flight requests keep the config they started with; a reload affects new ones.
        let active = rt.active.load_full();
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip().to_canonical());
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        let req = session.req_header();
        let given = Traceparent::parse(req.headers.get("traceparent").map(|v| v.as_bytes()));
        let tracing = active.policy.tracing.as_ref();
        // With `tracing`, a recorded request is a span of the sender's trace (or a new one), and
        // the app's traceparent names it; otherwise the sender's is passed on as it came.
        let (trace, span) = if spans::sampled(tracing, given.as_ref()) {
            let from = given.unwrap_or_default();
            let parent = if from.given { from.parent_id() } else { 0 };
            let span = OpenSpan::start(&rt.spans, from.trace_id, parent, received_at);
            (span.traceparent(), Some(span))
        } else {
            let trace = match (given, tracing) {
                (Some(t), _) => t,
                (None, Some(_)) => Traceparent::unsampled(),
                (None, None) => Traceparent::new(),
            };
            (trace, None)
        };
        let mut log = RequestLog {
            request_id: request_id(req.headers.get("x-request-id")),
            trace_id: trace.trace_id,
            route: None,
            client: Some(peer),
            started: Instant::now(),
            span,
        };
        let expects_continue = req
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));

        // HTTP framing Pingora's parser lets through (no Host, CL + TE, an oversized head).
        let target_len = req.uri.path_and_query().map_or(1, |p| p.as_str().len());
        if pipeline::framing::check(req.version, target_len, &req.headers, session.is_http2())
            .is_err()
            || content_length_beside_chunked(session)
        {
            session.set_keepalive(None);
            self.reply(session, &log, None, Rejection::BadRequest.into())
                .await;
            return Ended::Close;
        }

        // Head steps: route → method → address → transport → size → signature present.
        let head = Head {
            method: &req.method,
            path: req.uri.path(),
            headers: &req.headers,
            peer,
            tls,
        };
        let (route, client) = match pipeline::check_head(&active.policy, &head) {
            Ok(a) => (a.route.clone(), a.client),
            Err((route, rejection)) => {
                log.route = route.map(|r| r.name.clone());
                let state = route.map(|r| active.route(r));
                // A too-large body is not worth reading on; a sender waiting for 100 Continue
                // will not upload at all. Either way the answer itself says `Connection: close`.
                if rejection == Rejection::PayloadTooLarge || expects_continue {
                    session.set_keepalive(None);
                }
                self.reply(session, &log, state, rejection.into()).await;
                return if expects_continue {
                    Ended::Close
                } else {
                    Ended::Early
                };
            }
        };
        log.route = Some(route.name.clone());
        log.client = client.addr;
        let state = active.route(&route);

        // Capacity: the declared body must fit the budget before the sender is asked for it.
        let declared = size::declared_length(&req.headers).map(|n| n as usize);
        let mut reservation = rt.budget.reservation();
        if declared.is_some_and(|n| !reservation.cover(n)) {
            session.set_keepalive(None);
            self.reply(session, &log, Some(state), Rejection::Overloaded.into())
                .await;
            return if expects_continue {
                Ended::Close
            } else {
                Ended::Early
            };
        }

        // Body: the whole of it, bounded, before anything else happens.
        if expects_continue
            && !session.is_http2()
            && session.write_continue_response().await.is_err()
        {
            outcome::record(&rt.metrics, &log, Some(state), &Outcome::ClientClosed);
            return Ended::Close;
        }
        let body = match body::read(
            session,
            route.max_body,
            declared,
            &mut reservation,
            deadline,
        )
        .await
        {
            Ok(b) => b,
            Err(body::BodyError::Refused(r)) => {
                session.set_keepalive(None);
                let timed_out = r == Rejection::RequestTimeout;
                self.reply(session, &log, Some(state), r.into()).await;
                return if timed_out {
                    Ended::Close
                } else {
                    Ended::Early
                };
            }
            Err(body::BodyError::ClientGone) => {
                outcome::record(&rt.metrics, &log, Some(state), &Outcome::ClientClosed);
                return Ended::Close;
            }
        };

        // Body steps: signature → parse → schema → events → idempotency key.
        let req = session.req_header();
        let checked = match pipeline::check_body(&route, &req.headers, &body, received_at) {
            Ok(c) => c,
            Err(answer) => {
                self.reply(session, &log, Some(state), answer).await;
                return Ended::Complete;
            }
        };

        match &state.dispatch {
            // Queue: stored durably, answered at once, delivered in the background.
            Dispatch::Queue(queue) => {
                let mut headers = BytesMut::with_capacity(1024);
                forward::write_headers(&mut headers, req, &client, peer, &log.request_id, &trace);
                let target = forward::target(req).to_string();
                let enqueue_span = log.span.as_ref().map(|s| s.child(SystemTime::now()));
                let answer = enqueue::enqueue(
                    rt,
                    &route,
                    &queue.settings,
                    checked,
                    &target,
                    headers.freeze(),
                    body,
                    unix_ms(received_at),
                )
                .await;
                if let Some(span) = enqueue_span {
                    let mut attributes = vec![("hookgate.route", (&*route.name).into())];
                    let error = match &answer {
                        Answer::Queued { delivery_id } => {
                            attributes.push(("hookgate.delivery_id", delivery_id.clone().into()));
                            None
                        }
                        Answer::Reject(r) => Some(r.code().to_string()),
                        _ => None,
                    };
                    span.finish(
                        "hookgate.enqueue",
                        Kind::Internal,
                        attributes,
                        Vec::new(),
                        error,
                    );
                }
                self.reply(session, &log, Some(state), answer).await;
                Ended::Complete
            }
            // Forward: the app's answer is relayed. Pingora never drops this future before it
            // completes (it is only cancelled with the whole runtime, like a crash, where the
            // claim's lease covers it): a sender that hangs up does not abort the exchange, so
            // the app's answer still decides the claim and no delivery is doubled.
            Dispatch::Forward(link) => {
                let head =
                    forward::upstream_head(req, &client, peer, &log.request_id, &trace, body.len());
                let result =
                    delivery::forward(rt, &route, state, link, checked.key.as_ref(), head, body)
                        .await;
                match result {
                    Ok(answer) => {
                        let status = answer.header.status.as_u16();
                        // Counted and logged before the answer leaves, so a sender that then
                        // reads /metrics sees its own delivery.
                        outcome::record(
                            &rt.metrics,
                            &log,
                            Some(state),
                            &Outcome::Forwarded { status },
                        );
                        let header = forward::relay_header(
                            answer.header,
                            answer.body.len(),
                            &log.request_id,
                        );
                        if write(session, header, answer.body).await {
                            Ended::Complete
                        } else {
                            Ended::Close
                        }
                    }
                    Err(answer) => {
                        self.reply(session, &log, Some(state), answer).await;
                        Ended::Complete
                    }
                }
            }
        }
    }

    /// Answers without the upstream; recorded before the answer leaves.
    async fn reply(
        &self,
        session: &mut ServerSession,
        log: &RequestLog,
        state: Option<&RouteState>,
        answer: Answer,
    ) {
        outcome::record(
            &self.runtime.metrics,
            log,
            state,
            &Outcome::Answered(answer.clone()),
        );
        let body = Bytes::from(answer.body());
        let Ok(mut header) = ResponseHeader::build(answer.status(), Some(4)) else {
            return;
        };
        let _ = header.insert_header(http::header::CONTENT_TYPE, answer.content_type());
        let _ = header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
        let _ = header.insert_header("X-Request-Id", log.request_id.as_str());
        for (name, value) in answer.headers() {
            let _ = header.insert_header(name, value);
        }
        write(session, Box::new(header), body).await;
    }

    /// A request Pingora could not parse (conflicting lengths, bad Transfer-Encoding, obs-fold,
    /// NUL, too many headers, an oversized head): answered 400 where HTTP/1 still allows an
    /// answer, then closed; counted, and logged at most once a second.
    async fn refuse_malformed(&self, session: ServerSession) {
        self.runtime.metrics.bad_requests.inc();
        static LAST_LOGGED_SECOND: AtomicU64 = AtomicU64::new(0);
        let second = unix_ms(SystemTime::now()) / 1000;
        if LAST_LOGGED_SECOND.swap(second, Ordering::Relaxed) != second {
            tracing::warn!(
                target: "hookgate::request",
                route = "-",
                client = %session.client_addr().map_or_else(String::new, |a| a.to_string()),
                outcome = "bad_request",
                status = 400u16,
                "malformed request refused (logged at most once a second; hookgate_requests_total counts each)"
            );
        }
        if let ServerSession::H1(h1) = session {
            let body = Rejection::BadRequest.body();
            let head = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let mut stream = h1.into_inner();
            let _ = tokio::time::timeout(DRAIN_LIMIT, async {
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(&body).await?;
                stream.flush().await?;
                stream.shutdown().await
            })
            .await;
        }
    }
}

/// Whether a chunked HTTP/1 request also carried Content-Length. Pingora drops the
/// Content-Length (Transfer-Encoding wins, RFC 9112 §6.3) before the head is seen here, so the
/// raw head is read, only for chunked requests.
fn content_length_beside_chunked(session: &ServerSession) -> bool {
    let ServerSession::H1(h1) = session else {
        return false;
    };
    if !h1
        .req_header()
        .headers
        .contains_key(http::header::TRANSFER_ENCODING)
    {
        return false;
    }
    h1.get_headers_raw_bytes()
        .split(|&b| b == b'\n')
        .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
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
