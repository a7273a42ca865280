//! Filter chains: the proxy side of the proxy-wasm host. A chain's plugins are loaded when a
//! configuration snapshot is built ([`chain`]), and each request runs through them: request
//! headers in order, response headers in reverse order, as Envoy runs HTTP filters.
//!
//! - [`chain`]: loading chains (fetch, compile, instantiate), sharing unchanged plugins across
//!   reloads; [`source`]: where modules come from (`file://`, `oci://`).
//! - [`attributes`]: Envoy's attributes answered to `proxy_get_property`; [`pairs`]: header maps
//!   as filters see them; [`callout`]: `proxy_http_call` through the proxy's clusters;
//!   [`grpc`]: `proxy_grpc_call` and `proxy_grpc_stream` through them, over HTTP/2.
//! - this module: the header phases; [`body`]: bodies and trailers through their callbacks,
//!   chunk by chunk.

pub mod attributes;
pub mod body;
pub mod callout;
pub mod chain;
pub mod grpc;
pub mod pairs;
pub mod source;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use wasmesh_host::{Action, FailurePolicy, HttpStream, Plugin, StreamEnv};

pub use attributes::RequestAttributes;
pub use body::{BodyLimits, Direction, filter_body};
pub use callout::ClusterCallouts;
pub use chain::{Chain, ChainError, LoadMode, host, load_chains};
pub use pairs::{apply_pairs, apply_request_pairs, request_pairs, response_pairs};

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
    /// A filter closed the stream (`proxy_close_stream`): it is reset, nothing is answered.
    Reset,
}

/// Starts `plugin`'s stream for a request, on the calling worker's replica.
fn start(
    plugin: &Arc<Plugin>,
    env: &Arc<RequestAttributes>,
) -> Result<HttpStream, wasmesh_host::FilterFailure> {
    let env: Arc<dyn StreamEnv> = env.clone();
    match crate::workers::current() {
        Some(worker) => plugin.http_stream_on(worker, env),
        None => plugin.http_stream(env),
    }
}

/// Runs `on_request_headers` through the chain, starting a stream per plugin. `pairs` is
/// updated in place; streams that started are pushed onto `streams` (they must outlive the
/// request so their contexts end after it). When a filter answers or fails closed, the plugins
/// after it never see the request, but each still gets a stream in `bystanders`, fed nothing:
/// as in Envoy, every filter of the chain logs every request (`proxy_on_log`), so an access
/// log anywhere in the chain sees the 401 or 429 an earlier filter sent.
pub async fn request_headers(
    chain: &[Arc<Plugin>],
    env: &Arc<RequestAttributes>,
    pairs: &mut Vec<(String, Vec<u8>)>,
    end_of_stream: bool,
    pause_limit: Duration,
    streams: &mut Vec<SharedStream>,
    bystanders: &mut Vec<HttpStream>,
) -> Phase {
    let rest = |from: usize, bystanders: &mut Vec<HttpStream>| {
        bystanders.extend(chain[from..].iter().filter_map(|p| start(p, env).ok()));
    };
    for (i, plugin) in chain.iter().enumerate() {
        let stream = match start(plugin, env) {
            Ok(stream) => Arc::new(Mutex::new(stream)),
            Err(failure) => match plugin.failure_policy() {
                FailurePolicy::FailOpen => continue,
                FailurePolicy::FailClosed => {
                    rest(i + 1, bystanders);
                    return Phase::Failed(failure.to_string());
                }
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
                rest(i + 1, bystanders);
                return Phase::Respond(local);
            }
            Settled::Failed(message) => {
                if plugin.failure_policy() == FailurePolicy::FailClosed {
                    rest(i + 1, bystanders);
                    return Phase::Failed(message);
                }
            }
            Settled::Reset => {
                streams.push(stream);
                rest(i + 1, bystanders);
                return Phase::Reset;
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
            // An upstream may answer before the request body is through: a filter still
            // holding that body paused gives its data back for the response (what it does
            // with its pause from then on cannot change what the upstream answered).
            if s.is_paused() {
                s.unpark();
            }
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
            Settled::Reset => return Phase::Reset,
        }
    }
    Phase::Continue
}

/// What one filter's callback came to, once any pause it made is over.
pub(crate) enum Settled {
    Continue,
    Respond(wasmesh_host::LocalResponse),
    Failed(String),
    Reset,
}

/// Turns a callback's result into what happens next: a pause waits (without holding the
/// stream's lock) for the filter to resume or answer, up to `pause_limit`.
async fn settle(
    stream: &SharedStream,
    result: Result<Action, wasmesh_host::FilterFailure>,
    pause_limit: Duration,
) -> Settled {
    let asked = matches!(result, Ok(Action::Pause));
    if let Err(failure) = result {
        return Settled::Failed(failure.to_string());
    }
    // Paused by this callback (its data is with the VM), not still by an earlier one.
    let paused = asked && lock(stream).is_paused();
    let resumed = match paused {
        true => Some(resumption(stream, pause_limit).await),
        false => None,
    };
    resolve(stream, resumed)
}

/// Waits for a paused stream to be resumed, up to `limit`: `true` if it was (or the filter
/// closed it, which needs no wait). A paused stream's data stays with its VM meanwhile (a
/// callout answer may still edit it) until the filter resumes it or answers for it — or its
/// replica fails, which wakes it too. The future holds no lock and borrows nothing, so a body
/// can keep it across polls.
pub(crate) fn resumption(
    stream: &SharedStream,
    limit: Duration,
) -> impl std::future::Future<Output = bool> + Send + 'static {
    let (closed, waiter) = {
        let s = lock(stream);
        (s.peek(|data| data.close_requested), s.resume_waiter())
    };
    async move { closed || tokio::time::timeout(limit, waiter.wait()).await.is_ok() }
}

