//! `tls: { self_signed: true }`: a throwaway certificate for development, made at start.

use super::certificate::CertificateError;
use rcgen::{CertificateParams, DnType, KeyPair};
use std::path::{Path, PathBuf};

/// Writes a fresh self-signed certificate for localhost / 127.0.0.1 / ::1 and returns the
/// (cert, key) file paths, private to this process.
pub fn self_signed() -> Result<(PathBuf, PathBuf), CertificateError> {
    let err = CertificateError::Generate;
    let key = KeyPair::generate().map_err(err)?;
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
    let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "hookgate development certificate");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(30);
    let cert = params.self_signed(&key).map_err(err)?;

    let dir = std::env::temp_dir().join(format!("hookgate-dev-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| CertificateError::Write {
        path: dir.clone(),
        source,
    })?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.pem()).map_err(|source| CertificateError::Write {
        path: cert_path.clone(),
        source,
    })?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertificateError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| CertificateError::Write {
            path: path.to_path_buf(),
            source,
        })
}
