//! The forwarding path: one downstream request in, one response out.
//!
//! Route → cluster → endpoint, with the request's headers made fit for the next hop (hop-by-hop
//! headers stripped, `x-forwarded-*` and `x-request-id` added), circuit breakers checked, the
//! per-route timeout and retry policy applied, outcomes fed to outlier detection, and the
//! response streamed back. `Upgrade` requests (WebSocket) are spliced byte for byte after a 101.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::Rng;

use crate::body::{self, ProxyBody};
use crate::cluster::Cluster;
use crate::cluster::breaker::Permit;
use crate::cluster::connector::ConnectError;
use crate::cluster::endpoint::{Endpoint, InFlight};
use crate::cluster::outlier::Outcome;
use crate::cluster::pool::{PoolError, PooledBody};
use crate::config::{RetryOn, RetryPolicy};
use crate::filter::body::Interrupt;
use crate::filter::{self, Phase, RequestAttributes};
use crate::route::Route;
use crate::server::Snapshot;
use crate::tls::identity::TlsInfo;

/// Bodies up to this size are kept so that a failed attempt can be retried.
const RETRY_BUFFER_LIMIT: u64 = 64 * 1024;

/// What a listener contributes to each of its requests.
pub struct ListenerContext {
    pub name: Arc<str>,
    pub route_config: String,
    /// Set for a TCP listener: its connections are relayed to this cluster.
    pub tcp_proxy: Option<crate::config::TcpProxy>,
    pub filter_chain: Option<String>,
    pub forward_client_cert: bool,
    /// Request bodies longer than this get 413 (`max_request_body_bytes`).
    pub max_request_body_bytes: Option<u64>,
    /// Most of a body one filter may hold buffered (`filter_buffer_limit_bytes`).
    pub filter_buffer_limit: usize,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub requests: Arc<tokio::sync::Semaphore>,
    pub metrics: crate::observe::RequestMetrics,
}

/// What a downstream connection contributes to each of its requests.
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: Option<Arc<TlsInfo>>,
    /// The peer's IP as a header value, made once per connection for `x-forwarded-for`.
    client_ip: HeaderValue,
    /// An upgraded exchange to relay once the HTTP/1.1 connection has handed its socket
    /// over (see [`ConnectionInfo::take_upgraded`]).
    upgraded: std::sync::Mutex<Option<Splice>>,
    /// An HTTP/2 connection's streams in flight, for its idle timeout.
    pub streams: StreamActivity,
}

/// How many HTTP/2 streams a connection has in flight (from the request until its response
/// body is done), and when the last one ended: the connection is idle while it has none, as
/// Envoy counts idleness.
#[derive(Debug)]
pub struct StreamActivity {
    active: std::sync::atomic::AtomicUsize,
    /// Milliseconds from `opened` to the end of the last stream.
    last_end: std::sync::atomic::AtomicU64,
    opened: tokio::time::Instant,
}

impl StreamActivity {
    fn new() -> StreamActivity {
        StreamActivity {
            active: std::sync::atomic::AtomicUsize::new(0),
            last_end: std::sync::atomic::AtomicU64::new(0),
            opened: tokio::time::Instant::now(),
        }
    }

    /// Since when the connection has had no stream in flight; `None` while it has one.
    pub fn idle_since(&self) -> Option<tokio::time::Instant> {
        use std::sync::atomic::Ordering;
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.last_end.load(Ordering::Acquire);
        Some(self.opened + Duration::from_millis(ms))
    }
}

/// One stream in flight on an HTTP/2 connection (see [`StreamActivity`]); it ends on drop.
pub struct ActiveStream(Arc<ConnectionInfo>);

impl ActiveStream {
    /// The stream of `req` if it came over HTTP/2 (HTTP/1.1 has hyper's header read timeout
    /// between requests instead). Taken when hyper hands the request over, before its task
    /// first runs, so a connection is never seen idle with a request just accepted.
    pub fn for_request<B>(conn: &Arc<ConnectionInfo>, req: &Request<B>) -> Option<ActiveStream> {
        (req.version() == Version::HTTP_2).then(|| ActiveStream::start(conn))
    }

