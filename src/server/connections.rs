//! `max_connections` per listener (PRODUCT.md §2). At the limit the listener stops accepting, so
//! new connections wait in the kernel's backlog, as behind nginx's `worker_connections` or
//! HAProxy's `maxconn`, instead of being accepted and then starved.
//!
//! A connection counts from its accept (Pingora's connection filter, which runs in the accept
//! loop: while it waits, nothing more is accepted) until the app's last `process_new` returns
//! without a reusable stream, or its handshake fails. Pingora reports a failed handshake only
//! as a log line, which `logging` hands to [`handshake_failed`]; a handshake that never ends is
//! given up by Pingora after [`HANDSHAKE_TIMEOUT`], after which its slot is reclaimed here.

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::ConnectionFilter;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use prometheus::IntCounter;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Pingora's bound on a downstream handshake (`services::listening`), plus a margin.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(61);

/// How often the limit is warned about while a listener stays at it.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Every listener's limit, for the handshake failures Pingora reports by peer address only.
static LIMITS: Mutex<Vec<Weak<ConnectionLimit>>> = Mutex::new(Vec::new());

/// One listener's open connections against its `max_connections`.
pub struct ConnectionLimit {
    listener: String,
    max: usize,
    counts: Mutex<Counts>,
    freed: Notify,
    handshake_failures: IntCounter,
}

#[derive(Default)]
struct Counts {
    /// Accepted, handshake not finished: by peer address, with the time of the accept.
    handshaking: HashMap<SocketAddr, Instant>,
    /// Handshake done, served by the app.
    serving: usize,
    last_warned: Option<Instant>,
}

impl Counts {
    fn open(&self) -> usize {
        self.handshaking.len() + self.serving
    }
}

impl std::fmt::Debug for ConnectionLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimit")
            .field("listener", &self.listener)
            .field("max", &self.max)
            .finish()
    }
}

impl ConnectionLimit {
    pub fn new(listener: &str, max: usize, handshake_failures: IntCounter) -> Arc<Self> {
        let limit = Arc::new(Self {
            listener: listener.to_string(),
            max,
            counts: Mutex::new(Counts::default()),
            freed: Notify::new(),
            handshake_failures,
        });
        let mut all = LIMITS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|l| l.strong_count() > 0);
        all.push(Arc::downgrade(&limit));
        limit
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a connection from `peer`, if one is free.
    fn try_admit(&self, peer: SocketAddr) -> bool {
        let mut counts = self.counts();
        let now = Instant::now();
        if counts.open() >= self.max {
            // Handshakes Pingora has given up on by now, without a word we could match.
            let before = counts.handshaking.len();
            counts
                .handshaking
                .retain(|_, accepted| now.duration_since(*accepted) < HANDSHAKE_TIMEOUT);
            self.handshake_failures
                .inc_by((before - counts.handshaking.len()) as u64);
        }
        if counts.open() >= self.max {
            if counts
                .last_warned
                .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
            {
                counts.last_warned = Some(now);
                tracing::warn!(
                    listener = %self.listener,
                    max_connections = self.max,
                    "listener at max_connections: new connections wait in the backlog"
                );
            }
            return false;
        }
        counts.handshaking.insert(peer, now);
        true
    }

    /// The connection from `peer` finished its handshake; true when it was counted as new here
    /// (a reused keep-alive stream was counted when it arrived).
    fn handshake_done(&self, peer: SocketAddr) -> bool {
        let mut counts = self.counts();
        if counts.handshaking.remove(&peer).is_some() {
            counts.serving += 1;
            true
        } else {
            false
        }
    }

    fn close(&self) {
        let mut counts = self.counts();
        counts.serving = counts.serving.saturating_sub(1);
        drop(counts);
        self.freed.notify_one();
    }

    fn forget_handshake(&self, peer: SocketAddr) -> bool {
        let removed = self.counts().handshaking.remove(&peer).is_some();
        if removed {
            self.handshake_failures.inc();
            self.freed.notify_one();
        }
        removed
    }

    /// Open connections on this listener, counted or handshaking.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.counts().open()
    }
}

/// A handshake with `peer` failed (Pingora logged it): its slot is free again.
pub fn handshake_failed(peer: SocketAddr) {
    let limits: Vec<Arc<ConnectionLimit>> = LIMITS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for limit in limits {
        if limit.forget_handshake(peer) {
            return;
        }
    }
}

/// The filter in the listener's accept loop: waits for a free slot before it lets Pingora take
/// the connection on.
#[derive(Debug)]
pub struct AcceptWhenFree(pub Arc<ConnectionLimit>);

#[async_trait]
impl ConnectionFilter for AcceptWhenFree {
    async fn should_accept(&self, peer: Option<&SocketAddr>) -> bool {
        let Some(&peer) = peer else {
            return true;
        };
        loop {
            let freed = self.0.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.0.try_admit(peer) {
                return true;
            }
            // Woken by a closed connection; the timeout is for handshakes that expire silently.
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, freed).await;
        }
    }
}

/// The listener's app, counting each connection until it closes.
pub struct Counted<A> {
    pub app: Arc<A>,
    pub limit: Arc<ConnectionLimit>,
}

/// Frees the connection's slot when dropped, unless the connection lives on.
struct Slot<'a>(Option<&'a ConnectionLimit>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(limit) = self.0 {
            limit.close();
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Counted<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        if let Some(peer) = peer {
            self.limit.handshake_done(peer);
        }
        // Counted connections are the ones with a peer address (see `AcceptWhenFree`).
        let mut slot = Slot(peer.map(|_| &*self.limit));
        let reused = self.app.process_new(stream, shutdown).await;
        if reused.is_some() {
            slot.0 = None;
        }
        reused
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_slot_is_held_from_accept_to_close_and_freed_by_a_failed_handshake() {
        let failures = IntCounter::new("f", "f").unwrap();
        let limit = ConnectionLimit::new("test", 2, failures.clone());
        assert!(limit.try_admit(peer(1)));
        assert!(limit.try_admit(peer(2)));
        assert!(!limit.try_admit(peer(3)), "the third waits");
        assert!(limit.handshake_done(peer(1)));
        assert!(!limit.handshake_done(peer(1)), "a reused stream is not new");
        assert!(!limit.try_admit(peer(3)));
        limit.close();
        assert!(limit.try_admit(peer(3)));
        assert_eq!(limit.open(), 2);
        handshake_failed(peer(2));
        assert_eq!(failures.get(), 1);
        assert_eq!(limit.open(), 1);
    }
}
