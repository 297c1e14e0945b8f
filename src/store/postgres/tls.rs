//! TLS to Postgres, as libpq's `sslmode` asks for it.

use crate::store::StoreError;

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

pub(super) fn tls_connector(
    verify: TlsVerify,
) -> Result<postgres_openssl::MakeTlsConnector, StoreError> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut builder = SslConnector::builder(SslMethod::tls())
        .map_err(|e| StoreError::Failed(format!("TLS for Postgres: {e}")))?;
    if verify == TlsVerify::None {
        builder.set_verify(SslVerifyMode::NONE);
    } else {
        for ca in [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
        ] {
            if std::path::Path::new(ca).is_file() {
                builder
                    .set_ca_file(ca)
                    .map_err(|e| StoreError::Failed(format!("TLS for Postgres: {ca}: {e}")))?;
                break;
            }
        }
    }
    let mut connector = postgres_openssl::MakeTlsConnector::new(builder.build());
    if verify != TlsVerify::ChainAndHost {
        connector.set_callback(|config, _| {
            config.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(connector)
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
