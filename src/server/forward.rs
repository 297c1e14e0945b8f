//! Forwarding a checked delivery: the exact body bytes to the app over Pingora's pooled HTTP/1.1
//! connector, and the app's whole answer back.

use crate::config::Upstream;
use crate::pipeline::Client;
use crate::rejection::Rejection;
use bytes::{Bytes, BytesMut};
use http::Version;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::v1::client::{http_req_header_to_wire, HttpSession};
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Webhook answers are small; an app answering more than this is refused rather than buffered.
const MAX_RESPONSE_BODY: usize = 16 << 20;
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus `Expect`,
/// which hookgate already answered.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

pub struct UpstreamAnswer {
    pub header: Box<ResponseHeader>,
    pub body: Bytes,
}

/// Hop-by-hop headers present in `headers`, including any the `Connection` header names.
fn hop_by_hop(headers: &http::HeaderMap) -> Vec<String> {
    let named = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty());
    HOP_BY_HOP
        .iter()
        .map(|h| h.to_string())
        .chain(named)
        .filter(|h| headers.contains_key(h.as_str()))
        .collect()
}

/// The request the app receives (PRODUCT.md §6): same method, path, query and end-to-end headers,
/// plus X-Forwarded-For/-Proto and X-Request-Id, always as HTTP/1.1 with an exact Content-Length.
pub fn upstream_request(
    downstream: &RequestHeader,
    client: &Client,
    peer: IpAddr,
    request_id: &str,
    body_len: usize,
) -> pingora_core::Result<Box<RequestHeader>> {
    let mut req = downstream.clone();
    let target = downstream
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let authority = downstream.uri.authority().map(|a| a.as_str().to_string());
    req.set_raw_path(target.as_bytes())?;
    req.set_version(Version::HTTP_11);
    for h in hop_by_hop(&downstream.headers) {
        req.remove_header(&h);
    }
    if !req.headers.contains_key(http::header::HOST) {
        // HTTP/2 carries the host as :authority; HTTP/1.1 needs it as a header.
        if let Some(a) = authority {
            req.insert_header(http::header::HOST, a)?;
        }
    }
    let forwarded_for = if client.peer_trusted {
        let chain: Vec<&str> = downstream
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if chain.is_empty() {
            peer.to_string()
        } else {
            format!("{}, {peer}", chain.join(", "))
        }
    } else {
        peer.to_string()
    };
    req.insert_header("X-Forwarded-For", forwarded_for)?;
    req.insert_header(
        "X-Forwarded-Proto",
        if client.https { "https" } else { "http" },
    )?;
    req.insert_header("X-Request-Id", request_id)?;
    req.insert_header(http::header::CONTENT_LENGTH, body_len.to_string())?;
    Ok(Box::new(req))
}

pub fn peer_for(upstream: &Upstream) -> HttpPeer {
    HttpPeer::new(upstream.addr, upstream.tls, upstream.host.clone())
}

/// One exchange with the app within `limit`: 502 when it cannot be reached or answers garbage,
/// 504 when it does not answer in time.
pub async fn exchange(
    connector: &TransportConnector,
    peer: &HttpPeer,
    request: Box<RequestHeader>,
    body: Bytes,
    limit: Duration,
) -> Result<UpstreamAnswer, Rejection> {
    match tokio::time::timeout(limit, exchange_inner(connector, peer, request, body)).await {
        Ok(result) => result,
        Err(_) => Err(Rejection::UpstreamTimeout),
    }
}

async fn exchange_inner(
    connector: &TransportConnector,
    peer: &HttpPeer,
    request: Box<RequestHeader>,
    body: Bytes,
) -> Result<UpstreamAnswer, Rejection> {
    let unavailable = |e: Box<pingora_core::Error>| {
        tracing::debug!(error = %e, "upstream exchange failed");
        if e.etype() == &pingora_core::ErrorType::ConnectTimedout
            || e.etype() == &pingora_core::ErrorType::ReadTimedout
        {
            Rejection::UpstreamTimeout
        } else {
            Rejection::UpstreamUnavailable
        }
    };
    // Head and body go out in one flush of the pooled stream's write buffer (one send for a
    // typical delivery, where Pingora's client session flushes the head and the body apart);
    // Pingora's client session then reads the answer.
    let wire = http_req_header_to_wire(&request).ok_or(Rejection::UpstreamUnavailable)?;
    let (mut stream, _reused) = connector.get_stream(peer).await.map_err(unavailable)?;
    let io = |e: std::io::Error| {
        tracing::debug!(error = %e, "writing to the upstream failed");
        Rejection::UpstreamUnavailable
    };
    stream.write_all(&wire).await.map_err(io)?;
    stream.write_all(&body).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut session = HttpSession::new_with_options(stream, peer);
    // Skip informational answers (100 Continue, 103 Early Hints).
    loop {
        session.read_response().await.map_err(unavailable)?;
        let status = session.resp_header().map_or(0, |h| h.status.as_u16());
        if !(100..200).contains(&status) {
            break;
        }
    }
    let header = Box::new(
        session
            .resp_header()
            .cloned()
            .ok_or(Rejection::UpstreamUnavailable)?,
    );
    let mut buf = BytesMut::new();
    while let Some(chunk) = session.read_body_bytes().await.map_err(unavailable)? {
        if buf.len() + chunk.len() > MAX_RESPONSE_BODY {
            return Err(Rejection::UpstreamUnavailable);
        }
        buf.extend_from_slice(&chunk);
    }
    session.respect_keepalive();
    if let Some(stream) = session.reuse().await {
        connector.release_stream(stream, peer.reuse_hash(), Some(POOL_IDLE));
    }
    Ok(UpstreamAnswer {
        header,
        body: buf.freeze(),
    })
}

/// The app's answer as relayed to the sender: its status, end-to-end headers and body.
pub fn relay_header(
    mut header: Box<ResponseHeader>,
    body_len: usize,
    request_id: &str,
) -> Box<ResponseHeader> {
    for h in hop_by_hop(&header.headers) {
        header.remove_header(&h);
    }
    let _ = header.insert_header(http::header::CONTENT_LENGTH, body_len.to_string());
    if !header.headers.contains_key("x-request-id") {
        let _ = header.insert_header("X-Request-Id", request_id);
    }
    header
}
