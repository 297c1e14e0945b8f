//! The shared store for replicas: one Redis, one round trip per step, owner-checked by Lua.
//!
//! Commands go out on the serving thread's own connection (`connections`); the readiness probe
//! uses one shared connection that reconnects by itself.
//!
//! Records are `<prefix>:<route>:<key hex>` holding either `c:<token>` (a claim, `PX lease`) or
//! `d` (delivered, `PX ttl`). Complete and release compare the caller's token first, so a gateway
//! whose lease ran out can never delete or overwrite another gateway's claim.
//!
//! A claim is one plain `SET … NX PX … GET` (Redis 7.0 and later): Redis runs it in a fraction of
//! a script's time, and Redis shares the machine's cores with the gateways in front of it. The
//! rare claim that finds the key held by another gateway asks for its `PTTL` in a second step. A
//! Redis older than 7.0 refuses `NX` with `GET`; from the first refusal on, claims run as a script.

mod batch;
mod connections;

use super::{Claim, ClaimToken, Store, StoreError};
use crate::pipeline::DeliveryKey;
use crate::store::claim_wait;
use async_trait::async_trait;
use batch::Failed;
use connections::{Connection, ThreadConnections};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, RedisError, Script, ToRedisArgs, Value};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Set when Redis refused `SET` with both `NX` and `GET` (before 7.0): claims run `claim`.
    scripted_claims: AtomicBool,
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
            .map_err(|e| StoreError::setup(format!("invalid Redis URL: {e}")))?;
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
            .map_err(|e| StoreError::unavailable(format!("cannot start the Redis thread: {e}")))?;
        let _ = tried.recv();
        Ok(Self {
            conn,
            threads,
            prefix: prefix.to_string(),
            claim: Script::new(CLAIM),
            scripted_claims: AtomicBool::new(false),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
        })
    }

    /// The shared connection, once the first connection to Redis succeeded.
    fn connection(&self) -> Result<&ConnectionManager, StoreError> {
        self.conn
            .get()
            .ok_or_else(|| StoreError::unavailable("not connected to Redis yet"))
    }

    fn redis_key(&self, key: &DeliveryKey) -> String {
        format!("{}:{}:{}", self.prefix, key.scope, key.hex())
    }

    /// Sends a request on this thread's connection, in its next pipeline. A connection found
    /// dropped is made again (on every thread) before the next command; with `once_more`, for a
    /// request that may safely run twice (complete, release: owner-checked), this one is also
    /// sent again on the new connection. A failed complete would leave a delivered key claimed
    /// until its lease ran out. A claim is not resent: one whose answer was lost may have
    /// claimed the key.
    async fn send<T: FromRedisValue>(
        &self,
        request: &Request<'_>,
        once_more: bool,
    ) -> Result<T, SendError> {
        self.connection()?;
        let c = self.threads.get().await?;
        let answer = match request.send(&c).await {
            Err(failed) if failed.dropped => {
                self.threads.dropped(c.epoch);
                if !once_more {
                    return Err(StoreError::unavailable(failed.message).into());
                }
                let c = self.threads.get().await?;
                request.send(&c).await
            }
            answer => answer,
        };
        let value = answer.map_err(|failed| StoreError::unavailable(failed.message))?;
        match value.extract_error() {
            Ok(value) => T::from_owned_redis_value(value).map_err(|e| unavailable(e).into()),
            Err(refused) => Err(SendError::Refused(refused)),
        }
    }

    /// [`Self::send`], with a refused command counted as the store being unavailable.
    async fn invoke<T: FromRedisValue>(
        &self,
        request: &Request<'_>,
        once_more: bool,
    ) -> Result<T, StoreError> {
        self.send(request, once_more).await.map_err(|e| match e {
            SendError::Refused(e) => unavailable(e),
            SendError::Store(e) => e,
        })
    }

    /// The claim as one `SET NX PX GET`; `None` when Redis refused the command (before 7.0).
    async fn claim_by_set(
        &self,
        redis_key: &str,
        token: ClaimToken,
        lease: Duration,
    ) -> Option<Result<Claim, StoreError>> {
        let mut set = redis::cmd("SET");
        set.arg(redis_key)
            .arg(claim_value(token))
            .arg("NX")
            .arg("PX")
            .arg(millis(lease))
            .arg("GET");
        let held: Option<String> = match self.send(&Request::Command(set), false).await {
            Ok(held) => held,
            // Redis before 7.0 answers a syntax error. Other refusals (out of memory, a
            // read-only replica) say nothing about the command and would refuse the script too.
            Err(SendError::Refused(refused)) if refused.to_string().contains("syntax error") => {
                tracing::warn!(error = %refused, "Redis refused SET with NX and GET (it needs Redis 7.0); claiming with a script from now on");
                self.scripted_claims.store(true, Ordering::Relaxed);
                return None;
            }
            Err(SendError::Refused(refused)) => return Some(Err(unavailable(refused))),
            Err(SendError::Store(e)) => return Some(Err(e)),
        };
        Some(match held.as_deref() {
            None => Ok(Claim::Claimed(token)),
            Some("d") => Ok(Claim::Delivered),
            Some(_) => {
                let mut pttl = redis::cmd("PTTL");
                pttl.arg(redis_key);
                self.invoke::<i64>(&Request::Command(pttl), false)
                    .await
                    .map(in_flight)
            }
        })
    }
}

