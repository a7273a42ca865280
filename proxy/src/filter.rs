//! Filter chains: the proxy side of the proxy-wasm host. A chain's plugins are loaded when a
//! configuration snapshot is built (so a plugin that fails to load rejects the configuration
//! whole), and each request runs through them: request headers in order, response headers in
//! reverse order, as Envoy runs HTTP filters.
//!
//! Bodies and trailers are not yet handed to filters; a filter sees headers, can rewrite them,
//! answer locally, pause (resumed by `proxy_continue_stream`), read properties, and use shared
//! data, queues, metrics and logs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri};
use wasmesh_host::{
    Action, FailurePolicy, Host, HostConfig, HttpStream, LoadError, Plugin, PluginConfig, StreamEnv,
};

use crate::config::{self, FilterChain};
use crate::tls::identity::TlsInfo;

/// A loaded chain: its plugins in order.
pub type Chain = Arc<Vec<Arc<Plugin>>>;

/// Why a chain could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("filter chain \"{chain}\", plugin \"{plugin}\": cannot read {path}: {source}")]
    Read {
        chain: String,
        plugin: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("filter chain \"{chain}\": {source}")]
    Load {
        chain: String,
        #[source]
        source: LoadError,
    },
    #[error("filter chain \"{chain}\", plugin \"{plugin}\": unsupported source \"{source_ref}\"")]
    Source {
        chain: String,
        plugin: String,
        source_ref: String,
    },
}

/// The process's one Wasm host (one engine, one module cache, shared data for every plugin).
pub fn host() -> Result<&'static Arc<Host>, ChainError> {
    static HOST: OnceLock<Result<Arc<Host>, String>> = OnceLock::new();
    let host = HOST.get_or_init(|| {
        let cache_dir = std::env::var_os("WASMESH_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("wasmesh-module-cache"));
        Host::new(HostConfig {
            cache_dir: Some(cache_dir),
            max_instances: None,
        })
        .map_err(|e| e.to_string())
    });
    host.as_ref().map_err(|message| ChainError::Load {
        chain: "-".into(),
        source: LoadError::Engine(message.clone()),
    })
}

/// Loads every chain of a configuration.
pub fn load_chains(chains: &[FilterChain]) -> Result<HashMap<String, Chain>, ChainError> {
    let mut loaded = HashMap::new();
    for chain in chains {
        let mut plugins = Vec::with_capacity(chain.plugins.len());
        for p in &chain.plugins {
            plugins.push(load_plugin(&chain.name, p)?);
        }
        loaded.insert(chain.name.clone(), Arc::new(plugins));
    }
    Ok(loaded)
}

fn load_plugin(chain: &str, p: &config::Plugin) -> Result<Arc<Plugin>, ChainError> {
    let Some(path) = p.source.strip_prefix("file://") else {
        return Err(ChainError::Source {
            chain: chain.to_string(),
            plugin: p.name.clone(),
            source_ref: p.source.clone(),
        });
    };
    let wasm = std::fs::read(path).map_err(|source| ChainError::Read {
        chain: chain.to_string(),
        plugin: p.name.clone(),
        path: path.to_string(),
        source,
    })?;
    let plugin_config = match &p.config {
        None => Vec::new(),
        Some(serde_json::Value::String(s)) => s.as_bytes().to_vec(),
        Some(other) => serde_json::to_vec(other).unwrap_or_default(),
    };
    let replicas = std::thread::available_parallelism().map_or(2, |n| n.get());
    let cfg = PluginConfig {
        name: p.name.clone(),
        root_id: p.root_id.clone(),
        vm_id: p.vm_id.clone(),
        vm_config: Vec::new(),
        plugin_config,
        failure_policy: match p.failure_policy {
            config::FailurePolicy::FailOpen => FailurePolicy::FailOpen,
            config::FailurePolicy::FailClosed => FailurePolicy::FailClosed,
        },
        deadline: p.deadline,
        memory_limit: p.memory_limit,
        replicas,
    };
    host()?
        .load_plugin(cfg, &wasm)
        .map_err(|source| ChainError::Load {
            chain: chain.to_string(),
            source,
        })
}

/// Envoy's attributes for one request, answered to `proxy_get_property`.
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

/// The request head as filters see it: pseudo headers first, then the rest, names lowercase.
pub fn request_pairs(
    method: &Method,
    uri: &Uri,
    authority: &str,
    scheme: &str,
    headers: &HeaderMap,
) -> Vec<(String, Vec<u8>)> {
    let mut pairs = Vec::with_capacity(headers.len() + 4);
    pairs.push((":method".into(), method.as_str().as_bytes().to_vec()));
    pairs.push((
        ":path".into(),
        uri.path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes()
            .to_vec(),
    ));
    pairs.push((":authority".into(), authority.as_bytes().to_vec()));
    pairs.push((":scheme".into(), scheme.as_bytes().to_vec()));
    push_headers(&mut pairs, headers);
    pairs
}