/// What a callback came to, once its stream is settled: `resumed` is `None` when it did not
/// pause, else whether it was resumed in time (see [`resumption`]). Brings the stream's data
/// back from its VM.
pub(crate) fn resolve(stream: &SharedStream, resumed: Option<bool>) -> Settled {
    let mut s = lock(stream);
    if let Some(resumed) = resumed {
        // A closed stream is reset, paused or not (its data may be with the VM).
        if s.peek(|data| data.close_requested) {
            s.unpark();
            return Settled::Reset;
        }
        if s.replica_failed() {
            s.unpark();
            return Settled::Failed(format!(
                "filter \"{}\" failed while the stream was paused",
                s.plugin().name()
            ));
        }
        if !resumed {
            s.unpark();
            return Settled::Failed(format!(
                "filter \"{}\" paused the stream and never resumed it",
                s.plugin().name()
            ));
        }
    }
    s.unpark();
    // Envoy resets a closed stream even if the filter also answered.
    if s.data.close_requested {
        return Settled::Reset;
    }
    match s.take_local_response() {
        Some(local) => Settled::Respond(local),
        None => Settled::Continue,
    }
}

/// What filters may ask of the router for one request, through filter state
/// (`proxy_set_property`, values as UTF-8 text): the stock `retry-hints` filter maps Envoy's
/// `x-envoy-retry-on`-style request headers onto these keys. A later filter's value replaces
/// an earlier one's; a value that does not parse is ignored.
///
/// | key | value |
/// |---|---|
/// | `wasmesh.retry_on` | comma-separated `connect-failure`, `reset`, `5xx`, `gateway-error`, `retriable-status-codes` |
/// | `wasmesh.num_retries` | retries (at most 10) |
/// | `wasmesh.per_try_timeout_ms` | each attempt's limit |
/// | `wasmesh.retriable_status_codes` | comma-separated status codes |
/// | `wasmesh.timeout_ms` | the request's timeout (until the response is complete, retries included; `0`: none) |
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RouterHints {
    pub retry: Option<crate::config::RetryPolicy>,
    pub timeout: Option<Duration>,
}

/// Most retries a hint may ask for (the configuration's own limit).
const MAX_HINTED_RETRIES: u32 = 10;
/// Longest timeout a hint may ask for.
const MAX_HINTED_TIMEOUT: Duration = Duration::from_secs(3600);

/// Reads the router hints the filters left in the request's filter state, on top of the
/// route's own retry policy.
pub fn router_hints(
    filter_state: &wasmesh_host::FilterState,
    route_retry: Option<&crate::config::RetryPolicy>,
) -> RouterHints {
    use crate::config::{RetryOn, RetryPolicy};
    let mut state: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for (key, value) in filter_state.entries() {
        if key.starts_with("wasmesh.")
            && let Ok(text) = std::str::from_utf8(&value)
        {
            state.insert(key, text.trim().to_string());
        }
    }
    let millis = |key: &str| {
        state
            .get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    let mut hints = RouterHints {
        timeout: millis("wasmesh.timeout_ms").map(|t| t.min(MAX_HINTED_TIMEOUT)),
        retry: None,
    };
    let retry_on = state.get("wasmesh.retry_on").map(|v| {
        v.split(',')
            .filter_map(|t| serde_json::from_value::<RetryOn>(t.trim().into()).ok())
            .collect::<Vec<_>>()
    });
    let num_retries = state
        .get("wasmesh.num_retries")
        .and_then(|v| v.parse::<u32>().ok());
    let per_try = millis("wasmesh.per_try_timeout_ms");
    let codes = state.get("wasmesh.retriable_status_codes").map(|v| {
        v.split(',')
            .filter_map(|c| c.trim().parse::<u16>().ok())
            .collect::<Vec<_>>()
    });
    if retry_on.is_none() && num_retries.is_none() && per_try.is_none() && codes.is_none() {
        return hints;
    }
    let mut policy = route_retry.cloned().unwrap_or(RetryPolicy {
        retry_on: Vec::new(),
        num_retries: 1,
        per_try_timeout: None,
        retriable_status_codes: Vec::new(),
        base_interval: Duration::from_millis(25),
    });
    if let Some(retry_on) = retry_on {
        policy.retry_on = retry_on;
    }
    if let Some(n) = num_retries {
        policy.num_retries = n.min(MAX_HINTED_RETRIES);
    }
    if per_try.is_some() {
        policy.per_try_timeout = per_try;
    }
    if let Some(codes) = codes {
        policy.retriable_status_codes = codes;
    }
    hints.retry = Some(policy);
    hints
}
