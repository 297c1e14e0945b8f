//! Kafka destinations (PRODUCT.md §9) against a real Kafka-protocol broker: a private `tansu`
//! (installed by `scripts/setup.sh --tests`) on a port of the test's own, read back with a Kafka
//! client here. A queued delivery is one record with the exact body, the headers of §6 plus
//! hookgate's own, its key, on the partition Kafka's own producers pick for that key.

use crate::brokers::{
    assert_hookgate_headers, attempts_fail_while_down, broker_route, metric_reaches, queue_one,
    unique, TlsFront,
};
use crate::harness::*;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::RecordAndOffset;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

struct PrivateKafka {
    port: u16,
    /// The port the broker names in its metadata, where clients connect: its own, or a TLS
    /// front's before it.
    advertised: u16,
    child: Option<Child>,
}

impl PrivateKafka {
    fn start() -> Self {
        let port = free_port();
        Self::start_advertising(port, port)
    }

    /// A broker reached only over TLS: a TLS front (socat, with `cert` and `key`) on the
    /// advertised port. tansu 0.6's own `--cert` and `--key` cannot be given together.
    fn start_behind_tls(cert: &Path, key: &Path) -> (Self, TlsFront) {
        let (port, front) = (free_port(), free_port());
        let kafka = Self::start_advertising(port, front);
        (kafka, TlsFront::start_on(front, cert, key, port))
    }

    fn start_advertising(port: u16, advertised: u16) -> Self {
        let mut k = Self {
            port,
            advertised,
            child: None,
        };
        k.run();
        k
    }

