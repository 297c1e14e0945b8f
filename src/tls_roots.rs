//! The CA roots every outgoing TLS connection that hookgate configures itself trusts: the
//! system's store, or the bundle `SSL_CERT_FILE` names, as OpenSSL-based clients read it.

use rustls::RootCertStore;

/// The system's roots; an error names why none could be read.
pub fn system_roots() -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no CA certificate found".into()));
    }
    Ok(roots)
}
