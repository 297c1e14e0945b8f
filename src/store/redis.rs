//! The shared store for replicas: one Redis, one round trip per step, owner-checked by Lua.
//!
//! Records are `<prefix>:<route>:<key hex>` holding either `c:<token>` (a claim, `PX lease`) or
//! `d` (delivered, `PX ttl`). Complete and release compare the caller's token first, so a gateway
//! whose lease ran out can never delete or overwrite another gateway's claim.

use super::{Claim, ClaimToken, Store, StoreError};
use crate::pipeline::DeliveryKey;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use std::time::Duration;

const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return {v, redis.call('PTTL', KEYS[1])} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'claimed', 0}
";

const COMPLETE: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], 'd', 'PX', ARGV[2])
  return 1
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    claim: Script,
    complete: Script,
    release: Script,
}

impl RedisStore {
    /// Connects (failing clearly if Redis does not answer) on a runtime of its own that lives as
    /// long as the process, so the connection's driver outlives any one Pingora service runtime.
    pub fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError(format!("invalid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(1)
            .set_max_delay(500);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("hookgate-redis".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(StoreError(format!(
                            "cannot start the Redis runtime: {e}"
                        ))));
                        return;
                    }
                };
                rt.block_on(async move {
                    let conn = ConnectionManager::new_with_config(client, config)
                        .await
                        .map_err(|e| StoreError(format!("cannot connect to Redis: {e}")));
                    let ok = conn.is_ok();
                    let _ = tx.send(conn);
                    if ok {
                        std::future::pending::<()>().await;
                    }
                });
            })
            .map_err(|e| StoreError(format!("cannot start the Redis thread: {e}")))?;
        let conn = rx
            .recv()
            .map_err(|_| StoreError("the Redis thread ended".into()))??;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
            claim: Script::new(CLAIM),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
        })
    }

    fn redis_key(&self, key: &DeliveryKey) -> String {
        format!("{}:{}:{}", self.prefix, key.route, key.hex())
    }
}

fn claim_value(token: ClaimToken) -> String {
    format!("c:{:032x}", token.0)
}

fn millis(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

#[async_trait]
impl Store for RedisStore {
    async fn claim(&self, key: &DeliveryKey, lease: Duration) -> Result<Claim, StoreError> {
        let token = ClaimToken::random();
        let mut conn = self.conn.clone();
        let (state, pttl): (String, i64) = self
            .claim
            .key(self.redis_key(key))
            .arg(claim_value(token))
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(match state.as_str() {
            "claimed" => Claim::Claimed(token),
            "d" => Claim::Delivered,
            _ => Claim::InFlight {
                retry_after: Duration::from_millis(pttl.max(0) as u64),
            },
        })
    }

    async fn complete(
        &self,
        key: &DeliveryKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .complete
            .key(self.redis_key(key))
            .arg(claim_value(token))
            .arg(millis(ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(())
    }

    async fn release(&self, key: &DeliveryKey, token: ClaimToken) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .release
            .key(self.redis_key(key))
            .arg(claim_value(token))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| StoreError(e.to_string()))
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
