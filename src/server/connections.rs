//! `max_connections` per listener (PRODUCT.md §2). At the limit the listener stops accepting, so
//! new connections wait in the kernel's backlog, as behind nginx's `worker_connections` or
//! HAProxy's `maxconn`, instead of being accepted and then starved.
//!
//! A connection counts from its accept (Pingora's connection filter, which runs in the accept
//! loop: while it waits, nothing more is accepted) until the app's last `process_new` returns
//! without a reusable stream. On a TLS listener that `process_new` makes the handshake first
//! (`handshake`); a failed one ends the connection and frees its slot.

use super::handshake::Handshake;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::ConnectionFilter;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long an accepted connection may wait for the app before its slot is taken back: the app
/// gets it at once, so this only guards against a connection Pingora dropped in between.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(61);

/// How often the limit is warned about while a listener stays at it.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// One listener's open connections against its `max_connections`.
pub struct ConnectionLimit {
    listener: String,
    max: usize,
    counts: Mutex<Counts>,
    freed: Notify,
}

#[derive(Default)]
struct Counts {
    /// Accepted, not yet handed to the app: by peer address, with the time of the accept.
    accepted: HashMap<SocketAddr, Instant>,
    /// Handed to the app.
    serving: usize,
    last_warned: Option<Instant>,
}

impl Counts {
    fn open(&self) -> usize {
        self.accepted.len() + self.serving
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
    pub fn new(listener: &str, max: usize) -> Arc<Self> {
        Arc::new(Self {
            listener: listener.to_string(),
            max,
            counts: Mutex::new(Counts::default()),
            freed: Notify::new(),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a connection from `peer`, if one is free.
    fn try_admit(&self, peer: SocketAddr) -> bool {
        let mut counts = self.counts();
        let now = Instant::now();
        if counts.open() >= self.max {
            counts
                .accepted
                .retain(|_, at| now.duration_since(*at) < HANDOVER_TIMEOUT);
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
        counts.accepted.insert(peer, now);
        true
    }

    /// The connection from `peer` reached the app (a reused keep-alive stream was counted when
    /// it arrived).
    fn handed_over(&self, peer: SocketAddr) {
        let mut counts = self.counts();
        if counts.accepted.remove(&peer).is_some() {
            counts.serving += 1;
        }
    }

    fn close(&self) {
        let mut counts = self.counts();
        counts.serving = counts.serving.saturating_sub(1);
        drop(counts);
        self.freed.notify_one();
    }

    /// Open connections on this listener, accepted or served.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.counts().open()
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
            // Woken by a closed connection; the timeout is for a slot taken back in `try_admit`.
            let _ = tokio::time::timeout(HANDOVER_TIMEOUT, freed).await;
        }
    }
}

/// The listener's app, counting each connection until it closes, and making the TLS handshake
/// of a new connection on a TLS listener.
pub struct Counted<A> {
    pub app: Arc<A>,
    pub limit: Arc<ConnectionLimit>,
    pub tls: Option<Handshake>,
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
            self.limit.handed_over(peer);
        }
        // Counted connections are the ones with a peer address (see `AcceptWhenFree`).
        let mut slot = Slot(peer.map(|_| &*self.limit));
        // A reused keep-alive stream is already a TLS session.
        let stream = match &self.tls {
            // Boxed: the handshake's state would otherwise enlarge every connection's future,
            // plain HTTP ones included.
            Some(tls) if stream.get_ssl_digest().is_none() => {
                Box::pin(tls.accept(stream, peer)).await?
            }
            _ => stream,
        };
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
    fn a_slot_is_held_from_accept_to_close() {
        let limit = ConnectionLimit::new("test", 2);
        assert!(limit.try_admit(peer(1)));
        assert!(limit.try_admit(peer(2)));
        assert!(!limit.try_admit(peer(3)), "the third waits");
        limit.handed_over(peer(1));
        limit.handed_over(peer(1));
        assert_eq!(limit.open(), 2, "a reused stream is not counted again");
        assert!(!limit.try_admit(peer(3)));
        limit.close();
        assert!(limit.try_admit(peer(3)));
        assert_eq!(limit.open(), 2);
    }
}
