//! The delivery log API on the admin listener (PRODUCT.md §10): list, show, body and retry of
//! queued deliveries, behind the admin token.

use super::destination_state;
use super::runtime::Runtime;
use crate::store::queue::{unix_ms, DeliveryId, DeliveryLog, DeliveryState, ListFilter};
use http::Method;
use std::time::SystemTime;
use subtle::ConstantTimeEq;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// An answer of the API: status, content type, body.
pub struct ApiAnswer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

fn json(status: u16, value: &serde_json::Value) -> ApiAnswer {
    ApiAnswer {
        status,
        content_type: "application/json",
        body: serde_json::to_vec(value).unwrap_or_default(),
    }
}

fn error(status: u16, code: &str, message: &str) -> ApiAnswer {
    json(
        status,
        &serde_json::json!({ "error": { "code": code, "message": message } }),
    )
}

/// Who may do what: with a token, every call needs it; without one, reads are open and writes
/// refused.
pub fn authorize(
    token: Option<&str>,
    authorization: Option<&[u8]>,
    method: &Method,
) -> Option<ApiAnswer> {
    match token {
        Some(expected) => {
            let given = authorization
                .and_then(|v| v.strip_prefix(b"Bearer "))
                .map(<[u8]>::trim_ascii);
            let ok = given.is_some_and(|g| bool::from(g.ct_eq(expected.as_bytes())));
            (!ok).then(|| {
                error(
                    401,
                    "unauthorized",
                    "This API needs Authorization: Bearer <admin.token>.",
                )
            })
        }
        None if method != Method::GET => Some(error(
            403,
            "admin_token_required",
            "Retries need admin.token to be set in the config.",
        )),
        None => None,
    }
}

/// Serves one `/api/...` request (already authorized).
pub async fn serve(rt: &Runtime, method: &Method, path: &str, query: Option<&str>) -> ApiAnswer {
    let Some(queue) = rt.queue.as_deref() else {
        return error(
            404,
            "queue_not_enabled",
            "No queue: the delivery log needs a file: or postgres: store.",
        );
    };
    if path == "/api/destinations" {
        return served(match *method {
            Method::GET => destination_state::list(rt).await.map(|v| json(200, &v)),
            _ => Ok(error(
                405,
                "method_not_allowed",
                "Destinations are read with GET.",
            )),
        });
    }
    let params = Params::parse(query);
    let rest = path.trim_start_matches("/api/deliveries");
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let result = match (method, segments.as_slice()) {
        (&Method::GET, []) => list(queue, &params).await,
        (&Method::POST, ["retry"]) => retry_route(rt, queue, &params).await,
        (&Method::POST, ["replay"]) => replay(rt, queue, &params).await,
        (&Method::GET, [id]) => show(rt, queue, id).await,
        (&Method::GET, [id, "body"]) => body(queue, id).await,
        (&Method::POST, [id, "retry"]) => retry_one(queue, id, &params).await,
        (_, [] | ["retry"] | ["replay"] | [_] | [_, "body"] | [_, "retry"]) => Ok(error(
            405,
            "method_not_allowed",
            "Reads are GET, retries are POST.",
        )),
        _ => Ok(error(404, "not_found", "No such API path.")),
    };
    served(result)
}

fn served(result: Served) -> ApiAnswer {
    result.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "delivery log request failed");
        error(
            503,
            "store_unavailable",
            "The store is unavailable; retry later.",
        )
    })
}

type Served = Result<ApiAnswer, crate::store::StoreError>;

async fn list(queue: &dyn DeliveryLog, params: &Params) -> Served {
    let state = match params.get("state") {
        None => None,
        Some(s) => match DeliveryState::parse(s) {
            Some(s) => Some(s),
            None => {
                return Ok(error(
                    400,
                    "invalid_query",
                    "state is pending, delivered or dead.",
                ))
            }
        },
    };
    let limit = match params.get("limit").map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if n >= 1 => n.min(MAX_LIMIT),
        Some(_) => return Ok(error(400, "invalid_query", "limit is a number from 1.")),
    };
    let before = match params.get("before").map(str::parse::<DeliveryId>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(())) => {
            return Ok(error(
                400,
                "invalid_query",
                "before is the next cursor of a previous page.",
            ))
        }
    };
    let filter = ListFilter {
        route: params.get("route").map(str::to_string),
        state,
        destination: params.get("destination").map(str::to_string),
        before,
        limit,
    };
    let (deliveries, next) = queue.list(filter).await?;
    Ok(json(
        200,
        &serde_json::json!({
            "deliveries": deliveries,
            "next": next.map(|n| n.to_string()),
        }),
    ))
}

fn not_found() -> ApiAnswer {
    error(404, "delivery_not_found", "No delivery has this id.")
}

/// A delivery, each destination with its breaker (`null` without one).
async fn show(rt: &Runtime, queue: &dyn DeliveryLog, id: &str) -> Served {
    let Ok(id) = id.parse() else {
        return Ok(not_found());
    };
    let Some(d) = queue.get(id).await? else {
        return Ok(not_found());
    };
    let mut shown = serde_json::json!(d);
    if let Some(destinations) = shown["destinations"].as_array_mut() {
        for dest in destinations {
            let name = dest["name"].as_str().unwrap_or_default().to_string();
            dest["breaker"] = destination_state::breaker(rt, &d.summary.route, &name).await?;
        }
    }
    Ok(json(200, &shown))
}

