//! `nats://` (and `tls://`, `nats+tls://`): a JetStream publish to the destination's subject,
//! delivered when the stream acknowledges it. `Nats-Msg-Id` is the delivery id, so a publish
//! retried within the stream's duplicate window is stored once.

use super::connection::Connection;
use super::{Message, Publisher};
use crate::exchange::ExchangeError;
use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use async_trait::async_trait;
use std::time::Duration;

pub struct Nats {
    url: String,
    subject: String,
    /// `delivery.timeout`: how long a publish waits for the stream's ack.
    timeout: Duration,
    connection: Connection<jetstream::Context>,
}

impl Nats {
    pub fn new(url: &str, subject: &str, timeout: Duration) -> Self {
        // async-nats knows TLS as `tls://`; `nats+tls://` is the same.
        let url = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("nats+tls") => {
                format!("tls://{rest}")
            }
            _ => url.to_string(),
        };
        Self {
            url,
            subject: subject.to_string(),
            timeout,
            connection: Connection::new(),
        }
    }
}

#[async_trait]
impl Publisher for Nats {
    async fn publish(&self, message: &Message) -> Result<(), ExchangeError> {
        let context = self
            .connection
            .get(|| async {
                // The client reconnects by itself once connected; only the first connect is ours.
                let client = async_nats::ConnectOptions::new()
                    .connect(self.url.as_str())
                    .await
                    .map_err(|e| ExchangeError::Connect(e.to_string()))?;
                Ok(jetstream::ContextBuilder::new()
                    .timeout(self.timeout)
                    .build(client))
            })
            .await?;
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in &message.headers {
            headers.append(name.as_str(), value.as_str());
        }
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message.id.as_str());
        let ack = context
            .publish_with_headers(self.subject.clone(), headers, message.body.clone())
            .await
            .map_err(|e| ExchangeError::Io(e.to_string()))?;
        match ack.await {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.kind() {
                PublishErrorKind::TimedOut => ExchangeError::Timeout(self.timeout),
                PublishErrorKind::BrokenPipe => ExchangeError::Io(e.to_string()),
                // No stream listens on the subject, or the stream refused the message.
                _ => ExchangeError::Refused(e.to_string()),
            }),
        }
    }
}
