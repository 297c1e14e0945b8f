//! Redis connections per serving thread. A command on one shared connection is handed to that
//! connection's thread and its answer handed back: two thread wake-ups per command. A
//! connection made on the serving thread's runtime writes the command and reads the answer on
//! the thread that serves the request.
//!
//! Every thread's connection dies with a Redis restart, but each finds out only when it is next
//! used. So the connections share one epoch: the first command that finds its connection
//! dropped moves the epoch on, and every thread makes a new connection before its next command
//! instead of failing one request on its dead one.

use super::super::StoreError;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;

/// How long a thread whose connection attempt failed answers unavailable before trying again,
/// so that a Redis that is down costs a connection attempt per thread per pause, not per request.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

pub struct ThreadConnections {
    client: redis::Client,
    config: AsyncConnectionConfig,
    epoch: AtomicU64,
    local: ThreadLocal<RefCell<Local>>,
}

#[derive(Default)]
struct Local {
    conn: Option<(u64, MultiplexedConnection)>,
    failed_at: Option<Instant>,
}

/// A connection and the epoch it was made in, to report it dropped.
pub struct Connection {
    pub epoch: u64,
    pub conn: MultiplexedConnection,
}

impl ThreadConnections {
    pub fn new(client: redis::Client, timeout: Duration) -> Self {
        Self {
            client,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout),
            epoch: AtomicU64::new(0),
            local: ThreadLocal::new(),
        }
    }

    /// This thread's connection of the current epoch, made now (its driver on this thread's
    /// runtime) if it has none.
    pub async fn get(&self) -> Result<Connection, StoreError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        {
            let local = self.local.get_or_default().borrow();
            if let Some((e, conn)) = &local.conn {
                if *e == epoch {
                    return Ok(Connection {
                        epoch,
                        conn: conn.clone(),
                    });
                }
            }
            if local
                .failed_at
                .is_some_and(|at| at.elapsed() < RECONNECT_PAUSE)
            {
                return Err(StoreError::Unavailable(
                    "Redis did not answer a moment ago".into(),
                ));
            }
        }
        let made = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await;
        // The task may have moved to another thread while connecting: the connection is kept
        // by the thread it is on now, which is where it is used next.
        let mut local = self.local.get_or_default().borrow_mut();
        match made {
            Ok(conn) => {
                local.conn = Some((epoch, conn.clone()));
                local.failed_at = None;
                Ok(Connection { epoch, conn })
            }
            Err(e) => {
                local.failed_at = Some(Instant::now());
                Err(StoreError::Unavailable(e.to_string()))
            }
        }
    }

    /// A command on a connection of `epoch` found it dropped: every thread's connection of that
    /// epoch is made again before its next command. Several threads noticing at once move the
    /// epoch once, so connections made since are kept.
    pub fn dropped(&self, epoch: u64) {
        let _ = self
            .epoch
            .compare_exchange(epoch, epoch + 1, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Whether `e` says the connection is gone (rather than Redis refusing the command).
pub fn is_dropped(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error() || e.is_timeout() || e.is_connection_refusal()
}