    pub(crate) fn start(conn: &Arc<ConnectionInfo>) -> ActiveStream {
        conn.streams
            .active
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        ActiveStream(conn.clone())
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        let streams = &self.0.streams;
        let ms = streams.opened.elapsed().as_millis() as u64;
        streams.last_end.fetch_max(ms, Ordering::AcqRel);
        streams.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The bytes of an upgraded exchange, relayed both ways until it ends.
pub type Splice = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl ConnectionInfo {
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: Option<Arc<TlsInfo>>) -> ConnectionInfo {
        let client_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        ConnectionInfo {
            peer,
            local,
            tls,
            client_ip,
            upgraded: std::sync::Mutex::new(None),
            streams: StreamActivity::new(),
        }
    }

    /// The upgraded exchange a request on this connection agreed to, for the connection's
    /// task to run once hyper is done with the connection: run there, it stays within the
    /// listener's limits and drains.
    pub fn take_upgraded(&self) -> Option<Splice> {
        self.upgraded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// A filter closed the stream (`proxy_close_stream`). As in Envoy, the stream is reset and no
/// response is sent: an HTTP/1.1 connection closes, an HTTP/2 stream gets `RST_STREAM`.
#[derive(Debug, thiserror::Error)]
#[error("a filter closed the stream")]
pub struct StreamReset;

/// A response, or the stream reset instead.
type Answer = Result<Response<ProxyBody>, StreamReset>;

/// Handles one request. Errors become local replies; the one `Err` is a filter's
/// [`StreamReset`].
/// `active` is the request's stream on an HTTP/2 connection, counted from when hyper took it
/// ([`ActiveStream::for_request`]) until the response body is done.
pub async fn handle(
    listener: Arc<ListenerContext>,
    conn: Arc<ConnectionInfo>,
    req: Request<Incoming>,
    active: Option<ActiveStream>,
) -> Answer {
    let start = Instant::now();
    // A request keeps the snapshot it started with, whatever reloads happen meanwhile.
    let snapshot = listener.snapshot.load_full();
    let (route_name, response, permit) = match listener.requests.clone().try_acquire_owned() {
        Ok(permit) => {
            let (route, response) = route_and_forward(&listener, &snapshot, &conn, req).await;
            (route, response, Some(permit))
        }
        Err(_) => (no_route(), Ok(overloaded("listener_max_requests")), None),
    };
    let response = match response {
        Ok(response) => response,
        Err(reset) => {
            // Envoy logs a reset stream's response code as 0.
            listener.metrics.record(&route_name, 0, start.elapsed());
            return Err(reset);
        }
    };
    // The listener's in-flight slot, and the snapshot, are held until the response body is
    // done: the snapshot's last user is then the control plane's reaper, never a request, so
    // retiring its filters never stalls a worker.
    let response = hold_until_done(response, (permit, snapshot, active));
    listener
        .metrics
        .record(&route_name, response.status().as_u16(), start.elapsed());
    Ok(response)
}

/// The route name requests are counted under when none matched.
fn no_route() -> Arc<str> {
    static NO_ROUTE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("-"));
    NO_ROUTE.clone()
}

async fn route_and_forward(
    listener: &ListenerContext,
    snapshot: &Snapshot,
    conn: &ConnectionInfo,
    mut req: Request<Incoming>,
) -> (Arc<str>, Answer) {
    let Some(table) = snapshot.route_tables.get(&listener.route_config) else {
        return (
            no_route(),
            Ok(local_reply(StatusCode::NOT_FOUND, "no route configuration")),
        );
    };
    // Where the request goes is decided by its authority, so a request whose authority is
    // missing, repeated or malformed goes nowhere (RFC 9112 §3.2), as in nginx and Envoy.
    let mut authority = match request_authority(&mut req) {
        Ok(authority) => authority,
        Err(bad) => {
            let reply = closing_reply(req.version(), StatusCode::BAD_REQUEST, bad.message());
            return (no_route(), Ok(reply));
        }
    };
    if req.version() < Version::HTTP_2 && foreign_transfer_coding(req.headers()) {
        let reply = closing_reply(
            req.version(),
            StatusCode::NOT_IMPLEMENTED,
            "transfer coding not implemented",
        );
        return (no_route(), Ok(reply));
    } else if req.version() == Version::HTTP_2 {
        join_cookies(req.headers_mut());
    }
    // The route is matched on the request as it will be sent (forwarding headers added,
    // hop-by-hop ones gone), as Envoy mutates headers before it routes; a filter's re-match
    // then sees the same headers the first match did.
    let upgrade = is_upgrade(&req);
    prepare_headers(req.headers_mut(), listener, conn, upgrade, &authority);
    let Some(mut route) = table.select(&authority, req.uri().path(), req.headers()) else {
        return (
            no_route(),
            Ok(local_reply(StatusCode::NOT_FOUND, "no route matched")),
        );
    };

    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, incoming) = req.into_parts();
    // A body declared longer than the listener takes is refused before anything else runs;
    // one that only turns out longer is cut off where it passes the limit.
    if let Some(max) = listener.max_request_body_bytes
        && incoming.size_hint().lower() > max
    {
        return (route.name.clone(), Ok(payload_too_large(parts.version)));
    }
    // Whose fault a failed upstream request was: a body that failed downstream (malformed,
    // cut off, too large) is the client's, never counted against the upstream endpoint.
    let watch = Arc::new(body::BodyWatch::default());
    let max_body = listener.max_request_body_bytes;
    // Filters run on the request as the router would send it, and may re-route it.
    let chain = match filter_chain(snapshot, listener, route) {
        Ok(chain) => chain,
        Err(reason) => {
            tracing::warn!(route = %route.name, error = %reason, "answering 503 (fail_closed)");
            return (
                route.name.clone(),
                Ok(local_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "filter unavailable",
                )),
            );
        }
    };
    let mut streams = Vec::new();
    let mut bystanders = Vec::new();
    let mut attributes: Option<Arc<RequestAttributes>> = None;
    // Picked once: filters read it (`cluster_name`) and the request goes there.
    let mut cluster_name = route.action.pick_cluster().clone();
    if !chain.is_empty() {
        let env = Arc::new(RequestAttributes::new(
            filter::attributes::Request {
                method: &parts.method,
                uri: &parts.uri,
                version: parts.version,
                headers: &parts.headers,
                host: &authority,
                scheme: if conn.tls.is_some() { "https" } else { "http" },
            },
            conn,
            &route.name,
            &cluster_name,
            &listener.name,
        ));
        attributes = Some(env.clone());
        let mut pairs = filter::request_pairs(
            &parts.method,
            &parts.uri,
            &authority,
            env.scheme,
            &parts.headers,
        );
        let end_of_stream = incoming.is_end_stream();
        let phase = filter::request_headers(
            &chain,
            &env,
            &mut pairs,
            end_of_stream,
            route.pause_limit(),
            &mut streams,
            &mut bystanders,
        )
        .await;
        // A filter answered, or failed closed: that answer goes back through the filters
        // that saw the request.
        let refused = match phase {
            Phase::Continue => None,
            Phase::Respond(local) => Some(Reply::local(local_response(local))),
            Phase::Failed(message) => {
                tracing::warn!(route = %route.name, error = %message, "filter failed; answering 503 (fail_closed)");
                Some(Reply::local(filter_failed()))
            }
            Phase::Reset => {
                env.keep_request_headers(pairs);
                return (route.name.clone(), Err(StreamReset));
            }
        };
        if let Some(reply) = refused {
            env.keep_request_headers(pairs);
            let limits = body_limits(listener, route);
            let response = respond(reply, streams, Some(&env), limits, &route.name)
                .await
                .map(|r| hold_until_done(r, bystanders));
            return (route.name.clone(), response);
        }
        let pseudo = filter::apply_request_pairs(&pairs, &mut parts.headers);
        // Parsed again only if a filter changed them.
        if let Some(method) = pseudo
            .method
            .filter(|m| *m != parts.method.as_str())
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        {
            parts.method = method;
        }
        let path_now = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Some(path) = pseudo
            .path
            .filter(|p| *p != path_now)
            .and_then(|p| Uri::try_from(p).ok())
        {
            parts.uri = path;
        }
        // Filters name a new authority in `:authority`, or (as some written for HTTP/1.1 do)
        // by setting `host`; either way one name is routed on and sent.
        let new_authority = pseudo
            .authority
            .filter(|a| *a != authority)
            .or(pseudo.host.filter(|h| *h != authority));
        if let Some(new_authority) = new_authority {
            // Taken only if it can also be sent: routing by one name and sending another is
            // what `request_authority` exists to prevent.
            if is_host(new_authority)
                && let Ok(value) = HeaderValue::from_str(new_authority)
            {
                parts.headers.insert(header::HOST, value);
                authority = new_authority.to_string();
            }
        }
        env.keep_request_headers(pairs);
        if filter::route_cache_cleared(&streams) {
            match table.select(&authority, parts.uri.path(), &parts.headers) {
                // The same route keeps its cluster: a weighted split is drawn once per request,
                // and the filters saw that draw (`cluster_name`).
                Some(again) if std::ptr::eq(again, route) => {}
                Some(again) => {
                    route = again;
                    cluster_name = route.action.pick_cluster().clone();
                    env.set_route(&route.name, &cluster_name);
                }
                None => {
                    // Back through the filters' response callbacks, as every local reply goes
                    // (so `on_log` sees its code).
                    let reply =
                        Reply::local(local_reply(StatusCode::NOT_FOUND, "no route matched"));
                    let response = respond(
                        reply,
                        streams,
                        Some(&env),
                        body_limits(listener, route),
                        &route.name,
                    )
                    .await;
                    return (route.name.clone(), response);
                }
            }
        }
    }

