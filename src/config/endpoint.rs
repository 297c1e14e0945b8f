//! An `http://` or `https://` URL as hookgate reaches it: whether it is TLS, the host name (for
//! SNI and certificate checks), and the address it resolves to. The config's upstreams and the
//! command line's `send`/`deliveries` share this.

use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub addr: SocketAddr,
}

/// The endpoint of `uri`, resolved now (the first address).
pub fn resolve(uri: &http::Uri) -> Result<Endpoint, String> {
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("the URL must start with http:// or https://".into()),
    };
    let host = uri
        .host()
        .ok_or("the URL has no host")?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve host {host:?}"))?;
    Ok(Endpoint { tls, host, addr })
}
