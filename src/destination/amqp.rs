//! `amqp://` and `amqps://`: a persistent, mandatory publish to the destination's exchange with
//! its routing key, on a channel in confirm mode. Delivered when the broker confirms it; a nack,
//! or a message returned as unroutable (no queue bound), is a failed attempt, not a silent drop.

use super::connection::Connection;
use super::{Message, Publisher};
use crate::exchange::ExchangeError;
use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, ConnectionProperties};
use std::sync::Arc;

/// AMQP's delivery mode for a message the broker writes to disk.
const PERSISTENT: u8 = 2;

pub struct Amqp {
    url: String,
    exchange: String,
    routing_key: String,
    /// The connection with its one confirm-mode channel; confirms are matched per publish, so
    /// attempts share the channel.
    connection: Connection<Arc<(lapin::Connection, Channel)>>,
}

impl Amqp {
    pub fn new(url: &str, exchange: &str, routing_key: &str) -> Self {
        Self {
            url: url.to_string(),
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            connection: Connection::new(),
        }
    }
}

/// The broker refusing (an AMQP error: a missing exchange, an access refusal) is a refusal; the
/// rest (a broken connection, a closed channel) leaves the broker unreached.
fn failed(e: lapin::Error) -> ExchangeError {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(_) => ExchangeError::Refused(e.to_string()),
        _ => ExchangeError::Io(e.to_string()),
    }
}

#[async_trait]
impl Publisher for Amqp {
    async fn publish(&self, message: &Message) -> Result<(), ExchangeError> {
        let open = self
            .connection
            .get(|| async {
                let conn = lapin::Connection::connect(&self.url, ConnectionProperties::default())
                    .await
                    .map_err(|e| ExchangeError::Connect(e.to_string()))?;
                let channel = conn.create_channel().await.map_err(failed)?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(failed)?;
                Ok(Arc::new((conn, channel)))
            })
            .await?;
        let channel = &open.1;
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            headers.insert(
                ShortString::from(name.as_str()),
                AMQPValue::LongString(LongString::from(value.as_str())),
            );
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_message_id(ShortString::from(message.id.as_str()));
        if let Some(content_type) = message.header("content-type") {
            properties = properties.with_content_type(ShortString::from(content_type));
        }
        let properties = properties.with_headers(headers);
        let published = channel
            .basic_publish(
                ShortString::from(self.exchange.as_str()),
                ShortString::from(self.routing_key.as_str()),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                properties,
            )
            .await;
        let confirm = match published {
            Ok(c) => c.await,
            Err(e) => Err(e),
        };
        match confirm {
            Ok(Confirmation::Ack(None)) => Ok(()),
            Ok(Confirmation::Ack(Some(returned))) => Err(ExchangeError::Refused(format!(
                "returned unroutable: {} {}",
                returned.reply_code, returned.reply_text
            ))),
            Ok(Confirmation::Nack(_)) => Err(ExchangeError::Refused("nacked by the broker".into())),
            Ok(Confirmation::NotRequested) => {
                Err(ExchangeError::Refused("the broker did not confirm".into()))
            }
            Err(e) => {
                // A channel error (a missing exchange closes the channel) or a lost connection:
                // open both again on the next attempt.
                self.connection.reset().await;
                let _ = open.0.close(0, "reconnecting".into()).await;
                Err(failed(e))
            }
        }
    }
}
