//! TLS for both sides of the proxy, on rustls with the `ring` provider.
//!
//! [`server`] terminates downstream TLS (SNI-selected certificates, optional mTLS), [`client`]
//! originates upstream TLS (SNI, CA verification, client certificates), and [`identity`] turns a
//! verified peer certificate into the identity later filters see (URI SANs, SPIFFE ID).

pub mod client;
pub mod identity;
pub mod server;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS setting that cannot be put into effect; it names the file or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file \"{path}\": {reason}")]
    Certificates { path: String, reason: String },
    #[error("cannot read private key file \"{path}\": {reason}")]
    PrivateKey { path: String, reason: String },
    #[error("certificate file \"{path}\" holds no certificate")]
    NoCertificates { path: String },
    #[error("invalid TLS setting: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA file \"{path}\": {reason}")]
    ClientCa { path: String, reason: String },
    #[error("invalid server name \"{0}\"")]
    ServerName(String),
}

/// The process-wide crypto provider; `ring` builds with nothing but a C compiler.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Certificates {
        path: path.to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(Path::new(path))
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_string(),
        });
    }
    Ok(certs)
}

pub(crate) fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(Path::new(path)).map_err(|e| TlsError::PrivateKey {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

pub(crate) fn load_roots(path: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}
