//! Every answer the gateway gives instead of forwarding, in one table (PRODUCT.md §3).

use crate::signature::SignatureError;
use std::time::Duration;

/// One schema violation, as reported in `error.details`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

/// Why a delivery was refused. [`Rejection::describe`] is the §3 table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    BadRequest,
    RouteNotFound,
    MethodNotAllowed,
    IpNotAllowed,
    HttpsRequired,
    RateLimited { retry_after: Duration },
    PayloadTooLarge,
    Overloaded,
    RequestTimeout,
    Signature(SignatureError),
    InvalidJson,
    SchemaViolation(Vec<Violation>),
    EventNotAllowed,
    IdempotencyKeyMissing,
    DeliveryInProgress { retry_after: Duration },
    StoreUnavailable,
    QueueFull,
    UpstreamUnavailable,
    UpstreamTimeout,
}

impl Rejection {
    /// (status, code, message): PRODUCT.md §3 read straight off.
    pub fn describe(&self) -> (u16, &'static str, &'static str) {
        use Rejection::*;
        use SignatureError::*;
        match self {
            BadRequest => (
                400,
                "bad_request",
                "The request is not well-formed HTTP (framing, Content-Length, Transfer-Encoding, Host or head size).",
            ),
            RouteNotFound => (
                404,
                "route_not_found",
                "No webhook route is configured for this path.",
            ),
            MethodNotAllowed => (
                405,
                "method_not_allowed",
                "Webhook deliveries must use POST.",
            ),
            IpNotAllowed => (
                403,
                "ip_not_allowed",
                "The client address is not allowed to deliver to this route.",
            ),
            HttpsRequired => (
                403,
                "https_required",
                "This route accepts deliveries over HTTPS only.",
            ),
            RateLimited { .. } => (
                429,
                "rate_limited",
                "This client address sends more requests than the route's limit; retry later.",
            ),
            PayloadTooLarge => (
                413,
                "payload_too_large",
                "The request body exceeds this route's max_body.",
            ),
            Overloaded => (
                503,
                "overloaded",
                "The gateway holds as many request bodies as it may; retry later.",
            ),
            RequestTimeout => (
                408,
                "request_timeout",
                "The whole request did not arrive within the client timeout.",
            ),
            Signature(Missing) => (
                401,
                "signature_missing",
                "The delivery carries no signature header.",
            ),
            Signature(Invalid) => (
                401,
                "signature_invalid",
                "The signature does not verify against the raw body.",
            ),
            Signature(OutOfTolerance) => (
                401,
                "timestamp_out_of_tolerance",
                "The signed timestamp is outside the accepted tolerance.",
            ),
            InvalidJson => (400, "invalid_json", "The request body is not valid JSON."),
            SchemaViolation(_) => (
                422,
                "schema_violation",
                "The delivery does not match the route's JSON Schema.",
            ),
            EventNotAllowed => (
                422,
                "event_not_allowed",
                "This event type is not accepted by this route.",
            ),
            IdempotencyKeyMissing => (
                422,
                "idempotency_key_missing",
                "The delivery lacks a field of its idempotency key.",
            ),
            DeliveryInProgress { .. } => (
                409,
                "delivery_in_progress",
                "This delivery is being processed; retry later.",
            ),
            StoreUnavailable => (
                503,
                "store_unavailable",
                "The store is unavailable; retry later.",
            ),
            QueueFull => (
                503,
                "queue_full",
                "This route holds as many undelivered deliveries as it may; retry later.",
            ),
            UpstreamUnavailable => (
                502,
                "upstream_unavailable",
                "The upstream application could not be reached.",
            ),
            UpstreamTimeout => (
                504,
                "upstream_timeout",
                "The upstream application did not answer in time.",
            ),
        }
    }

