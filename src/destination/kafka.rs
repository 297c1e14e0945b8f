//! `kafka://` (and `kafka+tls://`): a produce to the destination's topic with `acks=all`,
//! delivered when the partition's in-sync replicas all have the record.
//!
//! The record's key is the value at the destination's `key` pointer, else the delivery's
//! idempotency key, else none. The partition is the one Kafka's own producers pick for that key
//! (murmur2 of the key), so one key's records land on one partition, in order, whichever client
//! wrote them; a record without a key goes by its delivery id, so its retries land together.

use super::connection::Connection;
use super::{Message, Publisher};
use crate::exchange::ExchangeError;
use async_trait::async_trait;
use rskafka::client::error::Error as KafkaError;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use rskafka::BackoffConfig;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub struct Kafka {
    brokers: Vec<String>,
    tls: bool,
    topic: String,
    /// A JSON pointer into the body: the record's key.
    key: Option<String>,
    /// `delivery.timeout`: half of it bounds the client's own retries.
    timeout: Duration,
    connection: Connection<Arc<Topic>>,
}

/// The topic's partitions as the cluster's metadata listed them at connect.
struct Topic {
    partitions: Vec<PartitionClient>,
}

impl Kafka {
    pub fn new(
        brokers: &[String],
        tls: bool,
        topic: &str,
        key: Option<&str>,
        timeout: Duration,
    ) -> Self {
        Self {
            brokers: brokers.to_vec(),
            tls,
            topic: topic.to_string(),
            key: key.map(str::to_string),
            timeout,
            connection: Connection::new(),
        }
    }

    async fn connect(&self) -> Result<Arc<Topic>, ExchangeError> {
        // The client retries a request with backoff until this deadline, so a leader that
        // moves is followed within the attempt, and a broker that refuses fails the attempt as
        // `unavailable` before `delivery.timeout` ends it as a `timeout`.
        let backoff = BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(self.timeout / 2),
        };
        let mut builder = ClientBuilder::new(self.brokers.clone())
            .client_id("hookgate")
            .backoff_config(backoff);
        if self.tls {
            builder = builder.tls_config(Arc::new(tls_config()?));
        }
        let client = builder.build().await.map_err(connect_error)?;
        let topics = client.list_topics().await.map_err(connect_error)?;
        let Some(topic) = topics.into_iter().find(|t| t.name == self.topic) else {
            return Err(ExchangeError::Refused(format!(
                "the cluster has no topic {:?}",
                self.topic
            )));
        };
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        // Partition ids run 0..n; the partitioner indexes them so.
        for id in 0..topic.partitions.len() as i32 {
            partitions.push(
                client
                    .partition_client(self.topic.clone(), id, UnknownTopicHandling::Error)
                    .await
                    .map_err(connect_error)?,
            );
        }
        if partitions.is_empty() {
            return Err(ExchangeError::Refused(format!(
                "topic {:?} has no partitions",
                self.topic
            )));
        }
        Ok(Arc::new(Topic { partitions }))
    }

    /// The record's key: the body's value at `key` (as `order_by` reads one), else the
    /// idempotency key.
    fn record_key(&self, message: &Message) -> Option<Vec<u8>> {
        let at_pointer = self.key.as_deref().and_then(|pointer| {
            let body: serde_json::Value = serde_json::from_slice(&message.body).ok()?;
            body.pointer(pointer)
                .filter(|v| !v.is_null())
                .map(crate::pipeline::key_text)
        });
        at_pointer
            .or_else(|| message.key.clone())
            .map(String::into_bytes)
    }
}

/// Kafka's default partitioner for a keyed record: the positive murmur2 of the key, modulo the
/// partition count.
fn partition_for(key: &[u8], partitions: usize) -> usize {
    (murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff) as usize % partitions
}

fn tls_config() -> Result<rustls::ClientConfig, ExchangeError> {
    let roots = crate::tls_roots::system_roots()
        .map_err(|why| ExchangeError::Tls(format!("the system's CA roots: {why}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ExchangeError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn connect_error(e: KafkaError) -> ExchangeError {
    match e {
        KafkaError::ServerError { .. } => ExchangeError::Refused(e.to_string()),
        KafkaError::Timeout => ExchangeError::Connect("timed out".into()),
        e => ExchangeError::Connect(e.to_string()),
    }
}

#[async_trait]
impl Publisher for Kafka {
    async fn publish(&self, message: &Message) -> Result<(), ExchangeError> {
        let topic = self.connection.get(|| self.connect()).await?;
        let key = self.record_key(message);
        let partition = partition_for(
            key.as_deref().unwrap_or(message.id.as_bytes()),
            topic.partitions.len(),
        );
        let mut headers = BTreeMap::<String, Vec<u8>>::new();
        for (name, value) in &message.headers {
            // A record header is a map entry: a name seen twice keeps its values joined by
            // ", ", as HTTP would read them.
            let joined = headers.entry(name.clone()).or_default();
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(value.as_bytes());
        }
        let record = Record {
            key,
            value: Some(message.body.to_vec()),
            headers,
            timestamp: chrono::DateTime::from_timestamp_millis(crate::store::queue::unix_ms(
                std::time::SystemTime::now(),
            ) as i64)
            .unwrap_or_default(),
        };
        let produced = topic.partitions[partition]
            .produce(vec![record], Compression::NoCompression)
            .await;
        match produced {
            Ok(_) => Ok(()),
            Err(e @ KafkaError::ServerError { .. }) => Err(ExchangeError::Refused(e.to_string())),
            Err(KafkaError::Timeout) => Err(ExchangeError::Timeout(self.timeout)),
            Err(e) => {
                // The partitions' leaders or the connection may have changed: list them again
                // on the next attempt.
                self.connection.reset().await;
                Err(ExchangeError::Io(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::partition_for;

    #[test]
    fn keys_land_on_the_partitions_kafkas_own_producer_picks() {
        // Kafka's Utils.murmur2 of these keys (its test vectors) made positive, modulo 1000.
        for (key, murmur2) in [
            ("21", -973932308i32),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            ("abc", 479470107),
        ] {
            let expected = (murmur2 & 0x7fff_ffff) as usize % 1000;
            assert_eq!(partition_for(key.as_bytes(), 1000), expected, "{key}");
        }
        assert_eq!(partition_for(b"anything", 1), 0);
    }
}
