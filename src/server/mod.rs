//! Pingora glue: builds the server from a validated [`Config`] and runs it.
//!
//! How a request flows: `gateway` (session I/O, in the order of PRODUCT.md §3) runs the checks
//! of `crate::pipeline`, then hands a clean delivery to `delivery` (forward routes: claim,
//! `forward::exchange`, settle) or `enqueue` (queue routes: one durable write), and records the
//! outcome with `outcome`. The queue `worker` delivers stored deliveries over the same
//! `forward::exchange`. `admin` serves metrics, probes and the `delivery_log` API.

mod active;
mod admin;
mod body;
mod breaker;
mod budget;
mod certificate;
pub(crate) mod connections;
mod delivery;
mod delivery_log;
mod destination_state;
mod enqueue;
pub mod forward;
mod gateway;
mod handshake;
mod outcome;
mod pool;
mod reload;
mod runtime;
mod span_export;
mod sweeper;
mod tls;
mod ui_page;
mod worker;

pub use gateway::GatewayApp;
pub use runtime::Runtime;

use crate::config::{Config, ListenerTls, StoreEngine};
use crate::metrics::Metrics;
use crate::spans::SpanSink;
use crate::store::file::FileStore;
use crate::store::postgres::PostgresStore;
use crate::store::queue::Queue;
use crate::store::{memory::MemoryStore, redis::RedisStore, Store, StoreError};
use active::ActiveConfig;
use arc_swap::ArcSwap;
use breaker::Breakers;
use certificate::Certificate;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::connectors::TransportConnector;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::sync::Arc;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("store.url: {0}")]
    Store(#[from] StoreError),
    #[error("listen {addr}: TLS certificate or key: {source}")]
    Tls {
        addr: String,
        source: certificate::CertificateError,
    },
    #[error("listen {addr}: TLS settings: {source}")]
    TlsSettings { addr: String, source: rustls::Error },
    #[error("{0}")]
    DevCertificate(certificate::CertificateError),
    #[error("upgrade_socket directory {dir}: {message}")]
    UpgradeSocket { dir: String, message: String },
}

/// Makes the default upgrade socket's directory, private to this user (0700): Pingora creates
/// the socket itself, open to anyone who can reach it, and it hands over listening sockets.
/// An existing directory must be ours and closed to others.
fn private_upgrade_dir(socket: &std::path::Path) -> Result<(), RunError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let Some(dir) = socket.parent() else {
        return Ok(());
    };
    let fail = |message: String| RunError::UpgradeSocket {
        dir: dir.display().to_string(),
        message,
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| fail(e.to_string()))?;
    let me = std::fs::metadata("/proc/self")
        .map_err(|e| fail(e.to_string()))?
        .uid();
    if !meta.is_dir() || meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
        return Err(fail(format!(
            "must be a directory owned by uid {me} and closed to others (mode 0700); set upgrade_socket to choose another place"
        )));
    }
    Ok(())
}

/// What the configured store offers: idempotency keys always, the delivery queue where it is
/// durable.
pub struct Stores {
    pub keys: Arc<dyn Store>,
    pub queue: Option<Arc<dyn Queue>>,
}

/// The stores the config names. A Redis or Postgres that does not answer yet does not stop the
/// start (PRODUCT.md §7).
pub fn open_store(config: &Config) -> Result<Stores, StoreError> {
    let only_keys = |keys: Arc<dyn Store>| Stores { keys, queue: None };
    Ok(match &config.store.url {
        StoreEngine::Memory => only_keys(Arc::new(MemoryStore::new(config.store.max_keys))),
        StoreEngine::Redis(url) => {
            only_keys(Arc::new(RedisStore::connect(url, &config.store.prefix)?))
        }
        StoreEngine::File(path) => {
            let store = Arc::new(FileStore::open(path)?);
            Stores {
                keys: store.clone(),
                queue: Some(store),
            }
        }
        StoreEngine::Postgres(url) => {
            let store = Arc::new(PostgresStore::connect(url)?);
            Stores {
                keys: store.clone(),
                queue: Some(store),
            }
        }
    })
}

