//! A listener's certificate chain and private key, handed to each new TLS handshake and swapped
//! on SIGHUP (cert-manager and ACME clients replace the files every few weeks): new handshakes
//! get the new pair, open connections keep theirs, and a pair that does not load or match is
//! refused while the old one keeps serving.

use arc_swap::ArcSwap;
use async_trait::async_trait;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::tls::ext::{ssl_add_chain_cert, ssl_use_certificate, ssl_use_private_key};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a certificate and key could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a PEM certificate chain: {source}", path.display())]
    NotAChain {
        path: PathBuf,
        source: openssl::error::ErrorStack,
    },
    #[error("{}: not a PEM private key: {source}", path.display())]
    NotAKey {
        path: PathBuf,
        source: openssl::error::ErrorStack,
    },
    #[error("{}: no certificate in the file", path.display())]
    Empty { path: PathBuf },
    #[error("{} does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("generating the dev certificate: {0}")]
    Generate(#[from] openssl::error::ErrorStack),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

struct Pair {
    /// The leaf first, then the intermediates.
    chain: Vec<X509>,
    key: PKey<Private>,
}

pub struct Certificate {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    current: ArcSwap<Pair>,
}

impl Certificate {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, CertificateError> {
        let pair = read(cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: ArcSwap::from_pointee(pair),
        }))
    }

    /// Reads the files again; the new pair serves new handshakes only if it loads and matches.
    pub fn reload(&self) -> Result<(), CertificateError> {
        let pair = read(&self.cert_file, &self.key_file)?;
        self.current.store(Arc::new(pair));
        Ok(())
    }

    /// What Pingora calls during each handshake.
    pub fn acceptor(self: &Arc<Self>) -> Box<dyn TlsAccept + Send + Sync> {
        Box::new(Acceptor(self.clone()))
    }
}

fn read(cert_file: &Path, key_file: &Path) -> Result<Pair, CertificateError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertificateError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let chain =
        X509::stack_from_pem(&read(cert_file)?).map_err(|source| CertificateError::NotAChain {
            path: cert_file.to_path_buf(),
            source,
        })?;
    let key = PKey::private_key_from_pem(&read(key_file)?).map_err(|source| {
        CertificateError::NotAKey {
            path: key_file.to_path_buf(),
            source,
        }
    })?;
    let leaf = chain.first().ok_or_else(|| CertificateError::Empty {
        path: cert_file.to_path_buf(),
    })?;
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(CertificateError::KeyMismatch {
            key: key_file.to_path_buf(),
            cert: cert_file.to_path_buf(),
        });
    }
    Ok(Pair { chain, key })
}

struct Acceptor(Arc<Certificate>);

#[async_trait]
impl TlsAccept for Acceptor {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let pair = self.0.current.load();
        let Some(leaf) = pair.chain.first() else {
            return;
        };
        // A failure here fails the handshake, which is all that can be done mid-handshake.
        if let Err(e) = ssl_use_certificate(ssl, leaf)
            .and_then(|()| {
                pair.chain[1..]
                    .iter()
                    .try_for_each(|c| ssl_add_chain_cert(ssl, c))
            })
            .and_then(|()| ssl_use_private_key(ssl, &pair.key))
        {
            tracing::warn!(error = %e, "cannot use the certificate for a handshake");
        }
    }
}
