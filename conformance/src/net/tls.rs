//! A test PKI for the mTLS listener the property checks use: a CA, a server certificate for
//! `conformance.local`, and a client certificate with a URI SAN, a DNS SAN and a subject, as
//! PEM files; and the client's TLS connector.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::error::{Context, Result};

/// The client certificate's identities, as the proxy should report them.
pub const CLIENT_URI_SAN: &str = "spiffe://conformance.local/client";
pub const CLIENT_DNS_SAN: &str = "client.conformance.local";
pub const CLIENT_CN: &str = "conformance client";
pub const SERVER_NAME: &str = "conformance.local";

pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn leaf(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: &Path,
    name: &str,
    dns: &[&str],
    uri: Option<&str>,
) -> Result<(PathBuf, PathBuf)> {
    let mut params =
        rcgen::CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .doing("certificate parameters")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    if let Some(uri) = uri {
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(uri.try_into().doing("a URI SAN")?));
    }
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate().doing("a key pair")?;
    let cert = params.signed_by(&key, ca).doing("signing a certificate")?;
    let stem = name.replace(' ', "-");
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_path, cert.pem()).doing("writing a certificate")?;
    std::fs::write(&key_path, key.serialize_pem()).doing("writing a key")?;
    Ok((cert_path, key_path))
}

impl Pki {
    pub fn new(dir: &Path) -> Result<Pki> {
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).doing("CA parameters")?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "conformance CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().doing("the CA key")?;
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).doing("the CA certificate")?;
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).doing("writing the CA")?;
        let (server_cert, server_key) = leaf(&ca, dir, "conformance server", &[SERVER_NAME], None)?;
        let (client_cert, client_key) =
            leaf(&ca, dir, CLIENT_CN, &[CLIENT_DNS_SAN], Some(CLIENT_URI_SAN))?;
        Ok(Pki {
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
        })
    }

    /// Connects to `addr` over TLS 1.3 with SNI `conformance.local`, presenting the client
    /// certificate.
    pub async fn connect(
        &self,
        addr: SocketAddr,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca).doing("reading the CA")? {
            roots
                .add(cert.doing("a CA certificate")?)
                .doing("trusting the CA")?;
        }
        let certs = CertificateDer::pem_file_iter(&self.client_cert)
            .doing("reading the client certificate")?
            .collect::<std::result::Result<Vec<_>, _>>()
            .doing("the client certificate")?;
        let key = PrivateKeyDer::from_pem_file(&self.client_key).doing("the client key")?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .doing("TLS versions")?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .doing("the client certificate")?;
        let tcp = TcpStream::connect(addr).await.doing("connecting for TLS")?;
        let name = ServerName::try_from(SERVER_NAME.to_string()).doing("the server name")?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .doing("the TLS handshake")
    }
}