pub fn response_pairs(status: StatusCode, headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut pairs = Vec::with_capacity(headers.len() + 1);
    pairs.push((":status".into(), status.as_str().as_bytes().to_vec()));
    push_headers(&mut pairs, headers);
    pairs
}

fn push_headers(pairs: &mut Vec<(String, Vec<u8>)>, headers: &HeaderMap) {
    for (name, value) in headers {
        pairs.push((name.as_str().to_string(), value.as_bytes().to_vec()));
    }
}

/// Writes filter-edited pairs back into a header map; pseudo headers are returned separately.
/// Names or values that are not valid HTTP are dropped (and logged) rather than forwarded.
pub fn apply_pairs(
    pairs: &[(String, Vec<u8>)],
    headers: &mut HeaderMap,
) -> HashMap<String, String> {
    headers.clear();
    let mut pseudo = HashMap::new();
    for (name, value) in pairs {
        if let Some(p) = name.strip_prefix(':') {
            pseudo.insert(p.to_string(), String::from_utf8_lossy(value).into_owned());
            continue;
        }
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => tracing::debug!(header = %name, "filter set an invalid header; dropped"),
        }
    }
    pseudo
}

/// The outcome of running one phase of a chain.
pub enum Phase {
    Continue,
    /// A filter answered itself.
    Respond(wasmesh_host::LocalResponse),
    /// A fail-closed filter failed.
    Failed(String),
}

/// Runs `on_request_headers` through the chain, starting a stream per plugin. `pairs` is
/// updated in place; streams that started are pushed onto `streams` (they must outlive the
/// request so their contexts end after it).
pub async fn request_headers(
    chain: &[Arc<Plugin>],
    env: &Arc<RequestAttributes>,
    pairs: &mut Vec<(String, Vec<u8>)>,
    end_of_stream: bool,
    pause_limit: Duration,
    streams: &mut Vec<HttpStream>,
) -> Phase {
    for plugin in chain {
        let env: Arc<dyn StreamEnv> = env.clone();
        let mut stream = match plugin.http_stream(env) {
            Ok(stream) => stream,
            Err(failure) => match plugin.failure_policy() {
                FailurePolicy::FailOpen => continue,
                FailurePolicy::FailClosed => return Phase::Failed(failure.to_string()),
            },
        };
        stream.data.request_headers = std::mem::take(pairs);
        let result = stream.on_request_headers(end_of_stream);
        match settle(&mut stream, result, pause_limit).await {
            Settled::Continue => {
                *pairs = std::mem::take(&mut stream.data.request_headers);
                streams.push(stream);
            }
            Settled::Respond(local) => {
                streams.push(stream);
                return Phase::Respond(local);
            }
            Settled::Failed(message) => {
                *pairs = std::mem::take(&mut stream.data.request_headers);
                if plugin.failure_policy() == FailurePolicy::FailClosed {
                    return Phase::Failed(message);
                }
            }
        }
    }
    Phase::Continue
}

/// Runs `on_response_headers` through the streams in reverse order.
pub async fn response_headers(
    streams: &mut [HttpStream],
    pairs: &mut Vec<(String, Vec<u8>)>,
    end_of_stream: bool,
    pause_limit: Duration,
) -> Phase {
    for stream in streams.iter_mut().rev() {
        stream.data.response_headers = std::mem::take(pairs);
        let result = stream.on_response_headers(end_of_stream);
        let policy = stream.plugin().failure_policy();
        match settle(stream, result, pause_limit).await {
            Settled::Continue => *pairs = std::mem::take(&mut stream.data.response_headers),
            Settled::Respond(local) => return Phase::Respond(local),
            Settled::Failed(message) => {
                *pairs = std::mem::take(&mut stream.data.response_headers);
                if policy == FailurePolicy::FailClosed {
                    return Phase::Failed(message);
                }
            }
        }
    }
    Phase::Continue
}

enum Settled {
    Continue,
    Respond(wasmesh_host::LocalResponse),
    Failed(String),
}

/// Turns a callback's result into what happens next: a pause waits for the filter to resume
/// (or answer) up to `pause_limit`.
async fn settle(
    stream: &mut HttpStream,
    result: Result<Action, wasmesh_host::FilterFailure>,
    pause_limit: Duration,
) -> Settled {
    match result {
        Err(failure) => Settled::Failed(failure.to_string()),
        Ok(action) => {
            if let Some(local) = stream.take_local_response() {
                return Settled::Respond(local);
            }
            if action == Action::Pause
                && tokio::time::timeout(pause_limit, stream.resumed())
                    .await
                    .is_err()
            {
                return Settled::Failed(format!(
                    "filter \"{}\" paused the stream and never resumed it",
                    stream.plugin().name()
                ));
            }
            match stream.take_local_response() {
                Some(local) => Settled::Respond(local),
                None => Settled::Continue,
            }
        }
    }
}