/// Serves `config` until a shutdown signal; with `upgrade`, takes the listening sockets over from
/// the running process (Pingora's graceful upgrade) instead of binding them.
pub fn run(config: Config, upgrade: bool) -> Result<(), RunError> {
    if config.upgrade_socket_default {
        private_upgrade_dir(&config.upgrade_socket)?;
    }
    let Stores { keys: store, queue } = open_store(&config)?;
    let metrics = Arc::new(Metrics::new());
    let (spans, span_queue) = SpanSink::new(metrics.spans_dropped.clone());
    let runtime = Arc::new(Runtime {
        active: ArcSwap::from_pointee(ActiveConfig::new(config.policy.clone(), &metrics)),
        store,
        queue: queue.clone(),
        on_error: config.store.on_error,
        breakers: Breakers::new(queue.clone(), metrics.clone()),
        metrics,
        budget: budget::BodyBudget::new(config.max_inflight_body),
        connector: TransportConnector::new(None),
        queue_wake: tokio::sync::Notify::new(),
        spans,
    });

    let grace = config.grace_period.as_secs_f64().ceil() as u64;
    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(grace.max(1)),
        upgrade_sock: config.upgrade_socket.to_string_lossy().into_owned(),
        // One thread has no one to steal from, and tokio's single-threaded scheduler then runs
        // tasks in the order they became ready, without the work-stealing one's LIFO slot and
        // atomics: 0.98x CPU and 0.93x p99 per new TLS connection, 0.93x CPU per keep-alive
        // request (docs/performance.md, "Session 17"). With more threads, stealing keeps a busy
        // sender's connections from piling up on one of them.
        work_stealing: config.threads > 1,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    if upgrade {
        // Operators (and the tests) send the old process SIGQUIT once this is logged.
        tracing::info!(socket = %config.upgrade_socket.display(), "waiting for the listening sockets of the running process");
    }
    server.bootstrap();

    // One service per listener, each with its own `max_connections` and `threads`.
    let app = Arc::new(GatewayApp {
        runtime: runtime.clone(),
    });
    // Certificates from files are re-read on SIGHUP; a dev certificate is made once.
    let mut certificates = Vec::new();
    for l in &config.listeners {
        let limit = connections::ConnectionLimit::new(&l.addr, config.max_connections);
        let tls = match &l.tls {
            None => None,
            Some(t) => {
                let (cert, key) = match t {
                    ListenerTls::Files { cert, key } => (cert.clone(), key.clone()),
                    ListenerTls::SelfSigned => {
                        let pair = tls::self_signed().map_err(RunError::DevCertificate)?;
                        tracing::warn!(addr = %l.addr, "serving a self-signed certificate: for development only");
                        pair
                    }
                };
                let certificate =
                    Certificate::load(&cert, &key).map_err(|source| RunError::Tls {
                        addr: l.addr.clone(),
                        source,
                    })?;
                let handshake =
                    handshake::Handshake::new(&certificate, runtime.clone()).map_err(|source| {
                        RunError::TlsSettings {
                            addr: l.addr.clone(),
                            source,
                        }
                    })?;
                if matches!(t, ListenerTls::Files { .. }) {
                    certificates.push(certificate);
                }
                Some(handshake)
            }
        };
        let mut webhooks = Service::new(
            format!("hookgate webhooks {}", l.addr),
            connections::Counted {
                app: app.clone(),
                limit: limit.clone(),
                tls,
            },
        );
        webhooks.set_connection_filter(Arc::new(connections::AcceptWhenFree(limit)));
        webhooks.add_tcp(&l.addr);
        webhooks.threads = Some(config.threads);
        server.add_service(webhooks);
        tracing::info!(addr = %l.addr, tls = l.tls.is_some(), max_connections = config.max_connections, "webhook listener");
    }

    if let Some(settings) = &config.admin {
        let addr = settings.addr;
        let mut admin = Service::new(
            "hookgate admin".to_string(),
            HttpServer::new_app(admin::Admin {
                runtime: runtime.clone(),
                token: settings.token.clone(),
                reported: Default::default(),
            }),
        );
        admin.add_tcp(&addr.to_string());
        admin.threads = Some(1);
        server.add_service(admin);
        tracing::info!(%addr, "admin listener");
    }

    server.add_service(background_service(
        "config reload",
        reload::Reloader {
            runtime: runtime.clone(),
            file: config.source.clone(),
            certificates,
        },
    ));

    server.add_service(background_service(
        "span export",
        span_export::SpanExport {
            runtime: runtime.clone(),
            queue: std::sync::Mutex::new(Some(span_queue)),
        },
    ));

    server.add_service(background_service(
        "upstream pool sweep",
        sweeper::Sweeper {
            runtime: runtime.clone(),
        },
    ));

    if let Some(queue) = queue {
        server.add_service(background_service(
            "queue worker",
            worker::Worker {
                runtime: runtime.clone(),
                queue,
                grace_period: config.grace_period,
            },
        ));
    }

    for route in &config.policy.route_order {
        if route.signature.is_none() {
            tracing::warn!(route = %route.name, "route verifies no signature");
        }
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        routes = config.policy.route_order.len(),
        store = runtime.store.kind(),
        "hookgate serving"
    );
    // `run` returns once every service stopped (where `run_forever` exits the process), so the
    // caller can write out what is left of the log before the process ends.
    server.run(pingora_core::server::RunArgs::default());
    tracing::info!("hookgate stopped");
    Ok(())
}
