//! The identity of a verified TLS peer, as later filters see it (Envoy's `connection.*`
//! attributes: `uri_san_peer_certificate`, `dns_san_peer_certificate`, `subject_peer_certificate`).

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a downstream connection's TLS session tells about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    pub sni: Option<String>,
    pub alpn: Option<String>,
    /// The negotiated version as Envoy names it (`TLSv1.2`, `TLSv1.3`).
    pub version: Option<&'static str>,
    /// Present when the client presented a certificate that verified (mTLS).
    pub peer: Option<PeerIdentity>,
}

/// A verified peer certificate's names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub subject: String,
}

impl PeerIdentity {
    /// Reads the names from the leaf certificate; `None` if it does not parse (it already passed
    /// verification, so that would be a certificate we accepted but cannot describe).
    pub fn from_leaf(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
        let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
        let mut identity = PeerIdentity {
            subject: parsed.subject().to_string(),
            ..PeerIdentity::default()
        };
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => identity.uri_sans.push((*uri).to_string()),
                    GeneralName::DNSName(dns) => identity.dns_sans.push((*dns).to_string()),
                    _ => {}
                }
            }
        }
        Some(identity)
    }

    /// The SPIFFE ID, if the certificate carries one (a `spiffe://` URI SAN).
    pub fn spiffe_id(&self) -> Option<&str> {
        self.uri_sans
            .iter()
            .map(String::as_str)
            .find(|uri| uri.starts_with("spiffe://"))
    }

    /// The value of an `x-forwarded-client-cert` element for this peer, in Envoy's format.
    pub fn xfcc(&self) -> String {
        let mut parts = Vec::new();
        if !self.subject.is_empty() {
            parts.push(format!("Subject=\"{}\"", self.subject.replace('"', "\\\"")));
        }
        for uri in &self.uri_sans {
            parts.push(format!("URI={uri}"));
        }
        for dns in &self.dns_sans {
            parts.push(format!("DNS={dns}"));
        }
        parts.join(";")
    }
}
