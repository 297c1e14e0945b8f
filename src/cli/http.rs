//! A small HTTP/1.1 client over Pingora's connector, for `send` and `deliveries`.

use bytes::Bytes;
use std::path::Path;

/// Sends one request to `url` over Pingora's client; returns the status and the body.
pub fn request(
    method: &str,
    url: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    insecure: bool,
) -> Result<(u16, Bytes), String> {
    use pingora_core::connectors::http::v1::Connector;
    use pingora_core::connectors::ConnectorOptions;
    use pingora_core::upstreams::peer::HttpPeer;

    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let crate::config::endpoint::Endpoint { tls, host, addr } =
        crate::config::endpoint::resolve(&uri)?;
    let mut peer = HttpPeer::new(addr, tls, host.clone());
    if insecure {
        peer.options.verify_cert = false;
        peer.options.verify_hostname = false;
    }
    let mut options = ConnectorOptions::new(1);
    for ca in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ] {
        if Path::new(ca).is_file() {
            options.ca_file = Some(ca.to_string());
            break;
        }
    }
    let mut req = pingora_http::RequestHeader::build(
        method,
        uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes(),
        None,
    )
    .map_err(|e| e.to_string())?;
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let set = |req: &mut pingora_http::RequestHeader, n: String, v: String| {
        req.insert_header(n, v).map_err(|e| e.to_string())
    };
    set(&mut req, "Host".into(), authority)?;
    if method == "POST" {
        set(&mut req, "Content-Type".into(), "application/json".into())?;
    }
    set(&mut req, "Content-Length".into(), body.len().to_string())?;
    set(
        &mut req,
        "User-Agent".into(),
        format!("hookgate/{}", env!("CARGO_PKG_VERSION")),
    )?;
    for (n, v) in headers {
        set(&mut req, n, v)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let connector = Connector::new(Some(options));
        let (mut s, _) = connector
            .get_http_session(&peer)
            .await
            .map_err(|e| format!("connecting to {url}: {e}"))?;
        s.write_request_header(Box::new(req))
            .await
            .map_err(|e| e.to_string())?;
        s.write_body(&body).await.map_err(|e| e.to_string())?;
        s.finish_body().await.map_err(|e| e.to_string())?;
        s.read_response()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        let status = s.resp_header().map_or(0, |h| h.status.as_u16());
        let mut out = Vec::new();
        while let Some(chunk) = s.read_body_bytes().await.map_err(|e| e.to_string())? {
            out.extend_from_slice(&chunk);
        }
        Ok((status, Bytes::from(out)))
    })
}
