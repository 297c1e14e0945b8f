//! Broker destinations of queue routes (PRODUCT.md §9): one message per delivery attempt,
//! delivered when the broker acknowledges it.
//!
//! Each kind is one file implementing [`Publisher`]; [`publisher`] is the one place a kind is
//! chosen. A publisher holds one connection, made on first use and made again after it fails,
//! with a backoff between tries so a broker that is down costs an attempt a fast failure rather
//! than a connect timeout each. Every failure is an [`ExchangeError`], like an HTTP exchange's.

mod amqp;
mod connection;
mod kafka;
mod nats;
mod redis_stream;

use crate::config::{Broker, BrokerKind};
use crate::exchange::ExchangeError;
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// One delivery attempt as a broker message.
pub struct Message {
    /// The delivery's id (`dlv_…`): the message id brokers dedupe on.
    pub id: String,
    /// The delivery's idempotency key (hex), where its route has one.
    pub key: Option<String>,
    /// The headers of PRODUCT.md §6 and hookgate's own, in order.
    pub headers: Vec<(String, String)>,
    /// The exact body bytes the sender signed.
    pub body: Bytes,
}

impl Message {
    /// The first value of header `name`, matched without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The headers as one JSON object (Redis streams carry them so); a name seen twice keeps
    /// its values joined by ", ", as HTTP would read them.
    pub fn headers_json(&self) -> String {
        let mut map = serde_json::Map::new();
        for (name, value) in &self.headers {
            match map.get_mut(name) {
                Some(serde_json::Value::String(v)) => {
                    v.push_str(", ");
                    v.push_str(value);
                }
                _ => {
                    map.insert(name.clone(), serde_json::Value::String(value.clone()));
                }
            }
        }
        serde_json::Value::Object(map).to_string()
    }
}

/// Parses stored header lines (`Name: value\r\n` each) into pairs.
pub fn header_pairs(wire: &[u8]) -> Vec<(String, String)> {
    wire.split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
            let value = String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .to_string();
            (!name.is_empty()).then_some((name, value))
        })
        .collect()
}

#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes `message` and waits for the broker's acknowledgement. The caller bounds it by
    /// `delivery.timeout`.
    async fn publish(&self, message: &Message) -> Result<(), ExchangeError>;
}

/// The publisher for `broker`, waiting up to `timeout` for an ack. Connects lazily: building
/// one costs nothing.
pub fn publisher(broker: &Broker, timeout: Duration) -> Arc<dyn Publisher> {
    match &broker.kind {
        BrokerKind::Nats { subject } => Arc::new(nats::Nats::new(&broker.url, subject, timeout)),
        BrokerKind::Amqp {
            exchange,
            routing_key,
        } => Arc::new(amqp::Amqp::new(&broker.url, exchange, routing_key)),
        BrokerKind::RedisStream { stream, max_len } => Arc::new(redis_stream::RedisStream::new(
            &broker.url,
            stream,
            *max_len,
        )),
        BrokerKind::Kafka {
            brokers,
            tls,
            topic,
            key,
        } => Arc::new(kafka::Kafka::new(
            brokers,
            *tls,
            topic,
            key.as_deref(),
            timeout,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_header_lines_become_pairs_in_order() {
        let pairs = header_pairs(b"Host: app\r\nX-Sig: a:b\r\nX-Empty:\r\n");
        assert_eq!(
            pairs,
            [
                ("Host".to_string(), "app".to_string()),
                ("X-Sig".to_string(), "a:b".to_string()),
                ("X-Empty".to_string(), String::new()),
            ]
        );
    }

    #[test]
    fn repeated_headers_join_in_the_json_object() {
        let m = Message {
            id: "dlv_1".into(),
            key: None,
            headers: vec![
                ("A".into(), "1".into()),
                ("A".into(), "2".into()),
                ("B".into(), "x\"y".into()),
            ],
            body: Bytes::new(),
        };
        let v: serde_json::Value = serde_json::from_str(&m.headers_json()).unwrap();
        assert_eq!(v, serde_json::json!({"A": "1, 2", "B": "x\"y"}));
    }
}