    let route_name = route.name.clone();
    let Some(cluster) = snapshot.clusters.get(&*cluster_name) else {
        let reply = Reply::local(local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster not found",
        ));
        let response = respond(
            reply,
            streams,
            attributes.as_ref(),
            body_limits(listener, route),
            &route_name,
        )
        .await;
        return (route_name, response);
    };

    // Filters may adjust this request's retry policy and timeout (see `filter::RouterHints`).
    let hints = match &attributes {
        Some(attributes) => filter::router_hints(&attributes.filter_state, route.retry.as_ref()),
        None => filter::RouterHints::default(),
    };
    let policy = hints.retry.as_ref().or(route.retry.as_ref());
    // A hinted 0 means no timeout, as Envoy's `x-envoy-upstream-rq-timeout-ms: 0` does.
    let timeout = match hints.timeout {
        Some(hinted) => (!hinted.is_zero()).then_some(hinted),
        None => route.timeout,
    };
    // A filter answering from a request body or trailers callback leaves its answer here.
    // Without filters there is none to leave, and no lock to take per request.
    let answered = (!streams.is_empty()).then(filter::body::Answer::default);
    // Whether the body is small enough to keep for retries, judged before filters (which hide
    // the length, as they may change it) take it.
    let small = incoming
        .size_hint()
        .upper()
        .is_some_and(|n| n <= RETRY_BUFFER_LIMIT);
    let incoming = if incoming.is_end_stream() {
        // Nothing to read, limit or watch (most requests): no wrapping to allocate.
        body::empty()
    } else if streams.is_empty() {
        let body = body::idle_limited(body::incoming(incoming), route.idle_timeout);
        body::watched(body, max_body, watch.clone())
    } else {
        // Filters may change the body's length, so it goes out chunked.
        parts.headers.remove(header::CONTENT_LENGTH);
        let body = body::idle_limited(body::incoming(incoming), route.idle_timeout);
        let filtered = filter::filter_body(
            body::watched_before_filters(body, max_body, watch.clone()),
            streams.clone(),
            filter::Direction::Request,
            body_limits(listener, route),
            attributes.clone(),
            answered.clone(),
            Some(watch.clone()),
        );
        body::ends_request(filtered, watch.clone())
    };
    let version = parts.version;
    let body = match RequestBody::new(incoming, &parts.headers, policy.is_some() && small).await {
        Ok(body) => body,
        Err(_) if watch.too_large() || watch.timed_out() => {
            let reply = Reply::local(body_refused(version, &watch));
            let response = respond(
                reply,
                streams,
                attributes.as_ref(),
                body_limits(listener, route),
                &route_name,
            )
            .await;
            return (route_name, response);
        }
        Err(status) => {
            // Kept for retries, the body went through the filters before anything was sent:
            // a filter that answered from a body callback cut it short, and its answer stands.
            let reply = match filter::body::take_answer(answered.as_ref()) {
                Some(Interrupt::Respond(local)) => Reply::local(local_response(local)),
                Some(Interrupt::Failed) => Reply::local(filter_failed()),
                Some(Interrupt::TooLarge) => Reply::local(payload_too_large(version)),
                Some(Interrupt::Reset) => return (route_name, Err(StreamReset)),
                None => Reply::local(local_reply(status, "request body")),
            };
            let response = respond(
                reply,
                streams,
                attributes.as_ref(),
                body_limits(listener, route),
                &route_name,
            )
            .await;
            return (route_name, response);
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let request = Outgoing {
        method: parts.method,
        authority,
        path,
        headers: parts.headers,
    };
    // The route timeout runs from the end of the request (now, unless its body still streams
    // from the client) until the end of the response body, as Envoy's does: an upload's own
    // time does not count against it.
    let now = tokio::time::Instant::now();
    let complete = body.replayable().then_some(now);
    let sending = send_with_retries(
        cluster,
        request,
        body,
        policy,
        timeout,
        &watch,
        answered.as_ref(),
    );
    let sent = match timeout {
        Some(limit) => after_request(sending, limit, complete, &watch)
            .await
            .unwrap_or_else(|| Sent {
                response: local_reply(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
                upgrade: None,
                upstream: None,
                flags: response_flags::UPSTREAM_REQUEST_TIMEOUT,
            }),
        None => sending.await,
    };
    // An upstream may answer before the request body ended; the clock then starts with its
    // answer.
    let deadline = timeout.map(|limit| {
        complete
            .or_else(|| watch.ended())
            .unwrap_or_else(tokio::time::Instant::now)
            + limit
    });
    let local = filter::body::take_answer(answered.as_ref());
    let upstream_upgrade = if local.is_some() { None } else { sent.upgrade };
    let reply = match local {
        // Whatever the upstream made of a body cut off at the limit, or at the client's
        // silence, the client is told why.
        None if watch.too_large() || watch.timed_out() => {
            Reply::local(body_refused(version, &watch))
        }
        // A request filter answered from its body: its answer stands, whatever the upstream
        // (which saw the request body cut short) said.
        Some(Interrupt::Respond(local)) => Reply::local(local_response(local)),
        // A fail-closed filter failed on the body: 503, not the upstream's doing.
        Some(Interrupt::Failed) => Reply::local(filter_failed()),
        // A filter held more of the body than the listener allows: 413, as Envoy answers
        // at its buffer limit.
        Some(Interrupt::TooLarge) => Reply::local(payload_too_large(version)),
        Some(Interrupt::Reset) => return (route_name, Err(StreamReset)),
        None => Reply {
            // A 101's body is the upgraded connection, spliced below; any other upstream
            // body must keep moving.
            response: match (&sent.upstream, sent.response.status()) {
                (Some(_), status) if status != StatusCode::SWITCHING_PROTOCOLS => {
                    sent.response.map(|b| {
                        let deadline = deadline.map(|at| body::Deadline {
                            at,
                            expired: cluster.counters.timeout.clone(),
                        });
                        body::time_limited(b, route.idle_timeout, deadline)
                    })
                }
                _ => sent.response,
            },
            flags: sent.flags,
            upstream: sent.upstream,
        },
    };
    let mut response = respond(
        reply,
        streams,
        attributes.as_ref(),
        body_limits(listener, route),
        &route_name,
    )
    .await;
    let switching = matches!(&response, Ok(r) if r.status() == StatusCode::SWITCHING_PROTOCOLS);
    match (downstream_upgrade, upstream_upgrade) {
        (Some(downstream), Some(upstream)) if switching => {
            splice_upgrade(conn, downstream, upstream, route.idle_timeout);
        }
        // The client asked to switch protocols and got another answer (the upstream's, or a
        // filter's in place of the upstream's 101): its connection closes after it, so no
        // switch is left pending for hyper to make later.
        (Some(_), _) => {
            if let Ok(response) = response.as_mut() {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        _ => {}
    }
    (route_name, response)
}

/// The request as it will be sent upstream, reusable across attempts.
struct Outgoing {
    method: Method,
    authority: String,
    path: PathAndQuery,
    headers: HeaderMap,
}

/// A request body that can be replayed (empty or buffered) or only streamed once.
enum RequestBody {
    /// The whole body, and its trailers if it had any (a filter may add them, and an HTTP/2
    /// client need not announce them).
    Replayable(Bytes, Option<HeaderMap>),
    Streaming(Option<ProxyBody>),
}

impl RequestBody {
    /// `want_replay`: a retry policy applies and the body was declared small (at most
    /// `RETRY_BUFFER_LIMIT`). Such a body is kept for retries; should it turn out longer (a
    /// filter grew it), what was read goes out first and the rest streams, once.
    async fn new(
        incoming: ProxyBody,
        headers: &HeaderMap,
        want_replay: bool,
    ) -> Result<RequestBody, StatusCode> {
        if incoming.is_end_stream() {
            return Ok(RequestBody::Replayable(Bytes::new(), None));
        }
        // A body that announces trailers streams, as gRPC's must (a stream may wait on its
        // answers); trailers that turn up unannounced are kept with the buffered body.
        let may_have_trailers =
            headers.contains_key(header::TE) || headers.contains_key(header::TRAILER);
        if want_replay && !may_have_trailers {
            let mut incoming = incoming;
            let mut buffered = bytes::BytesMut::new();
            let mut trailers = None;
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|_| StatusCode::BAD_REQUEST)?;
                match frame.into_data() {
                    Ok(data) => {
                        buffered.extend_from_slice(&data);
                        if buffered.len() as u64 > RETRY_BUFFER_LIMIT {
                            let read = body::full(buffered.freeze());
                            return Ok(RequestBody::Streaming(Some(body::prefixed(
                                read, incoming,
                            ))));
                        }
                    }
                    Err(frame) => trailers = frame.into_trailers().ok().or(trailers),
                }
            }
            return Ok(RequestBody::Replayable(buffered.freeze(), trailers));
        }
        Ok(RequestBody::Streaming(Some(incoming)))
    }

    fn replayable(&self) -> bool {
        matches!(self, RequestBody::Replayable(..))
    }

    /// The body for the next attempt, or `None` if a streamed body was already sent.
    fn take(&mut self) -> Option<ProxyBody> {
        match self {
            RequestBody::Replayable(bytes, None) if bytes.is_empty() => Some(body::empty()),
            RequestBody::Replayable(bytes, None) => Some(body::full(bytes.clone())),
            RequestBody::Replayable(bytes, Some(trailers)) => {
                Some(body::with_trailers(bytes.clone(), trailers.clone()))
            }
            RequestBody::Streaming(incoming) => incoming.take(),
        }
    }
}

/// What came back from a cluster: the response, the upgrade to splice if it is a 101, the
/// endpoint that answered (if one did) and Envoy's response flags (if the proxy answered).
struct Sent {
    response: Response<ProxyBody>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    upstream: Option<Arc<Endpoint>>,
    flags: u64,
}

impl Sent {
    fn local(response: Response<ProxyBody>, flags: u64) -> Sent {
        Sent {
            response,
            upgrade: None,
            upstream: None,
            flags,
        }
    }
}

/// Envoy's response flags (`response.flags`, `%RESPONSE_FLAGS%`) for answers the proxy made
/// itself; the bit values are Envoy's `StreamInfo::ResponseFlag`.
pub mod response_flags {
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    pub const UPSTREAM_OVERFLOW: u64 = 0x80;
}

async fn send_with_retries(
    cluster: &Arc<Cluster>,
    mut request: Outgoing,
    mut body: RequestBody,
    policy: Option<&RetryPolicy>,
    route_timeout: Option<Duration>,
    watch: &body::BodyWatch,
    answered: Option<&filter::body::Answer>,
) -> Sent {
    let request_permit = match cluster.breaker.try_request() {
        Ok(permit) => permit,
        Err(overflow) => {
            return Sent::local(
                overloaded(overflow.as_str()),
                response_flags::UPSTREAM_OVERFLOW,
            );
        }
    };
    let max_attempts = 1 + policy.map_or(0, |p| p.num_retries);
    let per_try = policy
        .and_then(|p| p.per_try_timeout)
        .filter(|limit| route_timeout.is_none_or(|route| *limit < route));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let _retry_permit = if attempt > 1 {
            match cluster.breaker.try_retry(cluster.breaker.requests()) {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return Sent::local(
                        overloaded("max_retries"),
                        response_flags::UPSTREAM_OVERFLOW,
                    );
                }
            }
        } else {
            None
        };
        let Some(attempt_body) = body.take() else {
            // A streamed body cannot be sent twice; the last answer stands.
            let reply = local_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream failed; body not replayable",
            );
            return Sent::local(reply, response_flags::UPSTREAM_REMOTE_RESET);
        };
        // A streamed body goes out with this attempt; whatever comes back is the answer.
        let last = attempt >= max_attempts || !body.replayable();
        let result = try_once(
            cluster,
            &mut request,
            last,
            attempt_body,
            per_try.map(|limit| (limit, body.replayable().then(tokio::time::Instant::now))),
            watch,
            answered,
        )
        .await;
        match result {
            Attempt::Response(mut response, guards, endpoint) => {
                let status = response.status();
                if !last && policy.is_some_and(|p| retriable_status(p, status)) {
                    cluster.counters.retries.increment(1);
                    drop(response);
                    drop(guards);
                    back_off(policy, attempt).await;
                    continue;
                }
                let upgrade = (status == StatusCode::SWITCHING_PROTOCOLS)
                    .then(|| hyper::upgrade::on(&mut response));
                let response = strip_response_hop_by_hop(response);
                let response = hold_until_done(response, (guards, request_permit));
                return Sent {
                    response,
                    upgrade,
                    upstream: Some(endpoint),
                    flags: 0,
                };
            }
            Attempt::Failed(failure) => {
                if !last && policy.is_some_and(|p| retriable_failure(p, &failure)) {
                    cluster.counters.retries.increment(1);
                    back_off(policy, attempt).await;
                    continue;
                }
                let flags = failure.flags();
                return Sent::local(failure.into_response(), flags);
            }
        }
    }
}

