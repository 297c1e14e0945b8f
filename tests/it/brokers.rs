//! Broker destinations (PRODUCT.md §9): a queued delivery arrives as one message with the exact
//! body bytes and the headers of §6 plus hookgate's own, read back by a consumer here; a broker
//! that refuses or is down is a failed attempt with the normal retries, never a lost delivery.
//! Each test uses names of its own on the machine's NATS, RabbitMQ and Redis, or a private
//! nats-server it can stop.

use crate::harness::*;
use async_nats::jetstream;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A queue route `q` on `/webhooks/q` with the given destination list items (YAML, indented by
/// six spaces), on a file store.
pub(crate) fn broker_route(destinations: &str, retry: &str) -> String {
    format!(
        r#"store:
  url: "file:state.db"
routes:
  - name: q
    path: /webhooks/q
    mode: queue
    https_only: false
    upstreams:
{destinations}    signature: {{ scheme: imggo, secrets: ["{SECRET}"] }}
    schema: SCHEMA
    events: {{ pointer: /event, allow: [job.completed, job.failed] }}
    idempotency: {{ key: ["/event", "/job_id"] }}
    delivery:
      timeout: 2s
      retry: {retry}
      jitter: 0%
"#
    )
}

pub(crate) async fn queue_one(gw: &Gateway, body: &[u8]) -> String {
    let (status, code, json) = answer(post_signed(&gw.http_url("/webhooks/q"), body).await).await;
    assert_eq!((status, code.as_str()), (200, "queued"), "{json}");
    json["delivery_id"].as_str().unwrap().to_string()
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// The headers every broker message carries (§9), checked on a name → value lookup.
pub(crate) fn assert_hookgate_headers(get: impl Fn(&str) -> Option<String>, id: &str) {
    assert_eq!(get("Hookgate-Delivery-Id").as_deref(), Some(id));
    assert_eq!(get("Hookgate-Attempt").as_deref(), Some("1"));
    assert_eq!(get("Hookgate-Route").as_deref(), Some("q"));
    assert_eq!(get("Hookgate-Event").as_deref(), Some("job.completed"));
    // The sender's headers keep the case it sent them in (reqwest sends lower case).
    assert!(
        get("x-imggo-signature").is_some(),
        "the consumer can verify it"
    );
    assert_eq!(get("X-Forwarded-For").as_deref(), Some("127.0.0.1"));
    assert!(get("traceparent").is_some());
}

// ---------------------------------------------------------------- NATS JetStream

async fn jetstream_on(port: u16) -> jetstream::Context {
    let client = async_nats::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    jetstream::new(client)
}

async fn create_stream(js: &jetstream::Context, name: &str, subject: &str) {
    js.create_stream(jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec![subject.to_string()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn stream_messages(
    js: &jetstream::Context,
    name: &str,
) -> Vec<jetstream::message::StreamMessage> {
    let stream = js.get_stream(name).await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push(m);
        }
    }
    out
}

#[tokio::test]
async fn a_queued_delivery_is_one_jetstream_message_with_its_id_as_nats_msg_id() {
    let js = jetstream_on(4222).await;
    let (name, subject) = (unique("HG"), unique("hookgate.it."));
    create_stream(&js, &name, &subject).await;
    let gw = Gateway::start(&broker_route(
        &format!(
            "      - name: stream\n        url: \"nats://127.0.0.1:4222\"\n        subject: {subject}\n"
        ),
        "[100ms, 200ms]",
    ))
    .await;
    let body = delivery("job.completed", "n1");
    let id = queue_one(&gw, &body).await;

    let mut messages = Vec::new();
    for _ in 0..100 {
        messages = stream_messages(&js, &name).await;
        if !messages.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.payload.as_ref(), body.as_slice(), "the exact body bytes");
    assert_eq!(
        m.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(id.as_str())
    );
    assert_hookgate_headers(|n| m.headers.get(n).map(|v| v.as_str().to_string()), &id);
    metric_reaches(
        &gw,
        &[(
            "hookgate_deliveries_total",
            &[("destination", "stream"), ("outcome", "delivered")],
        )],
        1.0,
    )
    .await;
    assert_eq!(
        gw.metric(
            "hookgate_delivery_attempts_total",
            &[("destination", "stream"), ("result", "ack")]
        )
        .await,
        1.0,
        "a broker's ack is counted as result=\"ack\""
    );
    let url = gw.admin_url(&format!("/api/deliveries/{id}"));
    let detail = json_once(&url, None, |d| d["state"] == "delivered").await;
    assert_eq!(detail["state"], "delivered", "{detail}");
    assert_eq!(detail["attempts"][0]["status"], serde_json::Value::Null);
    js.delete_stream(&name).await.unwrap();
}

/// A broker that is down: `destination`'s attempts fail (`unavailable` or `timeout`, `attempts`
/// of them at least) and, held down for longer than several retry delays, nothing goes dead.
pub(crate) async fn attempts_fail_while_down(gw: &Gateway, destination: &str, attempts: f64) {
    metric_reaches(
        gw,
        &[
            (
                "hookgate_delivery_attempts_total",
                &[("destination", destination), ("result", "unavailable")],
            ),
            (
                "hookgate_delivery_attempts_total",
                &[("destination", destination), ("result", "timeout")],
            ),
        ],
        attempts,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        gw.metric(
            "hookgate_deliveries_total",
            &[("destination", destination), ("outcome", "dead")]
        )
        .await,
        0.0
    );
}

pub(crate) type Series<'a> = (&'a str, &'a [(&'a str, &'a str)]);

/// Polls until the sum of `series` is at least `want`.
pub(crate) async fn metric_reaches(gw: &Gateway, series: &[Series<'_>], want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut got = 0.0;
        for (name, labels) in series {
            got += gw.metric(name, labels).await;
        }
        if got >= want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series:?} is {got}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A nats-server with JetStream of this test's own, on its own port and store directory, so it
/// can be stopped and started again with its streams kept.
struct PrivateNats {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Server options beyond JetStream, the address and the port (TLS).
    options: Vec<String>,
}

impl PrivateNats {
    fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// A server that speaks only TLS, with `cert` and `key`.
    fn start_tls(cert: &Path, key: &Path) -> Self {
        Self::start_with(vec![
            "--tls".into(),
            "--tlscert".into(),
            cert.display().to_string(),
            "--tlskey".into(),
            key.display().to_string(),
        ])
    }

    fn start_with(options: Vec<String>) -> Self {
        let mut n = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            options,
        };
        n.run();
        n
    }

    fn run(&mut self) {
        let child = Command::new(nats_server())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path())
            .args(&self.options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs");
        self.child = Some(child);
        assert!(
            listening_within(self.port, Duration::from_secs(5)),
            "the private nats-server did not start"
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nats_server() -> &'static str {
    if Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    }
}

#[tokio::test]
async fn deliveries_wait_for_a_broker_that_is_down_while_an_app_of_the_route_gets_them_on_time() {
    let mut nats = PrivateNats::start();
    let js = jetstream_on(nats.port).await;
    create_stream(&js, "OUTAGE", "outage.jobs").await;
    drop(js);
    let app = Upstream::start().await;
    let gw = Gateway::start(&broker_route(
        &format!(
            "      - name: app\n        url: \"{}\"\n      - name: stream\n        url: \"nats://127.0.0.1:{}\"\n        subject: outage.jobs\n",
            app.url(),
            nats.port
        ),
        "[200ms, 400ms, 800ms, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s]",
    ))
    .await;
    nats.stop();

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(queue_one(&gw, &delivery("job.completed", &format!("o{i}"))).await);
    }
    eventually(
        "the app has every delivery while the broker is down",
        || app.count() == 5,
    )
    .await;
    attempts_fail_while_down(&gw, "stream", 5.0).await;

    nats.run();
    let js = jetstream_on(nats.port).await;
    let mut messages = Vec::new();
    for _ in 0..300 {
        messages = stream_messages(&js, "OUTAGE").await;
        if messages.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut got: Vec<String> = messages
        .iter()
        .filter_map(|m| m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string()))
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(
        got, ids,
        "every delivery once in the stream after it is back"
    );
}

// ---------------------------------------------------------------- RabbitMQ

async fn rabbit() -> lapin::Channel {
    let conn = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = conn.create_channel().await.unwrap();
    // The connection lives as long as the channel's test.
    std::mem::forget(conn);
    channel
}

async fn declare_exchange(channel: &lapin::Channel, name: &str) {
    channel
        .exchange_declare(
            name.into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

async fn bind_queue(channel: &lapin::Channel, exchange: &str, key: &str) -> String {
    let queue = unique("hookgate-it-q-");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    queue
}

async fn get_one(channel: &lapin::Channel, queue: &str) -> lapin::message::Delivery {
    for _ in 0..200 {
        if let Some(m) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            return m.delivery;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no message in {queue}");
}

fn amqp_header(d: &lapin::message::Delivery, name: &str) -> Option<String> {
    let headers = d.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        other => Some(format!("{other:?}")),
    }
}

#[tokio::test]
async fn a_queued_delivery_is_one_persistent_amqp_message_with_its_id() {
    let channel = rabbit().await;
    let exchange = unique("hookgate-it-x-");
    declare_exchange(&channel, &exchange).await;
    let queue = bind_queue(&channel, &exchange, "jobs").await;
    let gw = Gateway::start(&broker_route(
        &format!(
            "      - name: rabbit\n        url: \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n        exchange: {exchange}\n        routing_key: jobs\n"
        ),
        "[100ms, 200ms]",
    ))
    .await;
    let body = delivery("job.completed", "a1");
    let id = queue_one(&gw, &body).await;
    let m = get_one(&channel, &queue).await;
    assert_eq!(m.data, body, "the exact body bytes");
    assert_eq!(
        m.properties.message_id().as_ref().map(|s| s.as_str()),
        Some(id.as_str())
    );
    assert_eq!(*m.properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        m.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json"),
        "the sender's Content-Type"
    );
    assert_hookgate_headers(|n| amqp_header(&m, n), &id);
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}

/// A TLS front for the machine's RabbitMQ (socat, on a port of its own, with `cert`): the shared
/// broker has no TLS listener, and this test must not reconfigure it.
pub(crate) struct TlsFront {
    pub(crate) port: u16,
    child: Child,
}

impl TlsFront {
    pub(crate) fn start(cert: &Path, key: &Path, to: u16) -> Self {
        Self::start_on(free_port(), cert, key, to)
    }

    pub(crate) fn start_on(port: u16, cert: &Path, key: &Path, to: u16) -> Self {
        let mut child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
                cert.display(),
                key.display()
            ))
            .arg(format!("TCP:127.0.0.1:{to}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (scripts/setup.sh installs it)");
        if listening_within(port, Duration::from_secs(5)) {
            return Self { port, child };
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("socat did not listen on {port}");
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `amqps://` destination (PRODUCT.md §9: TLS to brokers) publishes over TLS when the gateway
/// trusts the broker's certificate (`SSL_CERT_FILE`), and publishes nothing when it does not.
#[tokio::test(flavor = "multi_thread")]
async fn an_amqps_destination_publishes_over_tls_and_checks_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "rabbit");
    // A certificate for localhost: the destination names the host as the certificate does.
    let front = TlsFront::start(&cert, &key, 5672);
    let channel = rabbit().await;
    let exchange = unique("hookgate-it-x-");
    declare_exchange(&channel, &exchange).await;
    let queue = bind_queue(&channel, &exchange, "jobs").await;
    let cfg = broker_route(
        &format!(
            "      - name: rabbit\n        url: \"amqps://guest:guest@localhost:{}/%2f\"\n        exchange: {exchange}\n        routing_key: jobs\n",
            front.port
        ),
        "[100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms]",
    );
    let cert = cert.display().to_string();
    let trusting = Gateway::start_with_env(&cfg, &[("SSL_CERT_FILE", &cert)]).await;
    let body = delivery("job.completed", "amqps1");
    let id = queue_one(&trusting, &body).await;
    let m = get_one(&channel, &queue).await;
    assert_eq!(m.data, body, "the exact body bytes");
    assert_eq!(
        m.properties.message_id().as_ref().map(|s| s.as_str()),
        Some(id.as_str())
    );

    attempts_fail_untrusted(&Gateway::start(&cfg).await, "rabbit").await;
    let left = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(
        left.is_none(),
        "nothing published without a trusted certificate"
    );
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unroutable_amqp_message_is_a_failed_attempt_not_a_silent_drop() {
    let channel = rabbit().await;
    let exchange = unique("hookgate-it-x-");
    declare_exchange(&channel, &exchange).await;
    let gw = Gateway::start(&broker_route(
        &format!(
            "      - name: rabbit\n        url: \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n        exchange: {exchange}\n        routing_key: nowhere\n"
        ),
        "[300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms]",
    ))
    .await;
    let id = queue_one(&gw, &delivery("job.completed", "u1")).await;
    metric_reaches(
        &gw,
        &[(
            "hookgate_delivery_attempts_total",
            &[("destination", "rabbit"), ("result", "nack")],
        )],
        1.0,
    )
    .await;
    let url = gw.admin_url(&format!("/api/deliveries/{id}"));
    let detail = json_once(&url, None, |d| {
        d["destinations"][0]["last_error"].is_string()
    })
    .await;
    assert_eq!(detail["state"], "pending", "{detail}");
    let error = detail["destinations"][0]["last_error"]
        .as_str()
        .unwrap_or("");
    assert!(error.contains("unroutable"), "{detail}");
    assert_eq!(
        detail["destinations"][0]["last_status"],
        serde_json::Value::Null
    );

    // Once a queue is bound, a retry delivers it.
    let queue = bind_queue(&channel, &exchange, "nowhere").await;
    let m = get_one(&channel, &queue).await;
    assert_eq!(
        m.properties.message_id().as_ref().map(|s| s.as_str()),
        Some(id.as_str())
    );
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}

// ---------------------------------------------------------------- Redis streams

/// An XRANGE entry: its id and its fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

#[tokio::test]
async fn a_queued_delivery_is_one_redis_stream_entry_with_body_and_headers() {
    require_shared_redis();
    let stream = unique("hookgate-it-stream-");
    let gw = Gateway::start(&broker_route(
        &format!(
            "      - name: events\n        url: \"redis://127.0.0.1:6379\"\n        stream: {stream}\n        max_len: 1000\n"
        ),
        "[100ms, 200ms]",
    ))
    .await;
    let body = delivery("job.completed", "r1");
    let id = queue_one(&gw, &body).await;

    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut entries: Vec<StreamEntry> = Vec::new();
    for _ in 0..100 {
        let reply: redis::Value = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        entries = redis::from_redis_value(&reply).unwrap();
        if !entries.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(entries.len(), 1);
    let fields = &entries[0].1;
    let field = |n: &str| {
        fields
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no field {n}"))
    };
    assert_eq!(field("body"), body, "the exact body bytes");
    let headers: serde_json::Value = serde_json::from_slice(&field("headers")).unwrap();
    assert_hookgate_headers(|n| headers[n].as_str().map(str::to_string), &id);
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// A gateway that does not trust the broker's certificate: a delivery it queues is attempted
/// and fails as `unavailable`, again and again, and never counts as delivered.
pub(crate) async fn attempts_fail_untrusted(doubting: &Gateway, destination: &str) {
    queue_one(doubting, &delivery("job.completed", "untrusted")).await;
    let refused = [("destination", destination), ("result", "unavailable")];
    metric_reaches(
        doubting,
        &[("hookgate_delivery_attempts_total", &refused)],
        2.0,
    )
    .await;
    let delivered = [("destination", destination), ("outcome", "delivered")];
    assert_eq!(
        doubting
            .metric("hookgate_deliveries_total", &delivered)
            .await,
        0.0
    );
}

/// A `rediss://` destination (PRODUCT.md §9: TLS to brokers) reaches a Redis that speaks only
/// TLS when the gateway trusts its certificate, and a gateway that does not trust it publishes
/// nothing there: the attempt fails as `unavailable` and the delivery waits.
#[tokio::test(flavor = "multi_thread")]
async fn a_rediss_stream_destination_publishes_over_tls_and_checks_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "redis");
    let port = free_port();
    let _redis = PrivateRedis::start_tls_on(port, &cert, &key);
    let cert = cert.display().to_string();
    let xlen = || {
        let out = Command::new("redis-cli")
            .args([
                "--tls",
                "--cacert",
                &cert,
                "-p",
                &port.to_string(),
                "XLEN",
                "tls-jobs",
            ])
            .output()
            .expect("redis-cli (scripts/setup.sh)");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let cfg = broker_route(
        &format!(
            "      - name: events\n        url: \"rediss://127.0.0.1:{port}\"\n        stream: tls-jobs\n"
        ),
        "[100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms]",
    );
    let trusting = Gateway::start_with_env(&cfg, &[("SSL_CERT_FILE", &cert)]).await;
    queue_one(&trusting, &delivery("job.completed", "tls1")).await;
    let delivered = [("destination", "events"), ("outcome", "delivered")];
    metric_reaches(&trusting, &[("hookgate_deliveries_total", &delivered)], 1.0).await;
    assert_eq!(xlen(), "1");

    attempts_fail_untrusted(&Gateway::start(&cfg).await, "events").await;
    assert_eq!(
        xlen(),
        "1",
        "nothing published without a trusted certificate"
    );
}

/// `tls://` and `nats+tls://` destinations (PRODUCT.md §9: TLS to brokers) reach a nats-server
/// that speaks only TLS when the gateway trusts its certificate; a gateway that does not trust
/// it publishes nothing: its attempts fail as `unavailable` and the delivery waits.
#[tokio::test(flavor = "multi_thread")]
async fn a_nats_tls_destination_publishes_over_tls_and_checks_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "nats");
    let nats = PrivateNats::start_tls(&cert, &key);
    // This test's own NATS client takes the process's provider, as hookgate's main does.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(cert.clone())
        .require_tls(true)
        .connect(format!("tls://127.0.0.1:{}", nats.port))
        .await
        .unwrap();
    let js = jetstream::new(client);
    let (name, subject) = (unique("HGTLS"), unique("hookgate.tls."));
    create_stream(&js, &name, &subject).await;
    let route = |scheme: &str| {
        broker_route(
            &format!(
                "      - name: stream\n        url: \"{scheme}://127.0.0.1:{}\"\n        subject: {subject}\n",
                nats.port
            ),
            "[100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms]",
        )
    };
    let cert = cert.display().to_string();
    let delivered = [("destination", "stream"), ("outcome", "delivered")];
    for (i, scheme) in ["tls", "nats+tls"].into_iter().enumerate() {
        let trusting = Gateway::start_with_env(&route(scheme), &[("SSL_CERT_FILE", &cert)]).await;
        let id = queue_one(&trusting, &delivery("job.completed", &format!("ntls{i}"))).await;
        metric_reaches(&trusting, &[("hookgate_deliveries_total", &delivered)], 1.0).await;
        let messages = stream_messages(&js, &name).await;
        assert_eq!(messages.len(), i + 1, "{scheme}");
        let last = messages.last().unwrap();
        assert_eq!(
            last.headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_string()),
            Some(id)
        );
    }

    attempts_fail_untrusted(&Gateway::start(&route("tls")).await, "stream").await;
    assert_eq!(
        stream_messages(&js, &name).await.len(),
        2,
        "nothing published without a trusted certificate"
    );
}

// ---------------------------------------------------------------- check

#[test]
fn check_names_each_bad_broker_destination_by_field() {
    let text = r#"listen: [{ addr: "127.0.0.1:18080" }]
store: { url: "file:state.db" }
routes:
  - name: q
    path: /q
    mode: queue
    upstreams:
      - { name: n, url: "nats://127.0.0.1:4222" }
      - { name: a, url: "amqp://127.0.0.1:5672" }
      - { name: r, url: "redis://127.0.0.1:6379" }
      - { name: k, url: "kafka://127.0.0.1:9092", key: job_id }
      - { name: l, url: "kafka://app:pw@127.0.0.1:9092", topic: t }
      - { name: w, url: "redis://127.0.0.1:6379", stream: s, subject: x }
      - { name: c, url: "http://127.0.0.1:5000", when: "body.a >" }
      - { name: f, url: "ftp://127.0.0.1:21" }
  - name: fwd
    path: /fwd
    upstream: "nats://127.0.0.1:4222"
"#;
    let (code, err) = check_config(text);
    assert_eq!(code, Some(1));
    for expected in [
        "routes[q].upstreams[0].subject: a nats destination needs a subject",
        "routes[q].upstreams[1].exchange: an amqp destination needs an exchange",
        "routes[q].upstreams[2].stream: a redis destination needs a stream",
        "routes[q].upstreams[3].topic: a kafka destination needs a topic",
        "routes[q].upstreams[3].key: \"job_id\" is not a JSON pointer",
        "routes[q].upstreams[4].url: SASL credentials are not supported",
        "routes[q].upstreams[5].subject: a redis destination has no subject",
        "routes[q].upstreams[6].when: \"body.a >\" is not a CEL expression",
        "routes[q].upstreams[7].url:",
        "routes[fwd].upstream: nats:// is a broker destination: queue routes only",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

/// Nothing accepted is lost across kill -9 with a broker destination either (PRODUCT.md §9): the
/// gateway is killed four times while deliveries stream in and messages are being published;
/// afterwards every accepted delivery is in the stream, once (a publish the kill cut off is
/// sent again with the same `Nats-Msg-Id`, which JetStream's duplicate window drops).
#[tokio::test]
async fn nothing_accepted_is_lost_across_kill_9_with_a_jetstream_destination() {
    let js = jetstream_on(4222).await;
    let (name, subject) = (unique("HGKILL"), unique("hookgate.kill."));
    create_stream(&js, &name, &subject).await;
    let mut gw = Gateway::start(&broker_route(
        &format!(
            "      - name: stream\n        url: \"nats://127.0.0.1:4222\"\n        subject: {subject}\n"
        ),
        "[100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms]",
    ))
    .await;
    let (accepted, cut) = accepted_across_kill_9(&mut gw, "/webhooks/q", 4, 400).await;
    assert!(accepted.len() >= 40, "only {} accepted", accepted.len());
    assert!(cut > 0, "no kill landed while deliveries streamed in");

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let in_stream = loop {
        let ids: Vec<String> = stream_messages(&js, &name)
            .await
            .iter()
            .filter_map(|m| m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string()))
            .collect();
        if accepted.iter().all(|id| ids.contains(id)) {
            break ids;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} accepted deliveries in the stream",
            accepted.iter().filter(|id| ids.contains(id)).count(),
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let distinct: std::collections::HashSet<_> = in_stream.iter().collect();
    assert_eq!(
        distinct.len(),
        in_stream.len(),
        "a delivery is in the stream twice"
    );
    js.delete_stream(&name).await.unwrap();
}