    fn run(&mut self) {
        let child = Command::new(tansu())
            .arg("broker")
            .arg(format!("--listener-url=tcp://127.0.0.1:{}", self.port))
            .arg(format!(
                "--advertised-listener-url=tcp://localhost:{}",
                self.advertised
            ))
            .arg("--storage-engine=memory://tansu/")
            .arg("--silent")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu (scripts/setup.sh --tests installs it)");
        self.child = Some(child);
        assert!(
            listening_within(self.port, Duration::from_secs(10)),
            "the private tansu broker did not start on {}",
            self.port
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn client(&self) -> Client {
        ClientBuilder::new(vec![format!("127.0.0.1:{}", self.port)])
            .build()
            .await
            .expect("a Kafka client connects to the private broker")
    }

    async fn create_topic(&self, name: &str, partitions: i32) {
        let client = self.client().await;
        client
            .controller_client()
            .unwrap()
            .create_topic(name, partitions, 1, 5_000)
            .await
            .expect("the topic is created");
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tansu() -> PathBuf {
    let installed = Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/tansu");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("tansu")
    }
}

async fn partition(client: &Client, topic: &str, id: i32) -> PartitionClient {
    client
        .partition_client(topic, id, UnknownTopicHandling::Retry)
        .await
        .unwrap()
}

/// Every record of `topic`'s partitions, by partition.
async fn records(client: &Client, topic: &str, partitions: i32) -> Vec<Vec<RecordAndOffset>> {
    let mut all = Vec::new();
    for id in 0..partitions {
        let (records, _) = partition(client, topic, id)
            .await
            .fetch_records(0, 1..1_000_000, 1_000)
            .await
            .unwrap();
        all.push(records);
    }
    all
}

/// Polls until the topic holds `want` records in all, then returns them by partition.
async fn records_once(
    client: &Client,
    topic: &str,
    partitions: i32,
    want: usize,
) -> Vec<Vec<RecordAndOffset>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = records(client, topic, partitions).await;
        let n: usize = got.iter().map(Vec::len).sum();
        if n >= want || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn header(r: &RecordAndOffset, name: &str) -> Option<String> {
    r.record
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

fn kafka_destinations(port: u16, topic: &str) -> String {
    format!(
        "      - name: by-job\n        url: \"kafka://127.0.0.1:{port}\"\n        topic: {topic}\n        key: /job_id\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_delivery_is_one_kafka_record_keyed_on_the_partition_kafka_picks() {
    let kafka = PrivateKafka::start();
    let (keyed, by_default) = (unique("jobs-"), unique("jobs-"));
    kafka.create_topic(&keyed, 4).await;
    kafka.create_topic(&by_default, 1).await;
    let gw = Gateway::start(&broker_route(
        &format!(
            "{}      - name: plain\n        url: \"kafka://127.0.0.1:{}\"\n        topic: {by_default}\n",
            kafka_destinations(kafka.port, &keyed),
            kafka.port
        ),
        "[200ms, 200ms, 200ms]",
    ))
    .await;
    // Kafka's murmur2 of "foobar" is -790332482: made positive, 1357151166, which is 2 mod 4.
    let body = delivery("job.completed", "foobar");
    let id = queue_one(&gw, &body).await;

    let client = kafka.client().await;
    let by_partition = records_once(&client, &keyed, 4, 1).await;
    let counts: Vec<usize> = by_partition.iter().map(Vec::len).collect();
    assert_eq!(
        counts,
        [0, 0, 1, 0],
        "one record, on the partition of its key"
    );
    let r = &by_partition[2][0];
    assert_eq!(r.record.value.as_deref(), Some(&body[..]), "the exact body");
    assert_eq!(r.record.key.as_deref(), Some(&b"foobar"[..]));
    assert_hookgate_headers(|n| header(r, n), &id);

    // Without `key`, the record's key is the delivery's idempotency key, as the log shows it.
    let plain = records_once(&client, &by_default, 1, 1).await;
    assert_eq!(plain[0].len(), 1);
    let detail = json_once(&gw.admin_url(&format!("/api/deliveries/{id}")), None, |d| {
        d["state"] == "delivered"
    })
    .await;
    assert_eq!(detail["state"], "delivered", "{detail}");
    let key = detail["key"]
        .as_str()
        .expect("the route has an idempotency key");
    assert_eq!(plain[0][0].record.key.as_deref(), Some(key.as_bytes()));
    assert_eq!(detail["attempts"][0]["status"], serde_json::Value::Null);
    assert_eq!(
        gw.metric(
            "hookgate_delivery_attempts_total",
            &[("destination", "by-job"), ("result", "ack")]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_the_cluster_lacks_is_a_failed_attempt_until_it_exists() {
    let kafka = PrivateKafka::start();
    let topic = unique("later-");
    let gw = Gateway::start(&broker_route(
        &kafka_destinations(kafka.port, &topic),
        "[300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms]",
    ))
    .await;
    let id = queue_one(&gw, &delivery("job.completed", "x1")).await;
    metric_reaches(
        &gw,
        &[(
            "hookgate_delivery_attempts_total",
            &[("destination", "by-job"), ("result", "nack")],
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
    assert!(
        detail["destinations"][0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("no topic"),
        "{detail}"
    );

    kafka.create_topic(&topic, 1).await;
    let client = kafka.client().await;
    let got = records_once(&client, &topic, 1, 1).await;
    assert_eq!(got[0].len(), 1, "a retry delivers it once the topic exists");
    assert_eq!(
        header(&got[0][0], "Hookgate-Delivery-Id").as_deref(),
        Some(id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_wait_for_a_kafka_broker_that_is_down_while_an_app_of_the_route_gets_them() {
    let mut kafka = PrivateKafka::start();
    let topic = unique("outage-");
    let app = Upstream::start().await;
    let gw = Gateway::start(&broker_route(
        &format!(
            "      - name: app\n        url: \"{}\"\n{}",
            app.url(),
            kafka_destinations(kafka.port, &topic)
        ),
        "[200ms, 400ms, 800ms, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s]",
    ))
    .await;
    kafka.stop();

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(queue_one(&gw, &delivery("job.completed", &format!("o{i}"))).await);
    }
    eventually("the app has every delivery while Kafka is down", || {
        app.count() == 5
    })
    .await;
    attempts_fail_while_down(&gw, "by-job", 5.0).await;

    // The broker keeps its topics in memory: it comes back empty, and the topic is made again.
    kafka.run();
    kafka.create_topic(&topic, 1).await;
    let client = kafka.client().await;
    let got = records_once(&client, &topic, 1, 5).await;
    let mut arrived: Vec<String> = got[0]
        .iter()
        .filter_map(|r| header(r, "Hookgate-Delivery-Id"))
        .collect();
    arrived.sort();
    arrived.dedup();
    ids.sort();
    assert_eq!(
        arrived, ids,
        "every delivery in the topic after the broker is back"
    );
}

/// `kafka+tls://` produces over TLS when the gateway trusts the broker's certificate
/// (`SSL_CERT_FILE`), and produces nothing when it does not.
#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_tls_destination_produces_over_tls_and_checks_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert_for(dir.path(), "localhost", "DNS:localhost");
    let (kafka, _front) = PrivateKafka::start_behind_tls(&cert, &key);
    let topic = unique("tls-");
    let tls_client = ClientBuilder::new(vec![format!("localhost:{}", kafka.advertised)])
        .tls_config(Arc::new(trusting(&cert)))
        .build()
        .await
        .expect("the test's client connects over TLS");
    tls_client
        .controller_client()
        .unwrap()
        .create_topic(&topic, 1, 1, 5_000)
        .await
        .unwrap();
    let route = broker_route(
        &format!(
            "      - name: by-job\n        url: \"kafka+tls://localhost:{}\"\n        topic: {topic}\n",
            kafka.advertised
        ),
        "[200ms, 200ms, 200ms, 200ms, 200ms]",
    );
    let trusting_gw =
        Gateway::start_with_env(&route, &[("SSL_CERT_FILE", cert.to_str().unwrap())]).await;
    let id = queue_one(&trusting_gw, &delivery("job.completed", "t1")).await;
    let got = records_once(&tls_client, &topic, 1, 1).await;
    assert_eq!(got[0].len(), 1, "one record over TLS");
    assert_eq!(
        header(&got[0][0], "Hookgate-Delivery-Id").as_deref(),
        Some(id.as_str())
    );
    drop(trusting_gw);

    let doubting = Gateway::start(&route).await;
    crate::brokers::attempts_fail_untrusted(&doubting, "by-job").await;
    let got = records(&tls_client, &topic, 1).await;
    assert_eq!(
        got[0].len(),
        1,
        "nothing produced to a broker it does not trust"
    );
}

fn trusting(cert: &Path) -> rustls::ClientConfig {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(cert).unwrap();
    for c in rustls_pemfile_certs(&pem) {
        roots.add(c).unwrap();
    }
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Nothing accepted is lost across kill -9 with a Kafka destination (PRODUCT.md §9): every
/// accepted delivery is in the topic at least once afterwards. (A produce the kill cut off after
/// the broker stored it is produced again: Kafka consumers dedupe on `Hookgate-Delivery-Id`.)
#[tokio::test(flavor = "multi_thread")]
async fn nothing_accepted_is_lost_across_kill_9_with_a_kafka_destination() {
    let kafka = PrivateKafka::start();
    let topic = unique("kill-");
    kafka.create_topic(&topic, 2).await;
    let mut gw = Gateway::start(&broker_route(
        &kafka_destinations(kafka.port, &topic),
        "[100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms]",
    ))
    .await;
    let (accepted, cut) = accepted_across_kill_9(&mut gw, "/webhooks/q", 4, 400).await;
    assert!(accepted.len() >= 40, "only {} accepted", accepted.len());
    assert!(cut > 0, "no kill landed while deliveries streamed in");

    let client = kafka.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ids: std::collections::HashSet<String> = records(&client, &topic, 2)
            .await
            .iter()
            .flatten()
            .filter_map(|r| header(r, "Hookgate-Delivery-Id"))
            .collect();
        let missing = accepted.iter().filter(|id| !ids.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing} of {} accepted deliveries not in the topic",
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