/// Guards that live as long as the response body: the endpoint's in-flight count (least-request
/// and Peak-EWMA see streaming responses as load) and the cluster's request permit.
struct AttemptGuards {
    in_flight: Option<InFlight>,
    rtt: Duration,
    /// When the response head came: the EWMA's clock reading for `rtt`.
    head_at: Instant,
}

impl Drop for AttemptGuards {
    fn drop(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.finish_at(self.rtt, self.head_at);
        }
    }
}

// Moved once per attempt; boxing the response would cost an allocation on every request.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    Response(Response<PooledBody>, AttemptGuards, Arc<Endpoint>),
    Failed(Failure),
}

enum Failure {
    NoEndpoint,
    /// The downstream request body failed (malformed, cut off): the client's fault.
    Downstream(String),
    Overflow(&'static str),
    Connect(String),
    Reset(String),
    Timeout,
}

impl Failure {
    fn flags(&self) -> u64 {
        match self {
            Failure::NoEndpoint => response_flags::NO_HEALTHY_UPSTREAM,
            Failure::Overflow(_) => response_flags::UPSTREAM_OVERFLOW,
            Failure::Connect(_) => response_flags::UPSTREAM_CONNECTION_FAILURE,
            Failure::Reset(_) => response_flags::UPSTREAM_REMOTE_RESET,
            Failure::Downstream(_) => 0,
            Failure::Timeout => response_flags::UPSTREAM_REQUEST_TIMEOUT,
        }
    }

