//! Redis connections per serving thread. A command on one shared connection is handed to that
//! connection's thread and its answer handed back: two thread wake-ups per command. A
//! connection made on the serving thread's runtime writes the command and reads the answer on
//! the thread that serves the request.
//!
//! Every thread's connection dies with a Redis restart. So the connections share one epoch,
//! moved on as soon as any of them is found gone: by its driver, which ends when Redis closes
//! the connection, or by a command that failed on it. Every thread then makes a new connection
//! before its next command instead of failing a request on its dead one (a claim that failed
//! is not sent again: it may have claimed the key).

use super::super::StoreError;
use super::batch::Batch;
use redis::aio::MultiplexedConnection;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;

/// How long a thread whose connection attempt failed answers unavailable before trying again,
/// so that a Redis that is down costs a connection attempt per thread per pause, not per request.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

pub struct ThreadConnections {
    client: redis::Client,
    /// A connection attempt's and a command's limit.
    timeout: Duration,
    epoch: Arc<AtomicU64>,
    local: ThreadLocal<RefCell<Local>>,
}

#[derive(Default)]
struct Local {
    conn: Option<Connection>,
    failed_at: Option<Instant>,
}

/// A connection, its batch task, and the epoch it was made in, to report it dropped.
#[derive(Clone)]
pub struct Connection {
    pub epoch: u64,
    pub conn: MultiplexedConnection,
    pub batch: Batch,
}

impl ThreadConnections {
    pub fn new(client: redis::Client, timeout: Duration) -> Self {
        Self {
            client,
            timeout,
            epoch: Arc::default(),
            local: ThreadLocal::new(),
        }
    }

    /// This thread's connection of the current epoch, made now (its driver on this thread's
    /// runtime) if it has none.
    pub async fn get(&self) -> Result<Connection, StoreError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        {
            let local = self.local.get_or_default().borrow();
            if let Some(conn) = local.conn.as_ref().filter(|c| c.epoch == epoch) {
                return Ok(conn.clone());
            }
            if local
                .failed_at
                .is_some_and(|at| at.elapsed() < RECONNECT_PAUSE)
            {
                return Err(StoreError::unavailable("Redis did not answer a moment ago"));
            }
        }
        let made = self.connect(epoch).await;
        // The task may have moved to another thread while connecting: the connection is kept
        // by the thread it is on now, which is where it is used next.
        let mut local = self.local.get_or_default().borrow_mut();
        match made {
            Ok(conn) => {
                let batch = Batch::start(conn.clone());
                let conn = Connection { epoch, conn, batch };
                local.conn = Some(conn.clone());
                local.failed_at = None;
                Ok(conn)
            }
            Err(e) => {
                local.failed_at = Some(Instant::now());
                Err(StoreError::unavailable(e))
            }
        }
    }

    /// A new connection, its driver on this thread's runtime. The driver ends when the
    /// connection is gone, and then moves the epoch on if the connection is of the current one.
    async fn connect(&self, epoch: u64) -> Result<MultiplexedConnection, String> {
        let connecting = self
            .client
            .create_multiplexed_tokio_connection_with_response_timeout(self.timeout);
        let (conn, driver) = tokio::time::timeout(self.timeout, connecting)
            .await
            .map_err(|_| "connecting to Redis timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let epochs = self.epoch.clone();
        tokio::spawn(async move {
            driver.await;
            let _ = epochs.compare_exchange(epoch, epoch + 1, Ordering::AcqRel, Ordering::Acquire);
        });
        Ok(conn)
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
