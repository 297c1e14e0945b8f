//! Idle keep-alive connections to one route's app.
//!
//! Pingora's connector pool is shared by every peer and watches each idle connection with a task
//! of its own: a spawned task, a timer and a notifier per delivery, plus a `getpeername` per reuse.
//! A route talks to one app, so its pool is a plain stack (most recently used first, so the
//! connections in use stay warm) checked when a connection is taken: one that the app closed,
//! that holds unexpected bytes, or that idled past `IDLE_TIMEOUT` is dropped then. `super::sweeper`
//! closes those nobody takes every few seconds, so they do not linger half-closed.

use pingora_core::protocols::Stream;
use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// How long an idle connection is kept (nginx's `keepalive_timeout` default is 60 s too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per route; more than this are closed when returned.
const MAX_IDLE: usize = 512;

#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    stream: Stream,
    since: Instant,
}

impl Idle {
    /// Not idle too long, and not closed or written to by the app.
    fn usable(&mut self) -> bool {
        self.since.elapsed() < IDLE_TIMEOUT && quiet(&mut self.stream)
    }
}

impl Pool {
    /// A live idle connection, if there is one.
    pub fn take(&self) -> Option<Stream> {
        loop {
            let mut idle = self.lock().pop()?;
            if idle.usable() {
                return Some(idle.stream);
            }
        }
    }

    /// Keeps a connection whose exchange ended cleanly for the next delivery.
    pub fn put(&self, stream: Stream) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections that timed out or that the app closed.
    pub fn sweep(&self) {
        let mut idle = self.lock();
        idle.retain_mut(Idle::usable);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding the lock cannot leave the stack inconsistent: take it anyway.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether an idle connection has nothing to read: no end-of-stream from the app, no error, no
/// stray bytes (which would be mistaken for the next answer). Never waits.
fn quiet(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    // Unconstrained: tokio's cooperative budget could otherwise report Pending for a stream that
    // does have something to read.
    let read = pin!(tokio::task::unconstrained(stream.read(&mut byte)));
    read.poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::protocols::l4::stream::Stream as L4Stream;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A pooled connection and the app's end of it.
    async fn connection() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (app, _) = listener.accept().await.unwrap();
        (Box::new(L4Stream::from(client)), app)
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn a_quiet_connection_is_reused_most_recent_first() {
        let pool = Pool::default();
        let (a, _app_a) = connection().await;
        let (b, _app_b) = connection().await;
        let (a_id, b_id) = (a.id(), b.id());
        pool.put(a);
        pool.put(b);
        settle().await;
        assert_eq!(pool.take().map(|s| s.id()), Some(b_id));
        assert_eq!(pool.take().map(|s| s.id()), Some(a_id));
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn connections_the_app_closed_or_wrote_to_are_dropped() {
        let pool = Pool::default();
        let (closed, app_closed) = connection().await;
        let (chatty, mut app_chatty) = connection().await;
        let (fine, _app_fine) = connection().await;
        let fine_id = fine.id();
        pool.put(fine);
        pool.put(closed);
        pool.put(chatty);
        drop(app_closed);
        app_chatty.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        settle().await;
        assert_eq!(pool.take().map(|s| s.id()), Some(fine_id));
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn a_sweep_closes_what_the_app_closed() {
        let pool = Pool::default();
        let (closed, app_closed) = connection().await;
        let (fine, _app_fine) = connection().await;
        let fine_id = fine.id();
        pool.put(closed);
        pool.put(fine);
        drop(app_closed);
        settle().await;
        pool.sweep();
        assert_eq!(pool.lock().len(), 1);
        assert_eq!(pool.lock()[0].stream.id(), fine_id);
    }
}
