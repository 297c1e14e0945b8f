//! Pingora glue: builds the server from a validated [`Config`] and runs it. The request logic
//! lives in `gateway` (per request) and `crate::pipeline` (the checks, Pingora-free).

mod admin;
mod body;
pub mod forward;
mod gateway;
mod live;
mod pool;
mod reload;
mod tls;

pub use gateway::{GatewayApp, Shared};
use live::Live;

use crate::config::{Config, ListenerTls, StoreUrl};
use crate::metrics::Metrics;
use crate::store::{memory::MemoryStore, redis::RedisStore, Store};
use arc_swap::ArcSwap;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::connectors::TransportConnector;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::sync::Arc;

/// Opens the store the config names; Redis must answer now (never a silent fallback to memory).
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, String> {
    Ok(match &config.store.url {
        StoreUrl::Memory => Arc::new(MemoryStore::new(config.store.max_keys)),
        StoreUrl::Redis(url) => {
            let store = RedisStore::connect(url, &config.store.prefix)
                .map_err(|e| format!("store.url: {e}"))?;
            Arc::new(store)
        }
    })
}

/// Serves `config` until a shutdown signal; with `upgrade`, takes the listening sockets over from
/// the running process (Pingora's graceful upgrade) instead of binding them.
pub fn run(config: Config, upgrade: bool) -> Result<(), String> {
    let store = open_store(&config)?;
    let metrics = Arc::new(Metrics::new());
    let shared = Arc::new(Shared {
        live: ArcSwap::from_pointee(Live::new(config.gateway.clone(), &metrics)),
        store,
        on_error: config.store.on_error,
        metrics,
        connector: TransportConnector::new(None),
    });

    let grace = config.grace_period.as_secs_f64().ceil() as u64;
    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(grace.max(1)),
        upgrade_sock: config.upgrade_socket.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let mut webhooks = Service::new(
        "hookgate webhooks".to_string(),
        GatewayApp {
            shared: shared.clone(),
        },
    );
    for l in &config.listeners {
        match &l.tls {
            None => webhooks.add_tcp(&l.addr),
            Some(t) => {
                let (cert, key) = match t {
                    ListenerTls::Files { cert, key } => (cert.clone(), key.clone()),
                    ListenerTls::SelfSigned => {
                        let pair = tls::self_signed()?;
                        tracing::warn!(addr = %l.addr, "serving a self-signed certificate: for development only");
                        pair
                    }
                };
                let mut settings =
                    TlsSettings::intermediate(&cert.to_string_lossy(), &key.to_string_lossy())
                        .map_err(|e| format!("listen {}: TLS certificate or key: {e}", l.addr))?;
                settings.enable_h2();
                webhooks.add_tls_with_settings(&l.addr, None, settings);
            }
        }
        tracing::info!(addr = %l.addr, tls = l.tls.is_some(), "webhook listener");
    }
    webhooks.threads = Some(config.threads);
    server.add_service(webhooks);

    if let Some(addr) = config.admin {
        let mut admin = Service::new(
            "hookgate admin".to_string(),
            HttpServer::new_app(admin::Admin {
                shared: shared.clone(),
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
            shared: shared.clone(),
            file: config.source.clone(),
        },
    ));

    server.add_service(background_service(
        "upstream pool sweep",
        pool::Sweeper {
            shared: shared.clone(),
        },
    ));

    for route in &config.gateway.route_order {
        if route.signature.is_none() {
            tracing::warn!(route = %route.name, "route verifies no signature");
        }
    }
    tracing::info!(
        routes = config.gateway.route_order.len(),
        store = shared.store.kind(),
        "hookgate serving"
    );
    server.run_forever()
}