    fn into_response(self) -> Response<ProxyBody> {
        match self {
            Failure::NoEndpoint => {
                local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
            }
            Failure::Overflow(reason) => overloaded(reason),
            Failure::Connect(msg) => local_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("upstream connect error: {msg}"),
            ),
            Failure::Downstream(msg) => {
                let mut response = local_reply(
                    StatusCode::BAD_REQUEST,
                    &format!("malformed or incomplete request body: {msg}"),
                );
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            Failure::Reset(msg) => {
                local_reply(StatusCode::BAD_GATEWAY, &format!("upstream reset: {msg}"))
            }
            Failure::Timeout => {
                local_reply(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
            }
        }
    }
}

/// `per_try`: the attempt's own time limit, and when it starts if the request is complete
/// already (else it starts when the client's body ends).
async fn try_once(
    cluster: &Arc<Cluster>,
    request: &mut Outgoing,
    last: bool,
    body: ProxyBody,
    per_try: Option<(Duration, Option<tokio::time::Instant>)>,
    watch: &body::BodyWatch,
    answered: Option<&filter::body::Answer>,
) -> Attempt {
    let sent = Instant::now();
    let Some(upstream) = cluster.pick_at(&request.headers, sent) else {
        return Attempt::Failed(Failure::NoEndpoint);
    };
    let pending = match cluster.breaker.try_pending() {
        Ok(permit) => permit,
        Err(overflow) => return Attempt::Failed(Failure::Overflow(overflow.as_str())),
    };
    let in_flight = upstream.endpoint.start_request_at(sent);
    let outgoing = match build_upstream_request(cluster, request, last, body) {
        Ok(req) => req,
        Err(_) => return Attempt::Failed(Failure::Reset("invalid upstream request".into())),
    };
    // Without a shorter per-try limit the route's own timeout (around all attempts) is the
    // only one needed; a second timer per request is not free. Like the route's, it starts
    // when the request is complete.
    let result = match per_try {
        Some((limit, complete)) => {
            after_request(upstream.pool.send(outgoing), limit, complete, watch).await
        }
        None => Some(upstream.pool.send(outgoing).await),
    };
    drop::<Permit>(pending);
    let head_at = Instant::now();
    let rtt = head_at.saturating_duration_since(sent);
    match result {
        // A body-less answer (to HEAD, a 304) may name any coding: there is nothing to decode.
        Some(Ok(response))
            if response.version() < Version::HTTP_2
                && !response.body().is_end_stream()
                && foreign_transfer_coding(response.headers()) =>
        {
            // Dropped unread, so the connection is closed rather than pooled.
            drop(response);
            in_flight.fail();
            cluster.observe(upstream.index, Outcome::GatewayFailure);
            cluster.counters.reset.increment(1);
            tracing::debug!(cluster = %cluster.name, endpoint = %upstream.endpoint.address, "upstream response in a transfer coding other than chunked");
            Attempt::Failed(Failure::Reset(
                "response in a transfer coding other than chunked".into(),
            ))
        }
        Some(Ok(response)) => {
            let outcome = match response.status() {
                StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT => Outcome::GatewayFailure,
                status if status.is_server_error() => Outcome::ServerError,
                _ => Outcome::Success,
            };
            cluster.observe(upstream.index, outcome);
            cluster.counters.response(response.status()).increment(1);
            Attempt::Response(
                response,
                AttemptGuards {
                    in_flight: Some(in_flight),
                    rtt,
                    head_at,
                },
                upstream.endpoint.clone(),
            )
        }
        Some(Err(err)) => {
            if let PoolError::Connect(ConnectError::Overflow { reason, .. }) = err {
                drop(in_flight);
                return Attempt::Failed(Failure::Overflow(reason));
            }
            let interrupted =
                answered.is_some_and(|a| a.lock().unwrap_or_else(|e| e.into_inner()).is_some());
            if watch.failed() || interrupted {
                // The request body failed on the client's side, or a filter stopped it (it
                // answered or reset the stream): not the endpoint's fault, so it is not
                // counted against it (a client must not be able to eject upstreams, or make
                // one look slow).
                drop(in_flight);
                return Attempt::Failed(Failure::Downstream(error_chain(&err)));
            }
            in_flight.fail();
            cluster.observe(upstream.index, Outcome::GatewayFailure);
            let connect = err.is_connect();
            if connect {
                cluster.counters.connect_failure.increment(1);
            } else {
                cluster.counters.reset.increment(1);
            }
            let msg = error_chain(&err);
            tracing::debug!(cluster = %cluster.name, endpoint = %upstream.endpoint.address, error = %msg, "upstream attempt failed");
            if connect {
                Attempt::Failed(Failure::Connect(msg))
            } else {
                Attempt::Failed(Failure::Reset(msg))
            }
        }
        None => {
            in_flight.fail();
            cluster.observe(upstream.index, Outcome::GatewayFailure);
            cluster.counters.timeout.increment(1);
            Attempt::Failed(Failure::Timeout)
        }
    }
}

/// `future`, given `limit` from the end of the downstream request, as Envoy's route and per-try
/// timeouts are: from `complete` if the request is complete already, else from when its body
/// ends (`watch`). While that body is still arriving, the limit ends the request only if the
/// body made no progress for that long, so a steady upload takes what it takes but one that
/// stalls (an upstream that stopped reading) does not hang. Yields `None` if the time ran out
/// first.
fn after_request<F: Future>(
    future: F,
    limit: Duration,
    complete: Option<tokio::time::Instant>,
    watch: &body::BodyWatch,
) -> AfterRequest<'_, F> {
    let start = complete.unwrap_or_else(tokio::time::Instant::now);
    AfterRequest {
        future,
        timer: tokio::time::sleep_until(start + limit),
        armed: complete.is_some(),
        limit,
        progress: watch.progress(),
        watch,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`after_request`]: a struct, not an `async fn`, so that the (large)
    /// future it limits is stored once, as in tokio's `Timeout`.
    struct AfterRequest<'w, F> {
        #[pin]
        future: F,
        #[pin]
        timer: tokio::time::Sleep,
        armed: bool,
        limit: Duration,
        progress: u64,
        watch: &'w body::BodyWatch,
    }
}

impl<F: Future> Future for AfterRequest<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Some(output));
        }
        if !*this.armed
            && let Some(ended) = this.watch.poll_ended(cx)
        {
            this.timer.as_mut().reset(ended + *this.limit);
            *this.armed = true;
        }
        loop {
            std::task::ready!(this.timer.as_mut().poll(cx));
            let now = this.watch.progress();
            // A body a filter holds paused (a callout deciding on it) is not a stalled upload:
            // the filter's pause limit bounds that wait, and the clock starts when the body
            // is let go.
            if *this.armed || (now == *this.progress && !this.watch.held()) {
                return Poll::Ready(None);
            }
            *this.progress = now;
            this.timer
                .as_mut()
                .reset(tokio::time::Instant::now() + *this.limit);
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        msg.push_str(": ");
        msg.push_str(&e.to_string());
        source = e.source();
    }
    msg
}

fn retriable_status(policy: &RetryPolicy, status: StatusCode) -> bool {
    let code = status.as_u16();
    policy.retry_on.iter().any(|on| match on {
        RetryOn::FiveXx => status.is_server_error(),
        RetryOn::GatewayError => matches!(code, 502..=504),
        RetryOn::RetriableStatusCodes => policy.retriable_status_codes.contains(&code),
        RetryOn::ConnectFailure | RetryOn::Reset => false,
    })
}

fn retriable_failure(policy: &RetryPolicy, failure: &Failure) -> bool {
    policy.retry_on.iter().any(|on| match (on, failure) {
        (_, Failure::Overflow(_) | Failure::Downstream(_)) => false,
        // Envoy's `5xx` covers connect failures, resets and timeouts as well.
        (RetryOn::FiveXx, _) => true,
        // An upstream reset counts as a gateway error, since the client gets a 502 for it, as
        // Envoy's `wouldRetryFromReset` counts it.
        (
            RetryOn::GatewayError,
            Failure::Connect(_) | Failure::Reset(_) | Failure::Timeout | Failure::NoEndpoint,
        ) => true,
        (RetryOn::ConnectFailure, Failure::Connect(_) | Failure::NoEndpoint) => true,
        (RetryOn::Reset, Failure::Reset(_) | Failure::Timeout) => true,
        _ => false,
    })
}

/// Exponential back-off with full jitter: a random wait in `[0, base·2^(n-1)]`, capped at 10×base.
async fn back_off(policy: Option<&RetryPolicy>, attempt: u32) {
    let Some(policy) = policy else { return };
    let base = policy.base_interval;
    let ceiling = base
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(base * 10);
    let wait = rand::rng().random_range(Duration::ZERO..=ceiling);
    tokio::time::sleep(wait).await;
}

