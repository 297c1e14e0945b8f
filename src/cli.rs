//! The command line (PRODUCT.md §1): `run`, `check`, `sign`, `send`.

use crate::config::{self, Config, ListenerTls};
use crate::logging::{self, LogFormat};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Parser)]
#[command(
    name = "hookgate",
    version,
    about = "A webhook gateway that admits only clean deliveries."
)]
pub struct Cli {
    /// Log format (default: json when stdout is not a terminal, else pretty). Level from RUST_LOG.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve webhooks on the configured listeners.
    Run {
        /// Config file.
        #[arg(short, long, default_value = "config/hookgate.yaml")]
        config: PathBuf,
        /// Take the listening sockets over from a running hookgate (graceful upgrade);
        /// then send the old process SIGQUIT.
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate the config: one line per route, or every problem and exit 1.
    Check {
        /// Config file.
        #[arg(short, long, default_value = "config/hookgate.yaml")]
        config: PathBuf,
    },
    /// Print the signature header line(s) a route expects for a body.
    Sign {
        /// Config file.
        #[arg(short, long, default_value = "config/hookgate.yaml")]
        config: PathBuf,
        /// Route whose scheme and first secret sign the body.
        #[arg(long)]
        route: String,
        /// Ed25519 signing key (whsk_...) for standard-webhooks/svix routes with whpk_ keys.
        #[arg(long)]
        key: Option<String>,
        /// Body file, or - for stdin.
        #[arg(default_value = "-")]
        body: String,
    },
    /// Sign a body as `sign` does and POST it to URL; print the status and response body.
    Send {
        /// Where to deliver, e.g. https://localhost:8443/webhooks/imggo
        url: String,
        /// Config file.
        #[arg(short, long, default_value = "config/hookgate.yaml")]
        config: PathBuf,
        /// Route whose scheme and first secret sign the body.
        #[arg(long)]
        route: String,
        /// Ed25519 signing key (whsk_...) for standard-webhooks/svix routes with whpk_ keys.
        #[arg(long)]
        key: Option<String>,
        /// Do not verify the server's TLS certificate (implied when the config serves a
        /// self-signed development certificate).
        #[arg(short = 'k', long)]
        insecure: bool,
        /// Body file, or - for stdin.
        #[arg(default_value = "-")]
        body: String,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Run { .. });
    logging::init(cli.log_format, serving);
    match cli.command {
        Command::Run { config, upgrade } => match load(&config) {
            Ok(c) => match crate::server::run(c, upgrade) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("hookgate: {e}");
                    1
                }
            },
            Err(code) => code,
        },
        Command::Check { config } => match load(&config) {
            Ok(c) => {
                for route in &c.gateway.route_order {
                    println!("{route}");
                }
                0
            }
            Err(code) => code,
        },
        Command::Sign {
            config,
            route,
            key,
            body,
        } => {
            let result = load(&config).map_err(|_| None).and_then(|c| {
                let body = read_body(&body).map_err(Some)?;
                signed_headers(&c, &route, key.as_deref(), &body).map_err(Some)
            });
            match result {
                Ok(headers) => {
                    for (name, value) in headers {
                        println!("{name}: {value}");
                    }
                    0
                }
                Err(Some(e)) => {
                    eprintln!("hookgate sign: {e}");
                    1
                }
                Err(None) => 1,
            }
        }
        Command::Send {
            url,
            config,
            route,
            key,
            insecure,
            body,
        } => {
            let result = load(&config).map_err(|_| None).and_then(|c| {
                let body = read_body(&body).map_err(Some)?;
                let headers = signed_headers(&c, &route, key.as_deref(), &body).map_err(Some)?;
                let insecure = insecure || serves_self_signed(&c);
                send(&url, headers, body, insecure).map_err(Some)
            });
            match result {
                Ok((status, body)) => {
                    println!("HTTP {status}");
                    println!("{}", String::from_utf8_lossy(&body));
                    0
                }
                Err(Some(e)) => {
                    eprintln!("hookgate send: {e}");
                    1
                }
                Err(None) => 1,
            }
        }
    }
}

/// Loads the config or prints every problem; `Err` is the exit code.
fn load(file: &Path) -> Result<Config, i32> {
    config::load(file).map_err(|e| {
        eprintln!("{e}");
        1
    })
}

fn read_body(source: &str) -> Result<Vec<u8>, String> {
    if source == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading stdin: {e}"))?;
        Ok(buf)
    } else {
        std::fs::read(source).map_err(|e| format!("reading {source}: {e}"))
    }
}

/// The header lines `route` expects for `body`, signed now.
pub fn signed_headers(
    c: &Config,
    route: &str,
    key: Option<&str>,
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let r = c
        .gateway
        .route_order
        .iter()
        .find(|r| &*r.name == route)
        .ok_or_else(|| format!("no route named {route:?} in {}", c.source.display()))?;
    let scheme = r
        .signature
        .as_ref()
        .ok_or_else(|| format!("route {route:?} has no signature"))?;
    scheme.sign(body, SystemTime::now(), key)
}

fn serves_self_signed(c: &Config) -> bool {
    c.listeners
        .iter()
        .any(|l| matches!(l.tls, Some(ListenerTls::SelfSigned)))
}

/// POSTs `body` with `headers` to `url` over Pingora's client; returns status and body.
fn send(
    url: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    insecure: bool,
) -> Result<(u16, Bytes), String> {
    use pingora_core::connectors::http::v1::Connector;
    use pingora_core::connectors::ConnectorOptions;
    use pingora_core::upstreams::peer::HttpPeer;
    use std::net::ToSocketAddrs;

    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
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
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
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
        "POST",
        uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes(),
        None,
    )
    .map_err(|e| e.to_string())?;
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let set = |req: &mut pingora_http::RequestHeader, n: String, v: String| {
        req.insert_header(n, v).map_err(|e| e.to_string())
    };
    set(&mut req, "Host".into(), authority)?;
    set(&mut req, "Content-Type".into(), "application/json".into())?;
    set(&mut req, "Content-Length".into(), body.len().to_string())?;
    set(
        &mut req,
        "User-Agent".into(),
        format!("hookgate-send/{}", env!("CARGO_PKG_VERSION")),
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
