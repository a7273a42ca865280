//! Envoy's attributes for one request, answered to `proxy_get_property`, with Envoy's
//! encodings: strings as bytes, integers as 8-byte little-endian, booleans as one byte,
//! timestamps as nanoseconds since the Unix epoch and durations as nanoseconds (both 8-byte
//! little-endian integers).
//!
//! Most attributes are known when the request arrives; the response's (`response.code`,
//! `response.size`, `response.flags`, `upstream.address`) and the sizes are recorded as the
//! request goes, so a filter's `on_log` sees the whole exchange.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmesh_host::{FilterState, HeaderMap, KeptHeaders, StreamEnv};

use crate::tls::identity::TlsInfo;

pub struct RequestAttributes {
    pub method: String,
    pub path: String,
    pub host: String,
    pub scheme: &'static str,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    pub id: Option<String>,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub tls: Option<Arc<TlsInfo>>,
    /// The route and cluster chosen; a filter clearing the route cache may change them.
    routing: Mutex<Routing>,
    pub listener_name: String,
    /// When the request arrived (`request.time`), and the clock `request.duration` runs on.
    pub start_time: SystemTime,
    pub start: Instant,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    response: Mutex<ResponseFacts>,
    /// What the request's filters set for each other (and for the router: `RouterHints`).
    pub filter_state: FilterState,
    /// The request's and response's headers as they went on after their headers phase, and
    /// the response's trailers after theirs, for filters that read them later (each filter's
    /// own maps are moved on to the next).
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    request: Option<HeaderMap>,
    response: Option<HeaderMap>,
    response_trailers: Option<HeaderMap>,
}

#[derive(Debug, Clone)]
struct Routing {
    route: String,
    cluster: String,
}

/// What is learnt about the response as it is produced.
#[derive(Debug, Default, Clone)]
struct ResponseFacts {
    code: Option<u16>,
    flags: u64,
    upstream: Option<Arc<str>>,
}

/// What a request brings, before it is forwarded.
pub struct Request<'a> {
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub version: http::Version,
    pub headers: &'a http::HeaderMap,
    pub host: &'a str,
    pub scheme: &'static str,
}

impl RequestAttributes {
    pub fn new(
        request: Request<'_>,
        connection: &crate::forward::ConnectionInfo,
        route_name: &str,
        cluster_name: &str,
        listener_name: &str,
    ) -> RequestAttributes {
        let header = |name: http::header::HeaderName| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        RequestAttributes {
            method: request.method.to_string(),
            path: request
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            host: request.host.to_string(),
            scheme: request.scheme,
            protocol: match request.version {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/1.1",
            },
            id: header(http::header::HeaderName::from_static("x-request-id")),
            user_agent: header(http::header::USER_AGENT),
            referer: header(http::header::REFERER),
            source: connection.peer,
            destination: connection.local,
            tls: connection.tls.clone(),
            routing: Mutex::new(Routing {
                route: route_name.to_string(),
                cluster: cluster_name.to_string(),
            }),
            listener_name: listener_name.to_string(),
            start_time: SystemTime::now(),
            start: Instant::now(),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            response: Mutex::new(ResponseFacts::default()),
            filter_state: FilterState::new(),
            kept: Mutex::new(Kept::default()),
        }
    }