/// The attempt's request. `last`: no attempt follows, so the headers move out of `request`
/// instead of being copied for a retry.
fn build_upstream_request(
    cluster: &Cluster,
    request: &mut Outgoing,
    last: bool,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, http::Error> {
    let authority = if request.authority.is_empty() {
        "localhost"
    } else {
        request.authority.as_str()
    };
    let http2 = cluster.config.protocol == crate::config::UpstreamProtocol::Http2;
    // HTTP/2 needs the scheme and authority in the URI; HTTP/1.1 goes out in origin form
    // (`GET /path`, the authority in `Host`), which needs no parsing to build.
    let uri = if http2 {
        Uri::builder()
            .scheme(cluster.scheme)
            .authority(authority)
            .path_and_query(request.path.clone())
            .build()?
    } else {
        Uri::from(request.path.clone())
    };
    let mut outgoing = Request::new(body);
    *outgoing.method_mut() = request.method.clone();
    *outgoing.uri_mut() = uri;
    // A clone copies the map's storage as is, without hashing each name again.
    let mut headers = if last {
        std::mem::take(&mut request.headers)
    } else {
        request.headers.clone()
    };
    if http2 {
        headers.remove(header::HOST);
    } else if !headers.contains_key(header::HOST)
        && let Ok(value) = HeaderValue::from_str(authority)
    {
        headers.insert(header::HOST, value);
    }
    *outgoing.headers_mut() = headers;
    Ok(outgoing)
}

/// Why a request's authority cannot be routed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BadAuthority {
    /// An HTTP/1.1 request without `Host`.
    Missing,
    /// More than one `Host` header.
    Repeated,
    /// Not `host[:port]`: spaces, a path, user info, a non-numeric port.
    Invalid,
}

impl BadAuthority {
    fn message(self) -> &'static str {
        match self {
            BadAuthority::Missing => "missing Host header",
            BadAuthority::Repeated => "more than one Host header",
            BadAuthority::Invalid => "invalid Host header or request authority",
        }
    }
}

/// The authority a request is routed by, made the only one the upstream will see.
///
/// An authority in the request target — HTTP/2's `:authority`, or HTTP/1.1's absolute form
/// (`GET http://host/path`) — wins over `Host`. RFC 9112 §3.2.2 asks a proxy to replace `Host`
/// with it; HTTP/2 drops a `host` header beside `:authority`, as Envoy does. Otherwise the one
/// `Host` header decides. Were the two allowed to differ, the proxy could route by one name
/// while the upstream served another.
fn request_authority(req: &mut Request<Incoming>) -> Result<String, BadAuthority> {
    let h2 = req.version() >= Version::HTTP_2;
    let target = req.uri().authority().map(|a| a.as_str().to_string());
    // HTTP/1's `Host` must be sound even when the target's authority replaces it (nginx checks
    // it too); HTTP/2's `host` only stands in for a missing `:authority`.
    let host = if h2 && target.is_some() {
        None
    } else {
        one_host(req.headers())?
    };
    match target {
        Some(authority) => {
            if !is_host(&authority) {
                return Err(BadAuthority::Invalid);
            }
            if h2 {
                req.headers_mut().remove(header::HOST);
            } else {
                let value = HeaderValue::from_str(&authority).map_err(|_| BadAuthority::Invalid)?;
                req.headers_mut().insert(header::HOST, value);
            }
            Ok(authority)
        }
        None => match host {
            Some(host) => Ok(host),
            None if req.version() == Version::HTTP_11 => Err(BadAuthority::Missing),
            // HTTP/1.0 predates `Host`; HTTP/2 without `:authority` or `host` routes as "".
            None => Ok(String::new()),
        },
    }
}

/// The request's one `Host`, if it has one. An empty value is how a client says the target
/// has no authority.
fn one_host(headers: &HeaderMap) -> Result<Option<String>, BadAuthority> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(BadAuthority::Repeated),
        (Some(host), None) => {
            let host = host.to_str().map_err(|_| BadAuthority::Invalid)?;
            if host.is_empty() || is_host(host) {
                Ok(Some(host.to_string()))
            } else {
                Err(BadAuthority::Invalid)
            }
        }
    }
}

/// Joins an HTTP/2 request's `cookie` fields into one, "; " between them (RFC 9113 §8.2.3).
/// Clients split cookies into a field each so HPACK can index them; HTTP/1.1 servers expect one
/// `Cookie` line, and filters (as in Envoy) see the whole header as one value.
fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if cookies.next().is_none() || cookies.next().is_none() {
        return;
    }
    let joined = field_lines(headers.get_all(header::COOKIE), b"; ");
    // Each part was a valid value, and "; " is too.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// A field's lines joined into one value with `separator`, byte for byte.
fn field_lines<'a>(lines: impl IntoIterator<Item = &'a HeaderValue>, separator: &[u8]) -> Vec<u8> {
    let mut joined = Vec::with_capacity(64);
    for line in lines {
        if !joined.is_empty() {
            joined.extend_from_slice(separator);
        }
        joined.extend_from_slice(line.as_bytes());
    }
    joined
}

/// `uri-host [":" port]` and nothing else: a registered name or IPv4 address (whose
/// characters `http` checks) or an IPv6 literal in brackets, then at most a numeric port. No
/// user info: deprecated, and a known way to disguise an authority (RFC 9110 §4.2.4).
fn is_host(value: &str) -> bool {
    if value.contains('@') {
        return false;
    }
    let Ok(authority) = value.parse::<http::uri::Authority>() else {
        return false;
    };
    let host = authority.host();
    if host.is_empty() {
        return false;
    }
    if let Some(literal) = host.strip_prefix('[')
        && literal
            .strip_suffix(']')
            .is_none_or(|ip| ip.parse::<std::net::Ipv6Addr>().is_err())
    {
        return false;
    }
    // Without user info, the host is where the value starts; only a port may follow.
    match value.get(host.len()..) {
        Some("") => true,
        Some(rest) => rest.strip_prefix(':').is_some_and(|port| {
            port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()
        }),
        None => false,
    }
}

/// Whether an HTTP/1 message is framed by anything but one `chunked`. hyper undoes one layer
/// of chunking: passed on, a body still coded (`gzip, chunked`) or chunked twice would lose
/// the header that says so and change meaning. So such a request is refused with 501 (RFC 9112
/// §6.1) and such a response with 502, as nginx and Envoy do.
fn foreign_transfer_coding(headers: &HeaderMap) -> bool {
    let mut chunked = 0;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let Ok(value) = value.to_str() else {
            return true;
        };
        for coding in value.split(',').map(str::trim) {
            if coding.eq_ignore_ascii_case("chunked") {
                chunked += 1;
            } else if !coding.is_empty() {
                return true;
            }
        }
    }
    chunked > 1
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard `keep-alive` and `proxy-connection`. `Trailer` is not one: it announces the
/// message's trailer fields end to end, and HTTP/1.1 sends trailers only where it is present.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Removes hop-by-hop headers and those the `Connection` header names. One pass finds them,
/// so the common message that has none costs a scan of its names and no removal.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        doomed.extend(
            connection_tokens(headers).filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()),
        );
    }
    // A message framed by `Transfer-Encoding` loses any `Content-Length` beside it (RFC 9112
    // §6.3): passed on, it would frame the body for the next hop, cutting it short. (hyper
    // already drops it from requests; an upstream's response still carries it.)
    if doomed.contains(&header::TRANSFER_ENCODING) {
        doomed.push(header::CONTENT_LENGTH);
    }
    // `te: trailers` is how gRPC says it understands trailers; it survives the hop.
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in doomed {
        if keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
            continue;
        }
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn prepare_headers(
    headers: &mut HeaderMap,
    listener: &ListenerContext,
    conn: &ConnectionInfo,
    upgrade: bool,
    authority: &str,
) {
    strip_hop_by_hop(headers, upgrade);
    // hyper has already answered `Expect: 100-continue` by reading the body.
    headers.remove(header::EXPECT);

    // Entries: each name is hashed once, whether it is read, replaced or added.
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Occupied(mut existing) => {
            // Several field lines are one list (RFC 9110 §5.3), in order; all of it is kept,
            // byte for byte, and the client's address goes at the end.
            let mut list = field_lines(existing.iter(), b", ");
            list.extend_from_slice(b", ");
            list.extend_from_slice(conn.client_ip.as_bytes());
            let value = HeaderValue::from_bytes(&list).unwrap_or_else(|_| conn.client_ip.clone());
            existing.insert(value);
        }
        Entry::Vacant(slot) => {
            slot.insert(conn.client_ip.clone());
        }
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if conn.tls.is_some() { "https" } else { "http" }),
    );
    if let Entry::Vacant(slot) = headers.entry(X_REQUEST_ID) {
        let mut id_buf = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id_buf);
        if let Ok(value) = HeaderValue::from_str(id) {
            slot.insert(value);
        }
    }
    headers.remove(&X_FORWARDED_CLIENT_CERT);
    if listener.forward_client_cert
        && let Some(peer) = conn.tls.as_ref().and_then(|t| t.peer.as_ref())
        && let Ok(value) = HeaderValue::from_str(&peer.xfcc())
    {
        headers.insert(X_FORWARDED_CLIENT_CERT, value);
    }
    if !headers.contains_key(header::HOST)
        && !authority.is_empty()
        && let Ok(value) = HeaderValue::from_str(authority)
    {
        headers.insert(header::HOST, value);
    }
}

