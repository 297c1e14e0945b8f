//! The exchange with an app: the head it receives (PRODUCT.md §6), the exact body bytes over the
//! route's own idle connections (or a new one from Pingora's connector), and the app's whole
//! answer back. Forwarded deliveries and queued attempts both go through here.

use super::pool::Pool;
use crate::config::Upstream;
use crate::exchange::ExchangeError;
use crate::pipeline::Client;
use crate::trace::Traceparent;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderName;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{HeaderNameVariant, RequestHeader, ResponseHeader};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Webhook answers are small; an app answering more than this is refused rather than buffered.
const MAX_RESPONSE_BODY: usize = 16 << 20;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus `Expect`,
/// which hookgate already answered.
const HOP_BY_HOP: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"expect",
];

/// Request headers hookgate sets itself, so the sender's own values never reach the app.
const SET_BY_GATEWAY: &[&[u8]] = &[
    b"content-length",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-request-id",
];

pub struct UpstreamAnswer {
    pub header: Box<ResponseHeader>,
    pub body: Bytes,
}

/// The hop-by-hop headers of one message: RFC 9110's plus any its `Connection` header names.
struct HopByHop<'a> {
    named: Vec<&'a [u8]>,
}

impl<'a> HopByHop<'a> {
    fn of(headers: &'a http::HeaderMap) -> Self {
        let named = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
            .collect();
        Self { named }
    }