    /// Keeps the request headers as the filters left them, for the filters' later callbacks
    /// (moved, not copied).
    pub fn keep_request_headers(&self, headers: HeaderMap) {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).request = Some(headers);
    }

    /// Keeps the response headers as the filters left them, for the filters' later callbacks.
    pub fn keep_response_headers(&self, headers: HeaderMap) {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).response = Some(headers);
    }

    /// Keeps the response trailers as the filters left them, for `on_log` and the
    /// `response.trailers` attribute.
    pub fn keep_response_trailers(&self, trailers: HeaderMap) {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .response_trailers = Some(trailers);
    }

    /// Records the response about to go downstream: its status, Envoy's response flags (why
    /// the proxy answered itself, if it did) and the upstream that answered, if one did.
    pub fn record_response(&self, code: u16, flags: u64, upstream: Option<Arc<str>>) {
        let mut facts = self.response.lock().unwrap_or_else(|e| e.into_inner());
        facts.code = Some(code);
        facts.flags = flags;
        facts.upstream = upstream;
    }

    /// Records the route and cluster chosen again after a filter cleared the route cache.
    pub fn set_route(&self, route_name: &str, cluster_name: &str) {
        let mut routing = self.routing.lock().unwrap_or_else(|e| e.into_inner());
        routing.route = route_name.to_string();
        routing.cluster = cluster_name.to_string();
    }

    fn routing(&self) -> Routing {
        self.routing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts request body bytes received from the client.
    pub fn count_request_bytes(&self, n: usize) {
        self.request_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts response body bytes sent to the client.
    pub fn count_response_bytes(&self, n: usize) {
        self.response_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn facts(&self) -> ResponseFacts {
        self.response
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn nanos_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl StreamEnv for RequestAttributes {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let text = |s: &str| Some(s.as_bytes().to_vec());
        let int = |n: i64| Some(n.to_le_bytes().to_vec());
        match path {
            ["request", "path"] => text(&self.path),
            ["request", "url_path"] => text(self.path.split('?').next().unwrap_or("")),
            ["request", "query"] => text(self.path.split_once('?').map_or("", |(_, q)| q)),
            ["request", "method"] => text(&self.method),
            ["request", "host"] => text(&self.host),
            ["request", "scheme"] => text(self.scheme),
            ["request", "protocol"] => text(self.protocol),
            ["request", "id"] => self.id.as_deref().and_then(text),
            ["request", "useragent"] => self.user_agent.as_deref().and_then(text),
            ["request", "referer"] => self.referer.as_deref().and_then(text),
            ["request", "time"] => int(nanos_since_epoch(self.start_time)),
            ["request", "duration"] => {
                int(i64::try_from(self.start.elapsed().as_nanos()).unwrap_or(i64::MAX))
            }
            ["request", "size"] => {
                int(i64::try_from(self.request_bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX))
            }
            ["response", "code"] => self.facts().code.and_then(|c| int(i64::from(c))),
            ["response", "flags"] => self
                .facts()
                .code
                .and_then(|_| int(i64::try_from(self.facts().flags).unwrap_or(i64::MAX))),
            ["response", "size"] => {
                int(i64::try_from(self.response_bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX))
            }
            ["upstream", "address"] => self.facts().upstream.as_deref().and_then(text),
            ["upstream", "port"] => self.facts().upstream.as_deref().and_then(|a| {
                a.rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<i64>().ok())
                    .and_then(int)
            }),
            ["route_name"] => text(&self.routing().route),
            ["cluster_name"] => text(&self.routing().cluster),
            ["listener_name"] | ["xds", "listener_name"] => text(&self.listener_name),
            other => connection_property(self.source, self.destination, &self.tls, other),
        }
    }

    fn filter_state(&self) -> Option<&FilterState> {
        Some(&self.filter_state)
    }

    fn kept_headers(&self, which: KeptHeaders) -> Option<HeaderMap> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        match which {
            KeptHeaders::Request => kept.request.clone(),
            KeptHeaders::Response => kept.response.clone(),
            KeptHeaders::ResponseTrailers => kept.response_trailers.clone(),
        }
    }
}

/// The attributes of the connection a request or a network stream came on:
/// `source.*`, `destination.*`, `connection.*`.
fn connection_property(
    source: SocketAddr,
    destination: SocketAddr,
    tls: &Option<Arc<TlsInfo>>,
    path: &[&str],
) -> Option<Vec<u8>> {
    let text = |s: &str| Some(s.as_bytes().to_vec());
    let int = |n: i64| Some(n.to_le_bytes().to_vec());
    let peer = tls.as_ref().and_then(|t| t.peer.as_ref());
    match path {
        ["source", "address"] => text(&source.to_string()),
        ["source", "port"] => int(i64::from(source.port())),
        ["destination", "address"] => text(&destination.to_string()),
        ["destination", "port"] => int(i64::from(destination.port())),
        ["connection", "mtls"] => Some(vec![u8::from(peer.is_some())]),
        ["connection", "tls_version"] => tls.as_ref().and_then(|t| t.version).and_then(text),
        ["connection", "requested_server_name"] => {
            tls.as_ref().and_then(|t| t.sni.as_deref()).and_then(text)
        }
        ["connection", "uri_san_peer_certificate"] => peer
            .and_then(|p| p.uri_sans.first())
            .map(|s| s.as_bytes().to_vec()),
        ["connection", "dns_san_peer_certificate"] => peer
            .and_then(|p| p.dns_sans.first())
            .map(|s| s.as_bytes().to_vec()),
        ["connection", "subject_peer_certificate"] => peer.map(|p| p.subject.as_bytes().to_vec()),
        _ => None,
    }
}

/// What a network (TCP) filter can ask about its connection.
pub struct ConnectionAttributes {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub tls: Option<Arc<TlsInfo>>,
    pub listener_name: String,
    pub cluster_name: String,
    upstream: Mutex<Option<String>>,
    /// What the connection's network filters set for each other.
    pub filter_state: FilterState,
}

impl ConnectionAttributes {
    pub fn new(
        connection: &crate::forward::ConnectionInfo,
        listener_name: &str,
        cluster_name: &str,
    ) -> ConnectionAttributes {
        ConnectionAttributes {
            source: connection.peer,
            destination: connection.local,
            tls: connection.tls.clone(),
            listener_name: listener_name.to_string(),
            cluster_name: cluster_name.to_string(),
            upstream: Mutex::new(None),
            filter_state: FilterState::new(),
        }
    }

    /// Records the endpoint the connection was joined to (`upstream.address`).
    pub fn set_upstream(&self, address: &str) {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner()) = Some(address.to_string());
    }
}

impl StreamEnv for ConnectionAttributes {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let upstream = || {
            self.upstream
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        match path {
            ["listener_name"] | ["xds", "listener_name"] => {
                Some(self.listener_name.as_bytes().to_vec())
            }
            ["cluster_name"] => Some(self.cluster_name.as_bytes().to_vec()),
            ["upstream", "address"] => upstream().map(String::into_bytes),
            ["upstream", "port"] => upstream()
                .and_then(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse::<i64>().ok()))
                .map(|p| p.to_le_bytes().to_vec()),
            other => connection_property(self.source, self.destination, &self.tls, other),
        }
    }

    fn filter_state(&self) -> Option<&FilterState> {
        Some(&self.filter_state)
    }
}
