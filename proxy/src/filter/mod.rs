//! Filter chains: the proxy side of the proxy-wasm host. A chain's plugins are loaded when a
//! configuration snapshot is built (so a plugin that fails to load rejects the configuration
//! whole), and each request runs through them: request headers in order, response headers in
//! reverse order, as Envoy runs HTTP filters.
//!
//! Bodies pass through `proxy_on_request_body`/`proxy_on_response_body` chunk by chunk (see
//! [`filter_body`]); trailers pass through untouched, not yet shown to filters.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
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

/// Filters' HTTP callouts (`proxy_http_call`), sent through the running snapshot's clusters:
/// the upstream name a filter gives is a cluster name, as in Envoy.
pub struct ClusterCallouts {
    pub snapshot: Arc<arc_swap::ArcSwap<crate::server::Snapshot>>,
}

/// Largest callout response body kept for a filter.
const MAX_CALLOUT_BODY: usize = 1024 * 1024;

impl wasmesh_host::Services for ClusterCallouts {
    fn http_call(
        &self,
        request: wasmesh_host::CalloutRequest,
        done: wasmesh_host::CalloutDone,
    ) -> Result<(), wasmesh_host::CalloutError> {
        let snapshot = self.snapshot.load_full();
        let cluster = snapshot
            .clusters
            .get(&request.upstream)
            .cloned()
            .ok_or_else(|| wasmesh_host::CalloutError::UnknownUpstream(request.upstream.clone()))?;
        let pseudo = |name: &str| {
            request
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let (Some(method), Some(path), Some(authority)) =
            (pseudo(":method"), pseudo(":path"), pseudo(":authority"))
        else {
            return Err(wasmesh_host::CalloutError::MissingPseudoHeaders);
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(wasmesh_host::CalloutError::UnknownUpstream(
                request.upstream,
            ));
        };
        runtime.spawn(async move {
            let timeout = if request.timeout.is_zero() {
                Duration::from_secs(5)
            } else {
                request.timeout
            };
            let response = tokio::time::timeout(
                timeout,
                callout(
                    &cluster,
                    &method,
                    &path,
                    &authority,
                    &request.headers,
                    request.body,
                ),
            )
            .await
            .ok()
            .flatten();
            done.complete(response);
        });
        Ok(())
    }
}

async fn callout(
    cluster: &crate::cluster::Cluster,
    method: &str,
    path: &str,
    authority: &str,
    pairs: &[(String, Vec<u8>)],
    body: Vec<u8>,
) -> Option<wasmesh_host::CalloutResponse> {
    use http_body_util::BodyExt;
    let upstream = cluster.pick(&HeaderMap::new())?;
    let uri = format!("{}://{authority}{path}", cluster.scheme);
    let mut builder = http::Request::builder().method(method).uri(uri);
    let h2 = cluster.config.protocol == config::UpstreamProtocol::Http2;
    for (name, value) in pairs {
        if !name.starts_with(':') {
            builder = builder.header(name.as_str(), value.as_slice());
        }
    }
    if !h2 {
        builder = builder.header(http::header::HOST, authority);
    }
    let request = builder.body(crate::body::full(body)).ok()?;
    let response = upstream.client.request(request).await.ok()?;
    let (parts, mut incoming) = response.into_parts();
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.ok()?;
        match frame.into_data() {
            Ok(data) => {
                if body.len() + data.len() > MAX_CALLOUT_BODY {
                    return None;
                }
                body.extend_from_slice(&data);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    push_headers(&mut trailers, &t);
                }
            }
        }
    }
    Some(wasmesh_host::CalloutResponse {
        headers: response_pairs(parts.status, &parts.headers),
        body,
        trailers,
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

/// A stream of one plugin for one request, shared by the header phases and the body filters.
pub type SharedStream = Arc<Mutex<HttpStream>>;

fn lock(stream: &SharedStream) -> MutexGuard<'_, HttpStream> {
    stream.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a filter asked for the route to be chosen again (`proxy_clear_route_cache`).
pub fn route_cache_cleared(streams: &[SharedStream]) -> bool {
    streams.iter().any(|s| lock(s).data.clear_route_cache)
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
    streams: &mut Vec<SharedStream>,
) -> Phase {
    for plugin in chain {
        let env: Arc<dyn StreamEnv> = env.clone();
        let stream = match plugin.http_stream(env) {
            Ok(stream) => Arc::new(Mutex::new(stream)),
            Err(failure) => match plugin.failure_policy() {
                FailurePolicy::FailOpen => continue,
                FailurePolicy::FailClosed => return Phase::Failed(failure.to_string()),
            },
        };
        let result = {
            let mut s = lock(&stream);
            s.data.request_headers = std::mem::take(pairs);
            s.on_request_headers(end_of_stream)
        };
        let settled = settle(&stream, result, pause_limit).await;
        *pairs = std::mem::take(&mut lock(&stream).data.request_headers);
        match settled {
            Settled::Continue => streams.push(stream),
            Settled::Respond(local) => {
                streams.push(stream);
                return Phase::Respond(local);
            }
            Settled::Failed(message) => {
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
    streams: &[SharedStream],
    pairs: &mut Vec<(String, Vec<u8>)>,
    end_of_stream: bool,
    pause_limit: Duration,
) -> Phase {
    for stream in streams.iter().rev() {
        let (result, policy) = {
            let mut s = lock(stream);
            s.data.response_headers = std::mem::take(pairs);
            (
                s.on_response_headers(end_of_stream),
                s.plugin().failure_policy(),
            )
        };
        let settled = settle(stream, result, pause_limit).await;
        *pairs = std::mem::take(&mut lock(stream).data.response_headers);
        match settled {
            Settled::Continue => {}
            Settled::Respond(local) => return Phase::Respond(local),
            Settled::Failed(message) => {
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

/// Turns a callback's result into what happens next: a pause waits (without holding the
/// stream's lock) for the filter to resume or answer, up to `pause_limit`.
async fn settle(
    stream: &SharedStream,
    result: Result<Action, wasmesh_host::FilterFailure>,
    pause_limit: Duration,
) -> Settled {
    if let Err(failure) = result {
        return Settled::Failed(failure.to_string());
    }
    let (paused, waiter, name) = {
        let s = lock(stream);
        (
            s.is_paused(),
            s.resume_waiter(),
            s.plugin().name().to_string(),
        )
    };
    // A paused stream's data stays with its VM (a callout answer may still edit it) until the
    // filter resumes it or answers for it.
    if paused
        && tokio::time::timeout(pause_limit, waiter.wait())
            .await
            .is_err()
    {
        lock(stream).unpark();
        return Settled::Failed(format!(
            "filter \"{name}\" paused the stream and never resumed it"
        ));
    }
    match lock(stream).take_local_response() {
        Some(local) => Settled::Respond(local),
        None => Settled::Continue,
    }
}

/// Which way a body flows, and so which callbacks see it and in what order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Request bodies: `proxy_on_request_body`, in chain order.
    Request,
    /// Response bodies: `proxy_on_response_body`, in reverse order.
    Response,
}

/// Passes a body through the filters' body callbacks chunk by chunk. A filter that returns
/// `Pause` before the end has its input buffered and is called again with everything buffered
/// when more arrives (Envoy's `StopIterationAndBuffer`); what it leaves in the buffer when it
/// continues is what flows on. A failing fail-closed filter aborts the body (the peer sees a
/// reset); a fail-open one is bypassed. Trailers pass through untouched.
pub fn filter_body(
    body: crate::body::ProxyBody,
    streams: Vec<SharedStream>,
    direction: Direction,
) -> crate::body::ProxyBody {
    use http_body_util::BodyExt;
    let mut streams = streams;
    if direction == Direction::Response {
        streams.reverse();
    }
    let buffers = vec![Vec::new(); streams.len()];
    BodyFilter {
        inner: body,
        streams,
        buffers,
        bypass: Vec::new(),
        direction,
        finished: false,
    }
    .boxed_unsync()
}

pin_project_lite::pin_project! {
    struct BodyFilter {
        #[pin]
        inner: crate::body::ProxyBody,
        streams: Vec<SharedStream>,
        buffers: Vec<Vec<u8>>,
        bypass: Vec<usize>,
        direction: Direction,
        finished: bool,
    }
}

/// Runs `data` through filters `0..` of the chain; `None` means a filter is buffering it.
fn run_chain(
    streams: &[SharedStream],
    buffers: &mut [Vec<u8>],
    bypass: &mut Vec<usize>,
    direction: Direction,
    mut data: Vec<u8>,
    end_of_stream: bool,
) -> Result<Option<Vec<u8>>, String> {
    for (i, stream) in streams.iter().enumerate() {
        if bypass.contains(&i) {
            continue;
        }
        let mut s = lock(stream);
        let mut input = std::mem::take(&mut buffers[i]);
        input.extend_from_slice(&data);
        let result = match direction {
            Direction::Request => {
                s.data.request_body = input;
                let r = s.on_request_body(end_of_stream);
                data = std::mem::take(&mut s.data.request_body);
                r
            }
            Direction::Response => {
                s.data.response_body = input;
                let r = s.on_response_body(end_of_stream);
                data = std::mem::take(&mut s.data.response_body);
                r
            }
        };
        match result {
            Ok(Action::Pause) if !end_of_stream => {
                buffers[i] = data;
                return Ok(None);
            }
            Ok(_) => {}
            Err(failure) => {
                if s.plugin().failure_policy() == FailurePolicy::FailClosed {
                    return Err(failure.to_string());
                }
                bypass.push(i);
            }
        }
    }
    Ok(Some(data))
}

impl http_body::Body for BodyFilter {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        let mut this = self.project();
        loop {
            if *this.finished {
                return Poll::Ready(None);
            }
            let frame = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            let (data, eos, trailers) = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => (data.to_vec(), false, None),
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => (Vec::new(), true, Some(trailers)),
                        Err(_) => continue,
                    },
                },
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => (Vec::new(), true, None),
            };
            if eos {
                *this.finished = true;
            }
            match run_chain(
                this.streams,
                this.buffers,
                this.bypass,
                *this.direction,
                data,
                eos,
            ) {
                Err(message) => {
                    tracing::warn!(error = %message, "filter failed on the body; aborting it (fail_closed)");
                    *this.finished = true;
                    return Poll::Ready(Some(Err(message.into())));
                }
                Ok(None) => continue,
                Ok(Some(out)) => {
                    if let Some(trailers) = trailers {
                        if out.is_empty() {
                            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
                        }
                        // The last data goes out first; the trailers follow on the next poll.
                        *this.finished = false;
                        *this.inner = crate::body::trailers_only(trailers);
                        return Poll::Ready(Some(Ok(http_body::Frame::data(out.into()))));
                    }
                    if out.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(http_body::Frame::data(out.into()))));
                }
            }
        }
    }
}