fn strip_response_hop_by_hop(mut response: Response<PooledBody>) -> Response<PooledBody> {
    let upgrade = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(response.headers_mut(), upgrade);
    response
}

/// After both sides agreed to switch protocols, leaves the relay of the upgraded exchange to
/// `conn`'s task: bytes both ways, each direction half-closed when its sender finishes, until
/// both are done or nothing moved for `idle` (the route's `idle_timeout`, Envoy's stream idle
/// timeout).
fn splice_upgrade(
    conn: &ConnectionInfo,
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    idle: Duration,
) {
    let splice = async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(error = %err, "upgrade did not complete");
                return;
            }
        };
        let moved = crate::tcp::relay(TokioIo::new(down), TokioIo::new(up), idle, None).await;
        tracing::debug!(?moved, "upgraded connection ended");
    };
    *conn.upgraded.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::pin(splice));
}

/// A response on its way downstream, with what `on_log` should learn about it.
struct Reply {
    response: Response<ProxyBody>,
    /// Envoy's response flags: why the proxy answered itself, if it did.
    flags: u64,
    /// The endpoint that answered, if one did.
    upstream: Option<Arc<Endpoint>>,
}

impl Reply {
    /// An answer made here (by a filter or by the proxy), not by an upstream.
    fn local(response: Response<ProxyBody>) -> Reply {
        Reply {
            response,
            flags: 0,
            upstream: None,
        }
    }
}

/// How long and how much `route`'s filters may hold a body on `listener`.
fn body_limits(listener: &ListenerContext, route: &Route) -> filter::BodyLimits {
    filter::BodyLimits {
        pause: route.pause_limit(),
        buffer: listener.filter_buffer_limit,
    }
}

