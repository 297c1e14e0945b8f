//! TLS to Postgres, as libpq's `sslmode` asks for it.

use crate::store::StoreError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// How the server's certificate is checked, as libpq's `sslmode` says: `disable`, `prefer` and
/// `require` do not check it (encryption only), `verify-ca` checks the chain against the system's
/// CA bundle, `verify-full` the host name too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsVerify {
    None,
    Chain,
    ChainAndHost,
}

impl TlsVerify {
    /// The URL as tokio-postgres reads it (it knows `sslmode` up to `require`) and what to check.
    pub(super) fn from_url(url: &str) -> (String, Self) {
        for (mode, verify) in [
            ("sslmode=verify-full", Self::ChainAndHost),
            ("sslmode=verify-ca", Self::Chain),
        ] {
            if url.contains(mode) {
                return (url.replace(mode, "sslmode=require"), verify);
            }
        }
        (url.to_string(), Self::None)
    }
}

/// The connector for `verify`: rustls with the process's crypto provider, the roots from the
/// system's store (or `SSL_CERT_FILE`, as OpenSSL-based clients read it) when anything is checked.
pub(super) fn tls_connector(
    verify: TlsVerify,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let failed = |e: rustls::Error| StoreError::setup(format!("TLS for Postgres: {e}"));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(failed)?;
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        TlsVerify::None => Arc::new(Unchecked {
            chain: None,
            provider,
        }),
        TlsVerify::Chain => Arc::new(Unchecked {
            chain: Some(web_pki(&provider)?),
            provider,
        }),
        TlsVerify::ChainAndHost => web_pki(&provider)?,
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Chain and name checked against the system's roots.
fn web_pki(provider: &Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, StoreError> {
    let roots = crate::tls_roots::system_roots().map_err(|why| {
        StoreError::setup(format!("TLS for Postgres: the system's CA roots: {why}"))
    })?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| StoreError::setup(format!("TLS for Postgres: {e}")))
}

/// `sslmode` below `verify-full`: with `chain`, the chain is checked and the name is not
/// (`verify-ca`); without it, nothing about the certificate is (`prefer`, `require`), as libpq
/// does. The handshake's signatures are always checked, so the session is with the key the
/// certificate names.
#[derive(Debug)]
struct Unchecked {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            checked => checked,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_verify_modes_become_require_plus_a_check() {
        let (url, v) = TlsVerify::from_url("postgres://u@db/h?sslmode=verify-full");
        assert_eq!(
            (url.as_str(), v),
            ("postgres://u@db/h?sslmode=require", TlsVerify::ChainAndHost)
        );
        let (_, v) = TlsVerify::from_url("postgres://u@db/h?sslmode=verify-ca");
        assert_eq!(v, TlsVerify::Chain);
        let (url, v) = TlsVerify::from_url("postgres://u@db/h?sslmode=require");
        assert_eq!(
            (url.as_str(), v),
            ("postgres://u@db/h?sslmode=require", TlsVerify::None)
        );
    }
}
