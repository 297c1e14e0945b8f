//! `redis://` and `rediss://`: XADD to the destination's stream, trimmed to about `max_len`
//! entries when set. The entry's fields are `body` (the exact bytes) and `headers` (a JSON
//! object). Delivered when Redis answers the entry's id.

use super::connection::Connection;
use super::{Message, Publisher};
use crate::exchange::ExchangeError;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub struct RedisStream {
    url: String,
    stream: String,
    max_len: Option<u64>,
    connection: Connection<ConnectionManager>,
}

impl RedisStream {
    pub fn new(url: &str, stream: &str, max_len: Option<u64>) -> Self {
        Self {
            url: url.to_string(),
            stream: stream.to_string(),
            max_len,
            connection: Connection::new(),
        }
    }
}

#[async_trait]
impl Publisher for RedisStream {
    async fn publish(&self, message: &Message) -> Result<(), ExchangeError> {
        let mut conn = self
            .connection
            .get(|| async {
                let client = redis::Client::open(self.url.as_str())
                    .map_err(|e| ExchangeError::Connect(e.to_string()))?;
                // The manager reconnects by itself once connected. Its first connect is tried
                // once: a refused or untrusted Redis fails the attempt as `unavailable` at once,
                // and `Connection` spaces the next tries, rather than the manager retrying for
                // seconds until the attempt times out.
                let config = ConnectionManagerConfig::new().set_number_of_retries(1);
                client
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(|e| ExchangeError::Connect(e.to_string()))
            })
            .await?;
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.stream);
        if let Some(n) = self.max_len {
            xadd.arg("MAXLEN").arg("~").arg(n);
        }
        xadd.arg("*")
            .arg("body")
            .arg(message.body.as_ref())
            .arg("headers")
            .arg(message.headers_json());
        let added: Result<String, redis::RedisError> = xadd.query_async(&mut conn).await;
        match added {
            Ok(_) => Ok(()),
            Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                Err(ExchangeError::Io(e.to_string()))
            }
            Err(e) => Err(ExchangeError::Refused(e.to_string())),
        }
    }
}
