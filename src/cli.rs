//! The command line (PRODUCT.md §1): `run`, `check`, `sign`, `send`, `deliveries`.

mod deliveries;
mod http;

use crate::config::{self, Config, ListenerTls};
use crate::logging::{self, LogFormat};
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
    /// The delivery log of queue routes, through the admin API (token from HOOKGATE_ADMIN_TOKEN).
    Deliveries(deliveries::Args),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Run { .. });
    // Held until the command returns, so that every buffered log line is written before exit.
    let _log = logging::init(cli.log_format, serving);
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
                for route in &c.policy.route_order {
                    println!("{route}");
                }
                for w in &c.warnings {
                    eprintln!("warning: {w}");
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
                http::request("POST", &url, headers, body, insecure).map_err(Some)
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
        Command::Deliveries(args) => deliveries::run(args),
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
        .policy
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