    fn contains(&self, name: &[u8]) -> bool {
        HOP_BY_HOP
            .iter()
            .chain(&self.named)
            .any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// Headers that apps read as the client's address or scheme: dropped from an untrusted peer
/// (PRODUCT.md §6), so a spoofed value never reaches the app.
const CLIENT_CLAIMS: &[&[u8]] = &[
    b"forwarded",
    b"x-real-ip",
    b"true-client-ip",
    b"x-client-ip",
    b"cf-connecting-ip",
    b"x-forwarded-host",
    b"x-forwarded-port",
];

/// Whether `name` differs from a forwarding header only by `_` for `-` (CGI, WSGI and Rack read
/// `X_Forwarded_For` as `HTTP_X_FORWARDED_FOR`).
fn underscored_forwarding_header(name: &[u8]) -> bool {
    name.contains(&b'_')
        && CLIENT_CLAIMS.iter().chain(SET_BY_GATEWAY).any(|h| {
            h.len() == name.len()
                && h.iter()
                    .zip(name)
                    .all(|(a, b)| a.eq_ignore_ascii_case(b) || (*a == b'-' && *b == b'_'))
        })
}

/// The request line the app receives: the same method, path and query, always HTTP/1.1.
pub fn write_request_line(buf: &mut BytesMut, method: &str, target: &str) {
    buf.put_slice(method.as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(target.as_bytes());
    buf.put_slice(b" HTTP/1.1\r\n");
}

/// The sender's path and query, as the app receives them.
pub fn target(downstream: &RequestHeader) -> &str {
    downstream.uri.path_and_query().map_or("/", |p| p.as_str())
}

/// The header lines the app receives (PRODUCT.md §6), written straight to the wire format:
/// end-to-end headers (their case and order kept; hop-by-hop ones, the ones hookgate sets
/// itself and, from an untrusted peer, client-address claims dropped), plus X-Forwarded-For,
/// X-Forwarded-Proto, X-Request-Id and a W3C traceparent. No Content-Length: the caller ends
/// the head with [`end_head`].
pub fn write_headers(
    buf: &mut BytesMut,
    downstream: &RequestHeader,
    client: &Client,
    peer: IpAddr,
    request_id: &str,
    trace: &Traceparent,
) {
    const CRLF: &[u8] = b"\r\n";
    let hop = HopByHop::of(&downstream.headers);
    let mut has_host = false;
    let _ = downstream.map(|name, value| {
        let name = match name {
            HeaderNameVariant::Case(n) => n.as_slice(),
            HeaderNameVariant::Titled(n) => n.as_bytes(),
        };
        if hop.contains(name)
            || SET_BY_GATEWAY.iter().any(|h| h.eq_ignore_ascii_case(name))
            || (!client.peer_trusted
                && (CLIENT_CLAIMS.iter().any(|h| h.eq_ignore_ascii_case(name))
                    || underscored_forwarding_header(name)))
            || (!trace.given && is_trace_header(name))
        {
            return Ok(());
        }
        has_host |= name.eq_ignore_ascii_case(b"host");
        for part in [name, b": ", value.as_bytes(), CRLF] {
            buf.put_slice(part);
        }
        Ok(())
    });
    if !has_host {
        // HTTP/2 carries the host as :authority; HTTP/1.1 needs it as a header.
        if let Some(a) = downstream.uri.authority() {
            for part in [b"Host: ", a.as_str().as_bytes(), CRLF] {
                buf.put_slice(part);
            }
        }
    }

    buf.put_slice(b"X-Forwarded-For: ");
    if client.peer_trusted {
        for v in downstream.headers.get_all("x-forwarded-for") {
            buf.put_slice(v.as_bytes());
            buf.put_slice(b", ");
        }
    }
    let _ = write!(buf, "{peer}\r\nX-Forwarded-Proto: ");
    buf.put_slice(if client.https { b"https" } else { b"http" });
    let _ = write!(buf, "\r\nX-Request-Id: {request_id}\r\n");
    if !trace.given {
        let _ = write!(buf, "traceparent: {trace}\r\n");
    }
}

/// Ends a head with the exact body length.
pub fn end_head(buf: &mut BytesMut, body_len: usize) {
    let _ = write!(buf, "Content-Length: {body_len}\r\n\r\n");
}

/// The whole head a forwarded delivery goes upstream with.
pub fn upstream_head(
    downstream: &RequestHeader,
    client: &Client,
    peer: IpAddr,
    request_id: &str,
    trace: &Traceparent,
    body_len: usize,
) -> BytesMut {
    let mut buf = BytesMut::with_capacity(1024);
    write_request_line(&mut buf, downstream.method.as_str(), target(downstream));
    write_headers(&mut buf, downstream, client, peer, request_id, trace);
    end_head(&mut buf, body_len);
    buf
}

fn is_trace_header(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"traceparent") || name.eq_ignore_ascii_case(b"tracestate")
}

/// One app as hookgate reaches it: its peer, its idle connections and how long an exchange may
/// take. Built once per config load.
pub struct UpstreamLink {
    pub peer: HttpPeer,
    pub pool: Pool,
    pub timeout: Duration,
}

impl UpstreamLink {
    pub fn new(upstream: &Upstream, timeout: Duration) -> Self {
        Self {
            peer: HttpPeer::new(upstream.addr, upstream.tls, upstream.host.clone()),
            pool: Pool::default(),
            timeout,
        }
    }
}

/// One exchange with the app within the link's timeout.
pub async fn exchange(
    connector: &TransportConnector,
    link: &UpstreamLink,
    head: BytesMut,
    body: Bytes,
) -> Result<UpstreamAnswer, ExchangeError> {
    let exchanged = exchange_inner(connector, &link.pool, &link.peer, head, body, link.timeout);
    match tokio::time::timeout(link.timeout, exchanged).await {
        Ok(result) => result,
        Err(_) => Err(ExchangeError::Timeout(link.timeout)),
    }
}

async fn exchange_inner(
    connector: &TransportConnector,
    pool: &Pool,
    peer: &HttpPeer,
    head: BytesMut,
    body: Bytes,
    timeout: Duration,
) -> Result<UpstreamAnswer, ExchangeError> {
    let failed = |e: Box<pingora_core::Error>| ExchangeError::from_pingora(&e, timeout);
    // Head and body go out in one vectored write: the connector's streams are unbuffered, and
    // Pingora's client session would send the head and the body apart (two sends per delivery
    // instead of one). Pingora's client session then reads the answer.
    let mut stream = match pool.take() {
        Some(s) => s,
        None => connector.new_stream(peer).await.map_err(failed)?,
    };
    let io = |e: std::io::Error| ExchangeError::Io(format!("writing the request: {e}"));
    stream
        .write_all_buf(&mut head.freeze().chain(body))
        .await
        .map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut session = HttpSession::new_with_options(stream, peer);
    // Skip informational answers (100 Continue, 103 Early Hints).
    loop {
        session.read_response().await.map_err(failed)?;
        let status = session.resp_header().map_or(0, |h| h.status.as_u16());
        if !(100..200).contains(&status) {
            break;
        }
    }
    let header = Box::new(
        session
            .resp_header()
            .cloned()
            .ok_or_else(|| ExchangeError::BadResponse("no response head".into()))?,
    );
    let mut buf = BytesMut::new();
    while let Some(chunk) = session.read_body_bytes().await.map_err(failed)? {
        if buf.len() + chunk.len() > MAX_RESPONSE_BODY {
            return Err(ExchangeError::ResponseTooLarge(MAX_RESPONSE_BODY));
        }
        buf.extend_from_slice(&chunk);
    }
    session.respect_keepalive();
    if let Some(stream) = session.reuse().await {
        pool.put(stream);
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
    let hop = HopByHop::of(&header.headers);
    let drop: Vec<HeaderName> = header
        .headers
        .keys()
        .filter(|name| hop.contains(name.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in drop {
        header.remove_header(&name);
    }
    let _ = header.insert_header(http::header::CONTENT_LENGTH, body_len.to_string());
    if !header.headers.contains_key("x-request-id") {
        let _ = header.insert_header("X-Request-Id", request_id);
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downstream(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/hook?a=1", None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    fn head(req: &RequestHeader, peer_trusted: bool) -> String {
        let client = Client {
            addr: None,
            https: true,
            peer_trusted,
        };
        let trace = Traceparent::parse(Some(
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ))
        .unwrap();
        let wire = upstream_head(
            req,
            &client,
            "10.0.0.9".parse().unwrap(),
            "req-1",
            &trace,
            42,
        );
        String::from_utf8(wire.to_vec()).unwrap()
    }

    #[test]
    fn the_app_gets_end_to_end_headers_in_order_and_the_gateways_own() {
        let req = downstream(&[
            ("Host", "app.example"),
            ("X-ImgGo-Signature", "abc"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "dropped"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "999"),
            ("Expect", "100-continue"),
            ("X-Request-Id", "spoofed"),
            ("X-Forwarded-Proto", "http"),
            ("x-custom", "kept"),
        ]);
        assert_eq!(
            head(&req, false),
            "POST /hook?a=1 HTTP/1.1\r\n\
             Host: app.example\r\n\
             X-ImgGo-Signature: abc\r\n\
             x-custom: kept\r\n\
             X-Forwarded-For: 10.0.0.9\r\n\
             X-Forwarded-Proto: https\r\n\
             X-Request-Id: req-1\r\n\
             Content-Length: 42\r\n\r\n"
        );
    }

    #[test]
    fn a_forwarded_chain_is_kept_only_from_a_trusted_proxy() {
        let req = downstream(&[
            ("Host", "h"),
            ("X-Forwarded-For", "198.51.100.7, 10.1.1.1"),
            ("X-Forwarded-For", "10.2.2.2"),
        ]);
        assert!(head(&req, true)
            .contains("\r\nX-Forwarded-For: 198.51.100.7, 10.1.1.1, 10.2.2.2, 10.0.0.9\r\n"));
        assert!(head(&req, false).contains("\r\nX-Forwarded-For: 10.0.0.9\r\n"));
        assert_eq!(head(&req, true).matches("X-Forwarded-For").count(), 1);
    }

    #[test]
    fn client_address_claims_are_dropped_from_an_untrusted_peer_only() {
        let claims = [
            ("Forwarded", "for=6.6.6.6;proto=https"),
            ("X-Real-IP", "6.6.6.6"),
            ("True-Client-IP", "6.6.6.6"),
            ("X-Client-IP", "6.6.6.6"),
            ("CF-Connecting-IP", "6.6.6.6"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Port", "443"),
            ("X_Forwarded_For", "6.6.6.6"),
            ("X_Forwarded_Proto", "https"),
            ("X_Real_IP", "6.6.6.6"),
        ];
        let mut headers = vec![("Host", "h"), ("X_Custom_Thing", "kept")];
        headers.extend(claims);
        let req = downstream(&headers);
        let untrusted = head(&req, false);
        assert!(!untrusted.contains("6.6.6.6"), "{untrusted}");
        assert!(!untrusted.contains("evil.example"), "{untrusted}");
        assert!(!untrusted.contains("X-Forwarded-Port"), "{untrusted}");
        assert!(untrusted.contains("X_Custom_Thing: kept"), "{untrusted}");
        let trusted = head(&req, true);
        for (name, value) in claims {
            assert!(
                trusted.contains(&format!("{name}: {value}\r\n")),
                "{trusted}"
            );
        }
    }

    #[test]
    fn a_valid_traceparent_is_kept_and_a_missing_one_made() {
        let req = downstream(&[
            ("Host", "h"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "vendor=1"),
        ]);
        let kept = head(&req, false);
        assert!(kept
            .contains("traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"));
        assert!(kept.contains("tracestate: vendor=1\r\n"));
        assert_eq!(kept.matches("traceparent").count(), 1);

        let client = Client {
            addr: None,
            https: true,
            peer_trusted: false,
        };
        let bad = downstream(&[
            ("Host", "h"),
            ("traceparent", "garbage"),
            ("tracestate", "x=1"),
        ]);
        let fresh = Traceparent::parse(bad.headers.get("traceparent").map(|v| v.as_bytes()))
            .unwrap_or_default();
        let wire = upstream_head(&bad, &client, "10.0.0.9".parse().unwrap(), "r", &fresh, 0);
        let wire = String::from_utf8(wire.to_vec()).unwrap();
        assert!(!wire.contains("garbage") && !wire.contains("x=1"), "{wire}");
        let line = wire
            .lines()
            .find(|l| l.starts_with("traceparent: "))
            .unwrap();
        assert!(Traceparent::parse(Some(&line.as_bytes()["traceparent: ".len()..])).is_some());
    }

    #[test]
    fn an_http2_authority_becomes_the_host_header() {
        let mut req = downstream(&[("x-a", "1")]);
        req.set_uri("https://app.example:8443/hook?a=1".parse().unwrap());
        let wire = head(&req, false);
        assert!(wire.starts_with("POST /hook?a=1 HTTP/1.1\r\n"), "{wire}");
        assert!(wire.contains("\r\nHost: app.example:8443\r\n"), "{wire}");
    }

    #[test]
    fn hop_by_hop_answer_headers_are_not_relayed() {
        let mut answer = ResponseHeader::build(200, None).unwrap();
        for (n, v) in [
            ("Connection", "close, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("X-Kept", "yes"),
        ] {
            answer.append_header(n, v).unwrap();
        }
        let relayed = relay_header(Box::new(answer), 7, "req-1");
        let names: Vec<&str> = relayed.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept", "content-length", "x-request-id"]);
    }
}
