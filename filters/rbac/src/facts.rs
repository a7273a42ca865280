//! What policies look at: the request's method, path, headers and port, and who sent it — the
//! mTLS peer, the source address, the claims the jwt-authn filter verified. [`Live`] reads them
//! from the host once each, when a policy first asks.

use std::cell::OnceCell;
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;
use wasmesh_sdk::{headers, properties};

/// The verified client certificate's names.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub uri_san: Option<String>,
    pub dns_san: Option<String>,
    pub subject: Option<String>,
}

impl Peer {
    /// The name `authenticated.principal_name` is matched against, as Envoy chooses it: the
    /// URI SAN, else the DNS SAN, else the subject.
    pub fn name(&self) -> &str {
        self.uri_san
            .as_deref()
            .or(self.dns_san.as_deref())
            .or(self.subject.as_deref())
            .unwrap_or_default()
    }
}

pub trait Facts {
    fn method(&self) -> Option<String>;
    /// The path without its query.
    fn path(&self) -> Option<String>;
    /// Every value of a request header (lowercase name), in order.
    fn header(&self, name: &str) -> Vec<String>;
    fn destination_port(&self) -> Option<u16>;
    fn source_ip(&self) -> Option<IpAddr>;
    /// The peer, if it presented a verified client certificate.
    fn peer(&self) -> Option<&Peer>;
    /// The verified JWT claims, if a jwt-authn filter ran before and published them.
    fn claims(&self) -> Option<&Value>;
}

/// The request whose callback is running, read from the host on demand.
#[derive(Default)]
pub struct Live {
    peer: OnceCell<Option<Peer>>,
    claims: OnceCell<Option<Value>>,
}

/// The IP of `source.address` (`ip:port`, `[v6]:port`, or a bare IP).
fn ip_of(address: &str) -> Option<IpAddr> {
    address
        .parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| address.parse::<IpAddr>())
        .ok()
}

impl Facts for Live {
    fn method(&self) -> Option<String> {
        headers::request().get(":method")
    }

    fn path(&self) -> Option<String> {
        headers::request().path().map(|p| p.path)
    }

    fn header(&self, name: &str) -> Vec<String> {
        headers::request().get_all(name)
    }

    fn destination_port(&self) -> Option<u16> {
        properties::destination_port().or_else(|| {
            properties::destination_address()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .map(|s| s.port())
        })
    }

    fn source_ip(&self) -> Option<IpAddr> {
        properties::source_address().and_then(|a| ip_of(&a))
    }

    fn peer(&self) -> Option<&Peer> {
        self.peer
            .get_or_init(|| {
                properties::connection_mtls()
                    .unwrap_or(false)
                    .then(|| Peer {
                        uri_san: properties::uri_san_peer_certificate(),
                        dns_san: properties::dns_san_peer_certificate(),
                        subject: properties::subject_peer_certificate(),
                    })
            })
            .as_ref()
    }

    fn claims(&self) -> Option<&Value> {
        self.claims
            .get_or_init(|| {
                properties::filter_state("wasmesh.jwt.claims")
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            })
            .as_ref()
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Facts given by a test.
    #[derive(Default)]
    pub struct Fixed {
        pub method: Option<String>,
        pub path: Option<String>,
        pub headers: Vec<(String, String)>,
        pub destination_port: Option<u16>,
        pub source_ip: Option<IpAddr>,
        pub peer: Option<Peer>,
        pub claims: Option<Value>,
    }

    impl Facts for Fixed {
        fn method(&self) -> Option<String> {
            self.method.clone()
        }
        fn path(&self) -> Option<String> {
            self.path.clone()
        }
        fn header(&self, name: &str) -> Vec<String> {
            self.headers
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .collect()
        }
        fn destination_port(&self) -> Option<u16> {
            self.destination_port
        }
        fn source_ip(&self) -> Option<IpAddr> {
            self.source_ip
        }
        fn peer(&self) -> Option<&Peer> {
            self.peer.as_ref()
        }
        fn claims(&self) -> Option<&Value> {
            self.claims.as_ref()
        }
    }

    #[test]
    fn addresses_and_peer_names() {
        assert_eq!(ip_of("10.0.0.1:80"), "10.0.0.1".parse().ok());
        assert_eq!(ip_of("[2001:db8::1]:443"), "2001:db8::1".parse().ok());
        assert_eq!(ip_of("2001:db8::1"), "2001:db8::1".parse().ok());
        assert_eq!(ip_of("nonsense"), None);
        let peer = Peer {
            uri_san: None,
            dns_san: Some("client.mesh".into()),
            subject: Some("CN=client".into()),
        };
        assert_eq!(peer.name(), "client.mesh");
        assert_eq!(Peer::default().name(), "");
    }
}
