//! Upstream TLS origination: which CAs to trust, which client certificate to present, and ALPN.

use std::sync::Arc;

use rustls::ClientConfig;

use super::reloadable::Reloadable;
use super::{Files, TlsError, load_certs, load_key, load_roots, provider};
use crate::config::{UpstreamProtocol, UpstreamTls};

/// A cluster's TLS configuration, rebuilt when its CA or client certificate files change.
pub fn reloadable(
    tls: &UpstreamTls,
    protocol: UpstreamProtocol,
) -> Result<Arc<Reloadable<ClientConfig>>, TlsError> {
    let tls = tls.clone();
    Reloadable::new(move |files| build(&tls, protocol, files))
}

/// Builds the rustls client configuration for one cluster, reading its files through `files`.
pub fn build(
    tls: &UpstreamTls,
    protocol: UpstreamProtocol,
    files: &mut Files,
) -> Result<ClientConfig, TlsError> {
    let roots = match &tls.ca_file {
        Some(path) => load_roots(files, path)?,
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(load_certs(files, cert)?, load_key(files, key)?)?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match protocol {
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
    };
    Ok(config)
}
