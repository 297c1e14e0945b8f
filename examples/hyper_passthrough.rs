//! The prototype of issue #32's second target: hyper's HTTP/1 codec serving the streams that
//! Pingora's listener accepts and hands to a `ServerApp`, with Pingora still the server (its
//! listeners, runtime and upgrade). No checks, like `examples/passthrough.rs`, so the two compare
//! Pingora's HTTP/1 session against hyper's on the same listener and runtime.
//! `cargo run --release --example hyper_passthrough -- 127.0.0.1:6191 127.0.0.1:5000 [threads]`
//!
//! Each sender's connection gets one connection to the app, opened at its first request and
//! reused for the requests after it (HTTP/1 keep-alive sends one request at a time). Pingora's
//! passthrough takes its app connections from a shared pool instead; under a fixed number of
//! keep-alive senders both open each app connection once.

use async_trait::async_trait;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::listening::Service;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Mutex;

struct HyperPassthrough {
    upstream: SocketAddr,
}

/// The app connection of one sender's connection, opened when first needed.
type AppConnection = Arc<Mutex<Option<SendRequest<Incoming>>>>;

async fn connect(upstream: SocketAddr) -> Result<SendRequest<Incoming>, String> {
    let tcp = tokio::net::TcpStream::connect(upstream)
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn forward(
    upstream: SocketAddr,
    app: AppConnection,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, String> {
    let mut slot = app.lock().await;
    let reusable = match slot.as_mut() {
        Some(sender) => sender.ready().await.is_ok(),
        None => false,
    };
    if !reusable {
        *slot = Some(connect(upstream).await?);
    }
    let sender = slot.as_mut().ok_or("no app connection")?;
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

#[async_trait]
impl ServerApp for HyperPassthrough {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let upstream = self.upstream;
        let app: AppConnection = Arc::default();
        let service = hyper::service::service_fn(move |request| {
            let app = app.clone();
            async move {
                let answer = forward(upstream, app, request).await;
                if let Err(e) = &answer {
                    eprintln!("hyper_passthrough: {e}");
                }
                answer
            }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
        if let Err(e) = served {
            if !e.is_incomplete_message() {
                eprintln!("hyper_passthrough: {e}");
            }
        }
        None
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:6191".into());
    let upstream = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:5000".into())
        .parse()
        .expect("the app's address is host:port");
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut service = Service::new("hyper passthrough".into(), HyperPassthrough { upstream });
    service.add_tcp(&listen);
    service.threads = Some(threads);
    server.add_service(service);
    server.run_forever();
}
