//! TLS for both sides of the proxy, on rustls with the `ring` provider.
//!
//! [`server`] terminates downstream TLS (SNI-selected certificates, optional mTLS), [`client`]
//! originates upstream TLS (SNI, CA verification, client certificates), and [`identity`] turns a
//! verified peer certificate into the identity later filters see (URI SANs, SPIFFE ID).
//! [`reloadable`] keeps each built configuration up to date with the files it was read from,
//! so certificates rotated on disk reach new connections without a restart.

pub mod client;
pub mod identity;
pub mod reloadable;
pub mod server;

use std::path::{Path, PathBuf};
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

/// The files one build of a TLS configuration read, each with the SHA-256 of what was read
/// (never the bytes: a private key does not linger here): a reload compares them with the
/// files' contents now to tell whether anything needs building again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Files {
    read: Vec<(PathBuf, [u8; 32])>,
}

impl Files {
    /// Reads `path` for a build, noting its digest.
    fn read(&mut self, path: &str) -> std::io::Result<Vec<u8>> {
        let bytes = std::fs::read(path)?;
        let path = Path::new(path);
        let digest = digest(&bytes);
        match self.read.iter_mut().find(|(p, _)| p == path) {
            Some(entry) => entry.1 = digest,
            None => self.read.push((path.to_path_buf(), digest)),
        }
        Ok(bytes)
    }

    /// Whether any file now differs from what was read (a file that cannot be read differs).
    pub fn changed(&self) -> bool {
        self.read
            .iter()
            .any(|(path, read)| std::fs::read(path).map_or(true, |now| digest(&now) != *read))
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.read.iter().map(|(path, _)| path.as_path())
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

pub(crate) fn load_certs(
    files: &mut Files,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Certificates {
        path: path.to_string(),
        reason,
    };
    let pem = files.read(path).map_err(|e| err(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_string(),
        });
    }
    Ok(certs)
}

pub(crate) fn load_key(files: &mut Files, path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let err = |reason: String| TlsError::PrivateKey {
        path: path.to_string(),
        reason,
    };
    let pem = files.read(path).map_err(|e| err(e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| err(e.to_string()))
}

pub(crate) fn load_roots(files: &mut Files, path: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(files, path)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}