async fn body(queue: &dyn DeliveryLog, id: &str) -> Served {
    let Ok(id) = id.parse() else {
        return Ok(not_found());
    };
    Ok(match queue.body(id).await? {
        Some(b) => ApiAnswer {
            status: 200,
            content_type: "application/octet-stream",
            body: b.to_vec(),
        },
        None => not_found(),
    })
}

async fn retry_one(queue: &dyn DeliveryLog, id: &str, params: &Params) -> Served {
    let Ok(id) = id.parse() else {
        return Ok(not_found());
    };
    let now = unix_ms(SystemTime::now());
    Ok(
        match queue.retry(id, params.get("destination"), now).await? {
            Some(n) => json(202, &serde_json::json!({ "requeued": n })),
            None => not_found(),
        },
    )
}

/// Why a bulk call cannot act on `route` (and `destination`) of the running config: a route
/// that is not a queue route has no worker, and a destination it lacks would be pending forever.
fn unknown_target(rt: &Runtime, route: &str, destination: Option<&str>) -> Option<ApiAnswer> {
    let active = rt.active.load();
    let queued = active
        .policy
        .route_order
        .iter()
        .find(|r| &*r.name == route)
        .and_then(|r| r.queue());
    let Some(q) = queued else {
        return Some(error(
            404,
            "route_not_found",
            "No queue route of the running config has this name.",
        ));
    };
    match destination {
        Some(name) if !q.has_destination(name) => Some(error(
            404,
            "destination_not_found",
            "The route has no destination of this name in the running config.",
        )),
        _ => None,
    }
}

async fn retry_route(rt: &Runtime, queue: &dyn DeliveryLog, params: &Params) -> Served {
    let (Some(route), Some("dead")) = (params.get("route"), params.get("state")) else {
        return Ok(error(
            400,
            "invalid_query",
            "Bulk retry needs route=<name>&state=dead.",
        ));
    };
    if let Some(refused) = unknown_target(rt, route, None) {
        return Ok(refused);
    }
    let n = queue.retry_dead(route, unix_ms(SystemTime::now())).await?;
    Ok(json(202, &serde_json::json!({ "requeued": n })))
}

/// Deliveries a replay's store transaction looks at, at most: the call pages through the log
/// rather than loading it.
const REPLAY_PAGE: usize = 500;

/// `POST /api/deliveries/replay?route=R&since=&until=&destination=D`: every delivery of the route
/// received in the window is attempted again (PRODUCT.md §10).
async fn replay(rt: &Runtime, queue: &dyn DeliveryLog, params: &Params) -> Served {
    let now = SystemTime::now();
    let Some(route) = params.get("route") else {
        return Ok(error(400, "invalid_query", "Replay needs route=<name>."));
    };
    let since = params.get("since").map(|t| moment(t, now));
    let until = params.get("until").map_or(Some(now), |t| moment(t, now));
    let (Some(Some(since)), Some(until)) = (since, until) else {
        return Ok(error(
            400,
            "invalid_query",
            "Replay needs since=, and takes until=: RFC 3339 times (2026-01-02T03:04:05Z) or durations before now (2h).",
        ));
    };
    let destination = params.get("destination");
    if let Some(refused) = unknown_target(rt, route, destination) {
        return Ok(refused);
    }
    let end = DeliveryId::at(unix_ms(until).saturating_add(1));
    let mut start = DeliveryId::at(unix_ms(since));
    let mut requeued = 0;
    while start < end {
        let (n, next) = queue
            .replay(route, start..end, destination, REPLAY_PAGE, unix_ms(now))
            .await?;
        requeued += n;
        match next {
            Some(last) => start = DeliveryId(last.0 + 1),
            None => break,
        }
    }
    Ok(json(202, &serde_json::json!({ "requeued": requeued })))
}

/// An RFC 3339 time, or a duration before `now` (`2h`, `30m`, `7d`).
fn moment(text: &str, now: SystemTime) -> Option<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Some(t);
    }
    let ago = crate::config::units::parse_duration(text).ok()?;
    now.checked_sub(ago)
}

/// Query parameters, percent-decoded.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>) -> Self {
        Self(crate::urlencoded::pairs(query.unwrap_or("")))
    }

    /// A parameter's value; an empty value counts as absent (`?route=` means any route).
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded_and_empty_ones_absent() {
        let p = Params::parse(Some("route=a%2Fb&state=&limit=5&x=1+2&bad=%zz&end=%4"));
        assert_eq!(p.get("route"), Some("a/b"));
        assert_eq!(p.get("state"), None);
        assert_eq!(p.get("limit"), Some("5"));
        assert_eq!(p.get("x"), Some("1 2"));
        assert_eq!(p.get("bad"), Some("%zz"));
        assert_eq!(p.get("end"), Some("%4"));
    }

    #[test]
    fn a_replay_window_is_a_time_or_a_duration_before_now() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        assert_eq!(
            moment("2h", now),
            Some(now - std::time::Duration::from_secs(7200))
        );
        assert_eq!(
            moment("2027-01-15T08:00:00Z", now),
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000))
        );
        assert_eq!(moment("yesterday", now), None);
        assert_eq!(moment("", now), None);
    }

    #[test]
    fn the_token_rules() {
        let get = Method::GET;
        let post = Method::POST;
        assert!(authorize(None, None, &get).is_none());
        assert_eq!(authorize(None, None, &post).unwrap().status, 403);
        assert_eq!(authorize(Some("t"), None, &get).unwrap().status, 401);
        assert_eq!(
            authorize(Some("t"), Some(b"Bearer x"), &get)
                .unwrap()
                .status,
            401
        );
        assert!(authorize(Some("t"), Some(b"Bearer t"), &post).is_none());
    }
}
