//! A listener's certificate chain and private key, handed to each new TLS handshake and swapped
//! on SIGHUP (cert-manager and ACME clients replace the files every few weeks): new handshakes
//! get the new pair, open connections keep theirs, and a pair that does not load or match is
//! refused while the old one keeps serving.

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;
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
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: not a PEM private key: {source}", path.display())]
    NotAKey {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: a private key that cannot sign a TLS handshake: {source}", path.display())]
    UnusableKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: no certificate in the file", path.display())]
    Empty { path: PathBuf },
    #[error("{}: the first certificate cannot be used: {source}", path.display())]
    BadLeaf {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{} does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("generating the dev certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct Certificate {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The leaf first, then the intermediates, with the key that signs for the leaf.
    current: ArcSwap<CertifiedKey>,
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

    /// What rustls asks for the chain and key during each handshake.
    pub fn resolver(self: &Arc<Self>) -> Arc<dyn ResolvesServerCert> {
        self.clone()
    }
}

fn read(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, CertificateError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertificateError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertificateError::NotAChain {
            path: cert_file.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(CertificateError::Empty {
            path: cert_file.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key_file)?).map_err(|source| {
        CertificateError::NotAKey {
            path: key_file.to_path_buf(),
            source,
        }
    })?;
    let signing_key =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|source| {
            CertificateError::UnusableKey {
                path: key_file.to_path_buf(),
                source,
            }
        })?;
    let pair = CertifiedKey::new(chain, signing_key);
    // A leaf that does not parse is refused here rather than at the first handshake.
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(CertificateError::KeyMismatch {
                key: key_file.to_path_buf(),
                cert: cert_file.to_path_buf(),
            })
        }
        Err(source) => Err(CertificateError::BadLeaf {
            path: cert_file.to_path_buf(),
            source,
        }),
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
