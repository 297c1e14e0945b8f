//! The TLS handshake of a webhook listener. The listener accepts plain TCP and its app makes the
//! handshake with a rustls config built here, because Pingora's `TlsSettings` builds its own with
//! no say over the cipher order, and reports a failed handshake only as an ERROR log line.
//!
//! - **aws-lc** does the cryptography: its X25519 and SHA-2 run on this hardware's fast paths,
//!   where ring's SHA-512 does not on every x86 CPU.
//! - **The server's cipher order, AES-128-GCM first.** Senders built on OpenSSL ask for
//!   AES-256-GCM-SHA384 first, and its SHA-384 key schedule costs more than the suite buys:
//!   AES-128-GCM is TLS 1.3's mandatory suite and the one Go's and BoringSSL's servers prefer. A
//!   client that offers only AES-256 or ChaCha20 still gets it; nothing below TLS 1.2, no CBC.
//!
//! `benches/focus.sh` with `TLS=1` measures a new connection per delivery (docs/performance.md).

use super::certificate::Certificate;
use super::runtime::Runtime;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::l4::stream::Stream as TcpStream;
use pingora_core::protocols::Stream;
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::version::{TLS12, TLS13};
use rustls::CipherSuite;
use std::net::SocketAddr;
use std::sync::Arc;

/// A listener's handshakes, with its certificate (swapped on SIGHUP) and the gateway's
/// `client_timeout` as their bound.
pub struct Handshake {
    acceptor: Acceptor,
    runtime: Arc<Runtime>,
}

/// Why a connection got no TLS session.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("{0}")]
    Tls(Box<pingora_error::Error>),
    #[error("not finished within client_timeout")]
    TimedOut,
    #[error("the connection is not a TCP stream")]
    NotTcp,
}

impl Handshake {
    pub fn new(
        certificate: &Arc<Certificate>,
        runtime: Arc<Runtime>,
    ) -> Result<Self, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&TLS13, &TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(certificate.resolver());
        config.ignore_client_order = true;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: Acceptor::from_server_config(Arc::new(config)),
            runtime,
        })
    }

    /// The handshake on a connection the listener accepted from `peer`, or `None` when it
    /// failed. A failure is counted (`hookgate_tls_handshake_failures_total`) and logged at DEBUG
    /// only: any client can fail one at will, and an ERROR line each would let a stranger flood
    /// the log and page someone.
    pub async fn accept(&self, stream: Stream, peer: Option<SocketAddr>) -> Option<Stream> {
        match self.tls_session(stream).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                self.runtime.metrics.tls_handshake_failures.inc();
                tracing::debug!(target: "hookgate::tls", peer = ?peer, error = %e, "TLS handshake failed");
                None
            }
        }
    }

    async fn tls_session(&self, stream: Stream) -> Result<Stream, HandshakeError> {
        let tcp = stream
            .into_any()
            .downcast::<TcpStream>()
            .map_err(|_| HandshakeError::NotTcp)?;
        let bound = self.runtime.active.load().policy.client_timeout;
        match tokio::time::timeout(bound, self.acceptor.tls_handshake(*tcp)).await {
            Ok(Ok(tls)) => Ok(Box::new(tls)),
            Ok(Err(e)) => Err(HandshakeError::Tls(e)),
            Err(_) => Err(HandshakeError::TimedOut),
        }
    }
}

/// aws-lc's suites, AES-128-GCM first within each TLS version.
fn provider() -> CryptoProvider {
    let mut provider = aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    provider
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_leads_and_every_suite_is_an_aead_of_tls_1_2_or_later() {
        let suites: Vec<CipherSuite> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites[0], CipherSuite::TLS13_AES_128_GCM_SHA256);
        let tls12_first = suites
            .iter()
            .find(|s| !format!("{s:?}").starts_with("TLS13"))
            .copied();
        assert_eq!(
            tls12_first,
            Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
        );
        assert!(suites
            .iter()
            .all(|s| format!("{s:?}").contains("GCM") || format!("{s:?}").contains("CHACHA20")));
        assert_eq!(
            suites.len(),
            aws_lc_rs::default_provider().cipher_suites.len()
        );
    }
}