/// One step's request: a plain command, or a script's `EVALSHA` (the script is loaded into Redis
/// and the command sent again when Redis does not know it yet).
enum Request<'a> {
    Command(Cmd),
    Script(&'a Script, Cmd),
}

impl Request<'_> {
    /// `EVALSHA` of `script` on one key; the caller adds its arguments.
    fn script<'a>(script: &'a Script, key: String) -> Request<'a> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(1).arg(key);
        Request::Script(script, cmd)
    }

    fn arg(mut self, arg: impl ToRedisArgs) -> Self {
        match &mut self {
            Request::Command(cmd) | Request::Script(_, cmd) => {
                cmd.arg(arg);
            }
        }
        self
    }

    async fn send(&self, c: &Connection) -> Result<Value, Failed> {
        match self {
            Request::Command(cmd) => c.batch.send(cmd.clone()).await,
            Request::Script(script, cmd) => match c.batch.send(cmd.clone()).await? {
                Value::ServerError(e) if e.code() == "NOSCRIPT" => {
                    script
                        .load_async(&mut c.conn.clone())
                        .await
                        .map_err(|e| Failed::of(&e))?;
                    c.batch.send(cmd.clone()).await
                }
                answer => Ok(answer),
            },
        }
    }
}

/// Why a request failed: Redis answered it with an error, or the store could not be reached.
enum SendError {
    Refused(RedisError),
    Store(StoreError),
}

impl From<StoreError> for SendError {
    fn from(e: StoreError) -> Self {
        SendError::Store(e)
    }
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::unavailable(e.to_string())
}

/// Another gateway holds the key's claim, which runs out in `pttl` ms (below 0: already gone).
fn in_flight(pttl: i64) -> Claim {
    Claim::InFlight {
        retry_after: claim_wait(Some(pttl), 0),
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
        let redis_key = self.redis_key(key);
        if !self.scripted_claims.load(Ordering::Relaxed) {
            if let Some(claimed) = self.claim_by_set(&redis_key, token, lease).await {
                return claimed;
            }
        }
        let request = Request::script(&self.claim, redis_key)
            .arg(claim_value(token))
            .arg(millis(lease));
        let (state, pttl): (String, i64) = self.invoke(&request, false).await?;
        Ok(match state.as_str() {
            "claimed" => Claim::Claimed(token),
            "d" => Claim::Delivered,
            _ => in_flight(pttl),
        })
    }

    async fn complete(
        &self,
        key: &DeliveryKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let request = Request::script(&self.complete, self.redis_key(key))
            .arg(claim_value(token))
            .arg(millis(ttl));
        self.invoke::<i64>(&request, true).await.map(|_| ())
    }

    async fn release(&self, key: &DeliveryKey, token: ClaimToken) -> Result<(), StoreError> {
        let request = Request::script(&self.release, self.redis_key(key)).arg(claim_value(token));
        self.invoke::<i64>(&request, true).await.map(|_| ())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection()?.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::unavailable(e.to_string()))
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests;
