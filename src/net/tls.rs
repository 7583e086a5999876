//! Trust for rsbal's outgoing TLS connections (HTTPS and etcd server lists,
//! ProxyFetch `https://` checks): which CAs verify a server's certificate,
//! and ProxyFetch's default of verifying nothing (as PyBal's Twisted
//! `ClientContextFactory`).

use std::path::Path;
use std::sync::LazyLock;
use ureq::tls::{RootCerts, TlsConfig};

/// Debian's bundle of trusted CAs (package `ca-certificates`, including
/// local CAs added with `update-ca-certificates`).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS settings of every outgoing HTTPS connection (sources, ProxyFetch): certificates are checked
/// against the CAs of the PEM file `$SSL_CERT_FILE`, else of the system's
/// bundle (so a site's internal CA installed on the host works), else against
/// the Mozilla roots built into rsbal.
pub(crate) fn tls_config() -> TlsConfig {
    static ROOTS: LazyLock<RootCerts> = LazyLock::new(|| {
        let path = std::env::var_os("SSL_CERT_FILE")
            .map_or_else(|| SYSTEM_CA_BUNDLE.into(), std::path::PathBuf::from);
        ca_bundle(&path).unwrap_or_else(|why| {
            log::warn!(target: "tls", "{}: {why}; HTTPS connections trust the built-in Mozilla roots", path.display());
            RootCerts::WebPki
        })
    });
    TlsConfig::builder().root_certs(ROOTS.clone()).build()
}

/// TLS settings of a ProxyFetch check without `verify-tls`: the certificate
/// is not verified at all (any issuer, any name, expired), as PyBal's
/// ProxyFetch did. The URL's host still goes out as SNI (PyBal sent none; a
/// server picks its certificate by it, which a check that verifies nothing
/// does not mind) and in `Host`.
pub(crate) fn unverified_tls_config() -> TlsConfig {
    TlsConfig::builder().disable_verification(true).build()
}

/// The certificates of a PEM bundle.
fn ca_bundle(path: &Path) -> Result<RootCerts, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err("no certificates in it".to_string());
    }
    Ok(RootCerts::new_with_certs(&certs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_bundles() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        assert!(ca_bundle(&junk).unwrap_err().contains("no certificates"));
        assert!(ca_bundle(&dir.path().join("missing")).is_err());
        if Path::new(SYSTEM_CA_BUNDLE).exists() {
            match ca_bundle(Path::new(SYSTEM_CA_BUNDLE)) {
                Ok(RootCerts::Specific(certs)) => assert!(!certs.is_empty()),
                other => panic!("{other:?}"),
            }
        }
    }
}
