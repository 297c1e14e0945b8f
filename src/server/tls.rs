//! `tls: { self_signed: true }`: a throwaway certificate for development, made at start.

use super::certificate::CertificateError;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509};
use std::path::{Path, PathBuf};

/// Writes a fresh self-signed certificate for localhost / 127.0.0.1 / ::1 and returns the
/// (cert, key) file paths, private to this process.
pub fn self_signed() -> Result<(PathBuf, PathBuf), CertificateError> {
    let err = CertificateError::Generate;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(err)?;
    let key = PKey::from_ec_key(EcKey::generate(&group).map_err(err)?).map_err(err)?;
    let mut name = X509NameBuilder::new().map_err(err)?;
    name.append_entry_by_text("CN", "hookgate development certificate")
        .map_err(err)?;
    let name = name.build();
    let mut cert = X509::builder().map_err(err)?;
    cert.set_version(2).map_err(err)?;
    let mut serial = BigNum::new().map_err(err)?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false).map_err(err)?;
    let serial = serial.to_asn1_integer().map_err(err)?;
    cert.set_serial_number(&serial).map_err(err)?;
    cert.set_subject_name(&name).map_err(err)?;
    cert.set_issuer_name(&name).map_err(err)?;
    cert.set_pubkey(&key).map_err(err)?;
    let (from, until) = (
        Asn1Time::days_from_now(0).map_err(err)?,
        Asn1Time::days_from_now(30).map_err(err)?,
    );
    cert.set_not_before(&from).map_err(err)?;
    cert.set_not_after(&until).map_err(err)?;
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .ip("::1")
        .build(&cert.x509v3_context(None, None))
        .map_err(err)?;
    cert.append_extension(san).map_err(err)?;
    cert.sign(&key, MessageDigest::sha256()).map_err(err)?;
    let cert = cert.build();

    let dir = std::env::temp_dir().join(format!("hookgate-dev-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| CertificateError::Write {
        path: dir.clone(),
        source,
    })?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.to_pem().map_err(err)?).map_err(|source| {
        CertificateError::Write {
            path: cert_path.clone(),
            source,
        }
    })?;
    write_private(&key_path, &key.private_key_to_pem_pkcs8().map_err(err)?)?;
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
