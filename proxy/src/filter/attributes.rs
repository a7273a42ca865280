//! Envoy's attributes for one request, answered to `proxy_get_property`.

use std::net::SocketAddr;
use std::sync::Arc;

use wasmesh_host::StreamEnv;

use crate::tls::identity::TlsInfo;

pub struct RequestAttributes {
    pub method: String,
    pub path: String,
    pub host: String,
    pub scheme: &'static str,
    pub id: Option<String>,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub tls: Option<Arc<TlsInfo>>,
    pub route_name: String,
    pub cluster_name: String,
    pub listener_name: String,
}

impl StreamEnv for RequestAttributes {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let text = |s: &str| Some(s.as_bytes().to_vec());
        // Envoy encodes integers as 8-byte little-endian and booleans as one byte.
        let int = |n: i64| Some(n.to_le_bytes().to_vec());
        let peer = self.tls.as_ref().and_then(|t| t.peer.as_ref());
        match path {
            ["request", "path"] => text(&self.path),
            ["request", "url_path"] => text(self.path.split('?').next().unwrap_or("")),
            ["request", "method"] => text(&self.method),
            ["request", "host"] => text(&self.host),
            ["request", "scheme"] => text(self.scheme),
            ["request", "id"] => self.id.as_deref().and_then(text),
            ["source", "address"] => text(&self.source.to_string()),
            ["source", "port"] => int(i64::from(self.source.port())),
            ["destination", "address"] => text(&self.destination.to_string()),
            ["destination", "port"] => int(i64::from(self.destination.port())),
            ["connection", "mtls"] => Some(vec![u8::from(peer.is_some())]),
            ["connection", "tls_version"] => self.tls.as_ref().map(|_| b"TLSv1.3".to_vec()),
            ["connection", "requested_server_name"] => self
                .tls
                .as_ref()
                .and_then(|t| t.sni.as_deref())
                .and_then(text),
            ["connection", "uri_san_peer_certificate"] => peer
                .and_then(|p| p.uri_sans.first())
                .map(|s| s.as_bytes().to_vec()),
            ["connection", "dns_san_peer_certificate"] => peer
                .and_then(|p| p.dns_sans.first())
                .map(|s| s.as_bytes().to_vec()),
            ["connection", "subject_peer_certificate"] => {
                peer.map(|p| p.subject.as_bytes().to_vec())
            }
            ["route_name"] => text(&self.route_name),
            ["cluster_name"] => text(&self.cluster_name),
            ["listener_name"] | ["xds", "listener_name"] => text(&self.listener_name),
            _ => None,
        }
    }
}
