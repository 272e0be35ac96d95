//! A PEM certificate chain and its private key, read into what rustls
//! presents in a handshake.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Reads `cert` (`--tls-cert`) and `key` (`--tls-key`) and checks that the
/// key belongs to the chain's first certificate.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = read_chain(cert, "--tls-cert / WEFT_TLS_CERT")?;
    let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "--tls-key / WEFT_TLS_KEY: read a PEM private key from {}",
            key.display()
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key_der, &provider).with_context(|| {
        format!(
            "--tls-key / WEFT_TLS_KEY {} is not the key of --tls-cert / WEFT_TLS_CERT {}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// Every certificate of the PEM file at `path`; `setting` names the flag in
/// errors.
pub fn read_chain(path: &Path, setting: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("{setting}: read {}", path.display()))?;
    let mut chain = Vec::new();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        chain.push(certificate.with_context(|| {
            format!(
                "{setting}: {} holds a malformed PEM certificate",
                path.display()
            )
        })?);
    }
    if chain.is_empty() {
        bail!("{setting}: {} holds no PEM certificate", path.display());
    }
    Ok(chain)
}
