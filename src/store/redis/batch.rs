//! A serving thread's Redis commands, sent as pipelines: the commands of the requests that run on
//! the thread at about the same time go out in one write, and Redis reads them in one read.
//!
//! redis-rs's connection writes whenever its driver task runs, and tokio runs a task woken by the
//! running one next (its LIFO slot), so each command went out in a `writev` of its own. The batch
//! task yields once before it collects: every request that is ready to run on the thread queues
//! its command first. The pipeline is sent from a task of its own, so a batch never waits for the
//! answers to the one before.

use redis::aio::MultiplexedConnection;
use redis::{Cmd, RedisError, Value};
use tokio::sync::{mpsc, oneshot};

/// At most this many commands in one pipeline.
const MAX_BATCH: usize = 256;

/// Where a connection's commands queue for its batch task, which ends when every clone is gone.
#[derive(Clone)]
pub struct Batch {
    queue: mpsc::UnboundedSender<Queued>,
}

struct Queued {
    cmd: Cmd,
    reply: oneshot::Sender<Result<Value, Failed>>,
}

/// The pipeline a command was in got no answer.
#[derive(Debug, Clone)]
pub struct Failed {
    /// The connection is gone (rather than Redis refusing the command).
    pub dropped: bool,
    pub message: String,
}

impl Batch {
    /// Starts the batch task for `conn` on the current runtime.
    pub fn start(conn: MultiplexedConnection) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(collect(conn, queued));
        Self { queue }
    }

    /// Sends `cmd` with the next pipeline. An error Redis answered this command with comes back
    /// as `Value::ServerError`.
    pub async fn send(&self, cmd: Cmd) -> Result<Value, Failed> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Queued { cmd, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Failed {
    /// The failure `e` is: a dropped connection or another.
    pub fn of(e: &RedisError) -> Self {
        Failed {
            dropped: is_dropped(e),
            message: e.to_string(),
        }
    }
}

fn stopped() -> Failed {
    Failed {
        dropped: true,
        message: "the Redis connection's batch task stopped".into(),
    }
}

async fn collect(conn: MultiplexedConnection, mut queued: mpsc::UnboundedReceiver<Queued>) {
    while let Some(first) = queued.recv().await {
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        let mut replies = Vec::with_capacity(batch.len());
        for Queued { cmd, reply } in batch {
            pipe.add_command(cmd);
            replies.push(reply);
        }
        tokio::spawn(send(conn.clone(), pipe, replies));
    }
}

async fn send(
    mut conn: MultiplexedConnection,
    pipe: redis::Pipeline,
    replies: Vec<oneshot::Sender<Result<Value, Failed>>>,
) {
    let answers = match conn.send_packed_commands(&pipe, 0, replies.len()).await {
        Ok(values) if values.len() == replies.len() => values,
        Ok(values) => {
            let message = format!(
                "Redis answered {} commands with {} replies",
                replies.len(),
                values.len()
            );
            let dropped = true;
            return fail(replies, Failed { dropped, message });
        }
        Err(e) => return fail(replies, Failed::of(&e)),
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(Ok(answer));
    }
}

fn fail(replies: Vec<oneshot::Sender<Result<Value, Failed>>>, failed: Failed) {
    for reply in replies {
        let _ = reply.send(Err(failed.clone()));
    }
}

/// Whether `e` says the connection is gone (rather than Redis refusing the command).
pub fn is_dropped(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error() || e.is_timeout() || e.is_connection_refusal()
}