/// Sends a response back through the filters that saw the request, in reverse order, as
/// Envoy's encoder chain does — whether an upstream or a filter produced it, so that (say) a
/// CORS filter decorates a rate limiter's 429 — then records it for `on_log` and ties the
/// filters' contexts to its body. A filter answering from its response callbacks replaces the
/// response; that answer does not go through the filters again.
async fn respond(
    reply: Reply,
    streams: Vec<filter::SharedStream>,
    attributes: Option<&Arc<RequestAttributes>>,
    limits: filter::BodyLimits,
    route_name: &str,
) -> Answer {
    let mut response = reply.response;
    if streams.is_empty() {
        return Ok(response);
    }
    let upstream = reply.upstream.map(|e| Arc::<str>::from(e.address.as_str()));
    // What the upstream answered is there for the response callbacks (response.code,
    // upstream.address), as in Envoy; what the client gets is recorded again below for on_log.
    if let Some(attributes) = attributes {
        attributes.record_response(response.status().as_u16(), reply.flags, upstream.clone());
    }
    let mut pairs = filter::response_pairs(response.status(), response.headers());
    let end_of_stream = response.body().is_end_stream();
    match filter::response_headers(&streams, &mut pairs, end_of_stream, limits.pause).await {
        Phase::Continue => {
            let pseudo = filter::apply_pairs(&pairs, response.headers_mut());
            if let Some(status) = pseudo
                .status
                .and_then(|s| s.parse::<u16>().ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
            {
                *response.status_mut() = status;
            }
            if let Some(attributes) = attributes {
                attributes.keep_response_headers(pairs);
            }
            if !end_of_stream {
                // Filters may change the body's length, so it goes out chunked.
                response.headers_mut().remove(header::CONTENT_LENGTH);
                let (streams, attributes) = (streams.clone(), attributes.cloned());
                response = response.map(|b| {
                    let direction = filter::Direction::Response;
                    filter::filter_body(b, streams, direction, limits, attributes, None, None)
                });
            }
        }
        Phase::Respond(local) => response = local_response(local),
        Phase::Failed(message) => {
            tracing::warn!(route = %route_name, error = %message, "filter failed on the response; answering 503 (fail_closed)");
            response = filter_failed();
        }
        Phase::Reset => return Err(StreamReset),
    }
    if let Some(attributes) = attributes {
        attributes.record_response(response.status().as_u16(), reply.flags, upstream);
    }
    // The filters' contexts end when the response body does (on_done, on_log, on_delete).
    Ok(hold_until_done(response, streams))
}

/// `response` with a body that keeps `guard` until it is finished (or the client goes away),
/// keeping in-flight counts true for streaming responses. The guard lives inside the one box
/// the body needs anyway.
fn hold_until_done<B, G>(response: Response<B>, guard: G) -> Response<ProxyBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<body::BoxError>,
    G: Send + 'static,
{
    response.map(|b| {
        GuardedBody {
            inner: b,
            _guard: guard,
        }
        .boxed_unsync()
    })
}

pin_project_lite::pin_project! {
    struct GuardedBody<B, G> {
        #[pin]
        inner: B,
        _guard: G,
    }
}

impl<B, G> http_body::Body for GuardedBody<B, G>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<body::BoxError>,
{
    type Data = Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.project()
            .inner
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The plugins a request runs through: the listener's chain, then the route's. `Err` names
/// why a chain refuses requests (a `fail_closed` plugin it could not fetch).
fn filter_chain(
    snapshot: &Snapshot,
    listener: &ListenerContext,
    route: &Route,
) -> Result<Vec<Arc<wasmesh_host::Plugin>>, String> {
    let mut plugins = Vec::new();
    for name in [listener.filter_chain.as_ref(), route.filter_chain.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Some(chain) = snapshot.chains.get(name) {
            if let Some(reason) = &chain.blocked {
                return Err(format!("filter chain \"{name}\": {reason}"));
            }
            plugins.extend(chain.plugins.iter().cloned());
        }
    }
    Ok(plugins)
}

/// A reply a filter made (`proxy_send_local_response`).
fn local_response(local: wasmesh_host::LocalResponse) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(local.body));
    *response.status_mut() = u16::try_from(local.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    filter::apply_pairs(&local.headers, response.headers_mut());
    // Framed by its body, whatever the filter said (Envoy's `prepareLocalReply` sets the length
    // from the body too): a wrong length would desynchronise an HTTP/1.1 connection.
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response.headers_mut().remove(header::TRANSFER_ENCODING);
    if let Some(grpc) = local.grpc_status
        && let Ok(value) = HeaderValue::from_str(&grpc.to_string())
    {
        response.headers_mut().insert("grpc-status", value);
    }
    response
}

/// The answer for a request a fail-closed filter failed on (Envoy's `wasm_fail_stream`).
fn filter_failed() -> Response<ProxyBody> {
    local_reply(StatusCode::SERVICE_UNAVAILABLE, "filter failed")
}

/// A reply the proxy makes itself.
pub fn local_reply(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Why a request body was cut off on the client's side: too large (413) or silent too long
/// (408, as Envoy answers a stream idle timeout before the response began).
fn body_refused(version: Version, watch: &body::BodyWatch) -> Response<ProxyBody> {
    if watch.too_large() {
        payload_too_large(version)
    } else {
        closing_reply(
            version,
            StatusCode::REQUEST_TIMEOUT,
            "request body timed out",
        )
    }
}

/// 413 for a body over the listener's `max_request_body_bytes`: the rest of that body is
/// never read.
fn payload_too_large(version: Version) -> Response<ProxyBody> {
    closing_reply(
        version,
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body too large",
    )
}

/// A reply after which an HTTP/1 connection is closed, since what follows on it is unread or
/// cannot be trusted (as after hyper's own 400s). HTTP/2 has no such header; its stream ends.
fn closing_reply(version: Version, status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = local_reply(status, message);
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// 503 from a circuit breaker, saying which limit overflowed.
fn overloaded(reason: &'static str) -> Response<ProxyBody> {
    let mut response = local_reply(StatusCode::SERVICE_UNAVAILABLE, "upstream overloaded");
    response
        .headers_mut()
        .insert("x-wasmesh-overloaded", HeaderValue::from_static(reason));
    response
}

/// Compile-time check that a request's future is `Send` (hyper requires it); breaking that
/// otherwise surfaces as an obscure error at the listener.
#[allow(dead_code)]
fn assert_send(l: Arc<ListenerContext>, c: Arc<ConnectionInfo>, r: Request<Incoming>) {
    fn is_send<T: Send>(_: &T) {}
    let f = handle(l, c, r, None);
    is_send(&f);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request body a filter holds paused (a callout deciding on it) does not run out the
    /// request's timer (route or per try); the timer runs from when the body is let go, and a
    /// body nobody holds that stops moving still times out. Time is paused: the runtime jumps
    /// to each deadline.
    #[tokio::test(start_paused = true)]
    async fn a_body_held_by_filters_does_not_run_out_the_request_timer() {
        let watch = Arc::new(body::BodyWatch::default());
        body::watched_before_filters(body::full("abc"), None, watch.clone())
            .collect()
            .await
            .expect("body");
        assert!(watch.ended().is_none());
        watch.set_held(true);
        let limit = Duration::from_secs(1);
        let waiting = after_request(std::future::pending::<()>(), limit, None, &watch);
        let mut waiting = std::pin::pin!(waiting);
        let held = tokio::time::timeout(limit * 30, waiting.as_mut()).await;
        assert!(held.is_err(), "timed out while the filters held the body");
        let released = tokio::time::Instant::now();
        watch.set_held(false);
        body::ends_request(body::empty(), watch.clone())
            .collect()
            .await
            .expect("body");
        let timed_out = waiting.await;
        assert_eq!(timed_out, None, "the timer runs once the body is let go");
        assert_eq!(tokio::time::Instant::now() - released, limit);

        // Not held, never ended (the upstream stopped reading before the trailers, say): the
        // stall check still ends the wait.
        let watch = Arc::new(body::BodyWatch::default());
        body::watched_before_filters(body::full("abc"), None, watch.clone())
            .collect()
            .await
            .expect("body");
        let stalled = after_request(std::future::pending::<()>(), limit, None, &watch);
        let stalled = tokio::time::timeout(limit * 30, stalled).await;
        assert_eq!(stalled, Ok(None), "a body nobody holds times out");
    }

    fn policy(retry_on: Vec<RetryOn>) -> RetryPolicy {
        RetryPolicy {
            retry_on,
            num_retries: 1,
            per_try_timeout: None,
            retriable_status_codes: vec![409],
            base_interval: Duration::from_millis(1),
        }
    }

    #[test]
    fn hop_by_hop_headers_are_removed_and_te_trailers_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        strip_hop_by_hop(&mut h, false);
        assert!(
            h.get(header::CONTENT_LENGTH).is_none(),
            "a chunked message's Content-Length goes too"
        );
        assert_eq!(
            h.get(header::TE).map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert!(h.get(header::UPGRADE).is_none());
        assert_eq!(h.get("x-keep").map(|v| v.as_bytes()), Some(&b"yes"[..]));
    }

    #[test]
    fn upgrade_headers_survive_an_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(header::UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn retry_conditions_follow_envoy() {
        let five = policy(vec![RetryOn::FiveXx]);
        assert!(retriable_status(&five, StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!retriable_status(&five, StatusCode::NOT_FOUND));
        assert!(retriable_failure(&five, &Failure::Connect("x".into())));
        assert!(retriable_failure(&five, &Failure::Reset("x".into())));
        assert!(!retriable_failure(
            &five,
            &Failure::Overflow("max_requests")
        ));

        let gw = policy(vec![RetryOn::GatewayError]);
        assert!(retriable_status(&gw, StatusCode::BAD_GATEWAY));
        assert!(!retriable_status(&gw, StatusCode::INTERNAL_SERVER_ERROR));
        assert!(retriable_failure(&gw, &Failure::Reset("x".into())));
        assert!(retriable_failure(&gw, &Failure::Connect("x".into())));
        assert!(!retriable_failure(&gw, &Failure::Downstream("x".into())));

        let connect = policy(vec![RetryOn::ConnectFailure]);
        assert!(retriable_failure(&connect, &Failure::Connect("x".into())));
        assert!(!retriable_failure(&connect, &Failure::Reset("x".into())));
        assert!(!retriable_status(&connect, StatusCode::SERVICE_UNAVAILABLE));

        let codes = policy(vec![RetryOn::RetriableStatusCodes]);
        assert!(retriable_status(&codes, StatusCode::CONFLICT));
        assert!(!retriable_status(&codes, StatusCode::BAD_GATEWAY));
    }

    #[test]
    fn a_host_is_a_host_and_port_and_nothing_more() {
        for good in [
            "a",
            "example.com:8080",
            "Example.COM.",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "xn--bcher-kva.example",
        ] {
            assert!(is_host(good), "{good}");
        }
        for bad in [
            "a b",
            "a/b",
            "user@a",
            "a:b",
            "a:",
            "a:+80",
            "a:65536",
            ":80",
            "a?b",
            "a#b",
            "[::1",
            "[]",
            "[foo]",
            "[::1]junk:80",
        ] {
            assert!(!is_host(bad), "{bad}");
        }
    }

    #[test]
    fn only_chunked_is_a_transfer_coding_the_proxy_forwards() {
        let coded = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::TRANSFER_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            foreign_transfer_coding(&headers)
        };
        assert!(!coded(&[]));
        assert!(!coded(&["chunked"]));
        assert!(!coded(&["Chunked"]));
        assert!(coded(&["gzip, chunked"]));
        assert!(coded(&["gzip", "chunked"]));
        assert!(coded(&["chunked, identity"]));
        assert!(coded(&["chunked, chunked"]));
        assert!(coded(&["chunked", "chunked"]));
    }
}