    pub fn code(&self) -> &'static str {
        self.describe().1
    }

    /// `Retry-After` seconds, where the sender should come back.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Rejection::DeliveryInProgress { retry_after } => Some(retry_after.as_secs().max(1)),
            Rejection::RateLimited { retry_after } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            Rejection::StoreUnavailable => Some(5),
            Rejection::Overloaded => Some(1),
            Rejection::QueueFull => Some(30),
            _ => None,
        }
    }

    /// The JSON error body.
    pub fn body(&self) -> Vec<u8> {
        let (_, code, message) = self.describe();
        let mut error = serde_json::json!({ "code": code, "message": message });
        if let Rejection::SchemaViolation(details) = self {
            error["details"] = serde_json::json!(details);
        }
        serde_json::to_vec(&serde_json::json!({ "error": error })).unwrap_or_default()
    }
}

/// What the gateway answers itself, without the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Reject(Rejection),
    /// Not a wanted event and `otherwise: ignore`: 200, not forwarded.
    Ignored,
    /// The key was already delivered: 200 + `Idempotent-Replayed: true`.
    AlreadyProcessed,
    /// Stored durably for background delivery (queue routes).
    Queued {
        delivery_id: String,
    },
    /// A provider's verification request, answered at the gateway (`handshake: true`).
    Handshake(crate::signature::Handshake),
}

impl From<Rejection> for Answer {
    fn from(r: Rejection) -> Self {
        Answer::Reject(r)
    }
}

impl Answer {
    pub fn status(&self) -> u16 {
        match self {
            Answer::Reject(r) => r.describe().0,
            Answer::Ignored
            | Answer::AlreadyProcessed
            | Answer::Queued { .. }
            | Answer::Handshake(_) => 200,
        }
    }

    /// The `outcome` label of `hookgate_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Answer::Reject(r) => r.code(),
            Answer::Ignored => "ignored",
            Answer::AlreadyProcessed => "duplicate",
            Answer::Queued { .. } => "queued",
            Answer::Handshake(_) => "handshake",
        }
    }

    pub fn body(&self) -> Vec<u8> {
        match self {
            Answer::Reject(r) => r.body(),
            Answer::Ignored => br#"{"status":"ignored"}"#.to_vec(),
            Answer::AlreadyProcessed => br#"{"status":"already_processed"}"#.to_vec(),
            Answer::Queued { delivery_id } => serde_json::to_vec(
                &serde_json::json!({ "status": "queued", "delivery_id": delivery_id }),
            )
            .unwrap_or_default(),
            Answer::Handshake(h) => h.body.clone(),
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Answer::Handshake(h) => h.content_type,
            _ => "application/json",
        }
    }

    /// Extra response headers the contract asks for.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Answer::Reject(Rejection::MethodNotAllowed) => vec![("Allow", "POST".into())],
            Answer::Reject(r) => r
                .retry_after()
                .map(|s| ("Retry-After", s.to_string()))
                .into_iter()
                .collect(),
            Answer::AlreadyProcessed => vec![("Idempotent-Replayed", "true".into())],
            Answer::Ignored | Answer::Queued { .. } | Answer::Handshake(_) => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_shape() {
        let body: serde_json::Value =
            serde_json::from_slice(&Rejection::RouteNotFound.body()).unwrap();
        assert_eq!(body["error"]["code"], "route_not_found");
        assert!(body["error"]["message"].as_str().unwrap().len() > 10);
        let v = Rejection::SchemaViolation(vec![Violation {
            path: "/job_id".into(),
            message: "m".into(),
        }]);
        let body: serde_json::Value = serde_json::from_slice(&v.body()).unwrap();
        assert_eq!(body["error"]["details"][0]["path"], "/job_id");
    }

    #[test]
    fn contract_headers() {
        assert_eq!(
            Answer::Reject(Rejection::MethodNotAllowed).headers(),
            vec![("Allow", "POST".to_string())]
        );
        assert_eq!(
            Answer::AlreadyProcessed.headers(),
            vec![("Idempotent-Replayed", "true".to_string())]
        );
        let busy = Rejection::DeliveryInProgress {
            retry_after: Duration::from_millis(200),
        };
        assert_eq!(
            Answer::Reject(busy).headers(),
            vec![("Retry-After", "1".to_string())]
        );
        assert_eq!(Answer::Reject(Rejection::StoreUnavailable).status(), 503);
    }
}
