//! The shared store for replicas: one Redis, one round trip per step, owner-checked by Lua.
//!
//! Commands go out on the serving thread's own connection (`connections`); the readiness probe
//! uses one shared connection that reconnects by itself.
//!
//! Records are `<prefix>:<route>:<key hex>` holding either `c:<token>` (a claim, `PX lease`) or
//! `d` (delivered, `PX ttl`). Complete and release compare the caller's token first, so a gateway
//! whose lease ran out can never delete or overwrite another gateway's claim.

mod connections;

use super::{Claim, ClaimToken, Store, StoreError};
use crate::pipeline::DeliveryKey;
use async_trait::async_trait;
use connections::{is_dropped, ThreadConnections};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation};
use std::sync::{Arc, OnceLock};
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
    /// Set once the first connection succeeds; until then every operation is unavailable.
    conn: Arc<OnceLock<ConnectionManager>>,
    threads: ThreadConnections,
    prefix: String,
    claim: Script,
    complete: Script,
    release: Script,
}

/// How often a store that was down at start is tried again.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// A connection attempt's and a command's limit.
const TIMEOUT: Duration = Duration::from_secs(2);

impl RedisStore {
    /// Connects on a runtime of its own that lives as long as the process, so the connection's
    /// driver outlives any one Pingora service runtime. A Redis that does not answer yet does
    /// not stop the gateway (PRODUCT.md §7): operations fail as unavailable, and the connection
    /// is tried again every second until it succeeds. From then on that connection serves the
    /// readiness probe (and reconnects by itself), and commands go out on each serving thread's
    /// own connection.
    pub fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(500);
        let conn = Arc::new(OnceLock::new());
        let (first_try, tried) = std::sync::mpsc::channel();
        let slot = conn.clone();
        let threads = ThreadConnections::new(client.clone(), TIMEOUT);
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
                        tracing::error!(error = %e, "cannot start the Redis runtime");
                        let _ = first_try.send(());
                        return;
                    }
                };
                rt.block_on(async move {
                    loop {
                        match ConnectionManager::new_with_config(client.clone(), config.clone())
                            .await
                        {
                            Ok(c) => {
                                let _ = slot.set(c);
                                let _ = first_try.send(());
                                break;
                            }
                            Err(e) => {
                                let _ = first_try.send(());
                                tracing::warn!(error = %e, "Redis does not answer; trying again");
                                tokio::time::sleep(RECONNECT_EVERY).await;
                            }
                        }
                    }
                    std::future::pending::<()>().await;
                });
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the Redis thread: {e}")))?;
        let _ = tried.recv();
        Ok(Self {
            conn,
            threads,
            prefix: prefix.to_string(),
            claim: Script::new(CLAIM),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
        })
    }

    /// The shared connection, once the first connection to Redis succeeded.
    fn connection(&self) -> Result<&ConnectionManager, StoreError> {
        self.conn
            .get()
            .ok_or_else(|| StoreError::Unavailable("not connected to Redis yet".into()))
    }

    fn redis_key(&self, key: &DeliveryKey) -> String {
        format!("{}:{}:{}", self.prefix, key.scope, key.hex())
    }

    /// Runs a script on this thread's connection. A connection found dropped is made again
    /// (on every thread) before the next command; with `once_more`, for a script that may
    /// safely run twice (complete, release: owner-checked), this one is also sent again on the
    /// new connection. A failed complete would leave a delivered key claimed until its lease
    /// ran out. A claim is not resent: one whose answer was lost may have claimed the key.
    async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        once_more: bool,
    ) -> Result<T, StoreError> {
        self.connection()?;
        let mut c = self.threads.get().await?;
        match invocation.invoke_async(&mut c.conn).await {
            Ok(v) => Ok(v),
            Err(e) if is_dropped(&e) => {
                self.threads.dropped(c.epoch);
                if !once_more {
                    return Err(StoreError::Unavailable(e.to_string()));
                }
                let mut c = self.threads.get().await?;
                invocation
                    .invoke_async(&mut c.conn)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))
            }
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
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
        let mut invocation = self.claim.key(self.redis_key(key));
        invocation.arg(claim_value(token)).arg(millis(lease));
        let (state, pttl): (String, i64) = self.invoke(&invocation, false).await?;
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
        let mut invocation = self.complete.key(self.redis_key(key));
        invocation.arg(claim_value(token)).arg(millis(ttl));
        self.invoke::<i64>(&invocation, true).await.map(|_| ())
    }

    async fn release(&self, key: &DeliveryKey, token: ClaimToken) -> Result<(), StoreError> {
        let mut invocation = self.release.key(self.redis_key(key));
        invocation.arg(claim_value(token));
        self.invoke::<i64>(&invocation, true).await.map(|_| ())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection()?.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
