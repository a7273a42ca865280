//! One endpoint's upstream connections, on hyper's connection API directly.
//!
//! HTTP/1.1 connections wait idle between requests on a stack (the most recently used is
//! reused first, so a burst's spare connections age out); a connection goes back on the stack
//! only once its response body has been read to the end and its request body sent whole, and
//! is dropped — closed — otherwise.
//! HTTP/2 (configured, or negotiated by ALPN) uses one multiplexed connection. Every
//! connection comes from the endpoint's connector, so TLS, the connect timeout and the
//! cluster's `max_connections` apply. A request that a pooled connection did not send (the
//! upstream closed it while idle) is sent again on a fresh one, so idle-connection races never
//! reach the client.
//!
//! Compared with a general-purpose client, there is no pool key to hash, no checkout future
//! and no task per returned connection: a request costs a lock, a pop and a push.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::connector::{ConnectError, EndpointConnector, UpstreamConn};
use crate::body::{BoxError, ProxyBody};

/// Why a request could not be sent to the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("HTTP/{version} handshake with {address}: {source}")]
    Handshake {
        version: u8,
        address: String,
        #[source]
        source: hyper::Error,
    },
    #[error("upstream {address}: {source}")]
    Send {
        address: String,
        #[source]
        source: hyper::Error,
    },
}

impl PoolError {
    /// Whether the request never reached the upstream (nothing to undo, safe to retry).
    pub fn is_connect(&self) -> bool {
        matches!(self, PoolError::Connect(_) | PoolError::Handshake { .. })
    }
}

/// How many pooled connections a request tries before asking for a fresh one.
const STALE_ATTEMPTS: usize = 3;

pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: EndpointConnector,
    address: String,
    /// Speak HTTP/2 to this endpoint even without ALPN (h2c or h2 over TLS).
    http2_only: bool,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<SharedH2>>,
}

struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// The endpoint's HTTP/2 connection, which all requests share.
struct SharedH2 {
    sender: http2::SendRequest<ProxyBody>,
    streams: Arc<Streams>,
}

/// The streams open on an HTTP/2 connection, so that one without any for the idle timeout
/// closes like an idle HTTP/1.1 connection (and its endpoint's name is resolved again).
struct Streams {
    open: AtomicUsize,
    quiet_since: Mutex<Instant>,
}

impl Streams {
    /// How long no stream has been open; `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(
            self.quiet_since
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed(),
        )
    }
}

/// One stream on a shared HTTP/2 connection, open until dropped (with its response body).
struct Stream(Arc<Streams>);

impl Stream {
    fn open(streams: &Arc<Streams>) -> Stream {
        streams.open.fetch_add(1, Ordering::AcqRel);
        Stream(streams.clone())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut quiet = self.0.quiet_since.lock().unwrap_or_else(|e| e.into_inner());
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            *quiet = Instant::now();
        }
    }
}

impl Pool {
    pub fn new(
        connector: EndpointConnector,
        address: &str,
        http2_only: bool,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                connector,
                address: address.to_string(),
                http2_only,
                idle_timeout,
                max_idle,
                idle: Mutex::new(Vec::new()),
                h2: Mutex::new(None),
            }),
        }
    }

    /// Sends a request (its URI carries the path, and for HTTP/2 the scheme and authority)
    /// and returns the response, whose body hands the connection back when read to the end.
    pub async fn send(
        &self,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let inner = &self.inner;
        if let Some((sender, streams)) = inner.shared_h2() {
            return inner.send_h2(sender, &streams, request).await;
        }
        // HTTP/1.1 requests go out in origin form (`GET /path`); HTTP/2 needs the absolute URI.
        // A request already in origin form (the proxy's own, to an HTTP/1.1 cluster) is sent
        // as it is.
        // An upstream may answer before it has read the whole request body (a 401 or 413 to
        // an upload); the connection is still sending it then, and must not be lent to the
        // next request, which would wait behind the rest of someone else's upload.
        let uploaded = if request.body().is_end_stream() {
            None
        } else {
            let done = Arc::new(AtomicBool::new(false));
            let flag = done.clone();
            request = request.map(|inner| Uploading { inner, done: flag }.boxed_unsync());
            Some(done)
        };
        let absolute = match request.uri().authority() {
            Some(_) => {
                let absolute = request.uri().clone();
                *request.uri_mut() = origin_form(&absolute);
                Some(absolute)
            }
            None => None,
        };
        for _ in 0..STALE_ATTEMPTS {
            let Some(mut sender) = inner.take_idle() else {
                break;
            };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(inner.lease(response, sender, uploaded)),
                Err(mut err) => match err.take_message() {
                    // Never written: the connection was closing under us; try another.
                    Some(unsent) => request = unsent,
                    None => {
                        return Err(PoolError::Send {
                            address: inner.address.clone(),
                            source: err.into_error(),
                        });
                    }
                },
            }
        }
        match inner.connect().await? {
            Fresh::Http1(mut sender) => match sender.send_request(request).await {
                Ok(response) => Ok(inner.lease(response, sender, uploaded)),
                Err(source) => Err(PoolError::Send {
                    address: inner.address.clone(),
                    source,
                }),
            },
            Fresh::Http2(sender, streams) => {
                if let Some(absolute) = absolute {
                    *request.uri_mut() = absolute;
                }
                inner.send_h2(sender, &streams, request).await
            }
        }
    }

    /// Closes idle connections that have waited longer than the idle timeout: HTTP/1.1 ones
    /// in the idle stack, and the HTTP/2 connection once no stream was open on it for as long.
    pub fn evict_idle(&self) {
        let limit = self.inner.idle_timeout;
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|i| i.since.elapsed() < limit && !i.sender.is_closed());
        drop(idle);
        let mut h2 = self.inner.h2.lock().unwrap_or_else(|e| e.into_inner());
        if h2.as_ref().is_some_and(|s| {
            s.sender.is_closed() || s.streams.idle_for().is_some_and(|idle| idle >= limit)
        }) {
            // Streams still starting on it hold their own handles and finish.
            *h2 = None;
        }
    }

    /// The endpoint's connector, for connections that are not HTTP (TCP proxying).
    pub fn connector(&self) -> &EndpointConnector {
        &self.inner.connector
    }

    /// Idle HTTP/1.1 connections now (for tests and `/clusters`).
    pub fn idle_count(&self) -> usize {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// `/path?query` of an absolute URI.
fn origin_form(uri: &http::Uri) -> http::Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    http::Uri::from_parts(parts).unwrap_or_else(|_| http::Uri::from_static("/"))
}

enum Fresh {
    Http1(http1::SendRequest<ProxyBody>),
    Http2(http2::SendRequest<ProxyBody>, Arc<Streams>),
}

impl Inner {
    fn shared_h2(&self) -> Option<(http2::SendRequest<ProxyBody>, Arc<Streams>)> {
        let mut h2 = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        match h2.as_ref() {
            Some(shared) if !shared.sender.is_closed() => {
                Some((shared.sender.clone(), shared.streams.clone()))
            }
            Some(_) => {
                *h2 = None;
                None
            }
            None => None,
        }
    }

    /// The most recently used idle connection that is still open and within its idle time.
    fn take_idle(&self) -> Option<http1::SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = idle.pop() {
            if !entry.sender.is_closed() && entry.since.elapsed() < self.idle_timeout {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: http1::SendRequest<ProxyBody>) {
        if self.max_idle == 0 {
            return; // no idle connections kept: this one closes
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.max_idle {
            // The oldest goes; a burst's extra connections are the ones to close.
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    async fn send_h2(
        &self,
        mut sender: http2::SendRequest<ProxyBody>,
        streams: &Arc<Streams>,
        request: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let stream = Stream::open(streams);
        match sender.send_request(request).await {
            Ok(response) => Ok(response.map(|body| PooledBody {
                inner: body,
                lease: None,
                stream: Some(stream),
            })),
            Err(source) => Err(PoolError::Send {
                address: self.address.clone(),
                source,
            }),
        }
    }

    fn lease(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: http1::SendRequest<ProxyBody>,
        uploaded: Option<Arc<AtomicBool>>,
    ) -> Response<PooledBody> {
        // A 101 hands the connection to the upgrade; it is never pooled again.
        let lease = (response.status() != http::StatusCode::SWITCHING_PROTOCOLS).then(|| Lease {
            pool: Arc::downgrade(self),
            sender,
            uploaded,
        });
        response.map(|body| PooledBody {
            inner: body,
            lease,
            stream: None,
        })
    }

    async fn connect(&self) -> Result<Fresh, PoolError> {
        let conn: UpstreamConn = self.connector.connect().await?;
        if self.http2_only || conn.negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(conn)
                .await
                .map_err(|source| PoolError::Handshake {
                    version: 2,
                    address: self.address.clone(),
                    source,
                })?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "upstream HTTP/2 connection ended");
                }
            });
            let streams = Arc::new(Streams {
                open: AtomicUsize::new(0),
                quiet_since: Mutex::new(Instant::now()),
            });
            *self.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(SharedH2 {
                sender: sender.clone(),
                streams: streams.clone(),
            });
            return Ok(Fresh::Http2(sender, streams));
        }
        let (sender, connection) =
            http1::Builder::new()
                .handshake(conn)
                .await
                .map_err(|source| PoolError::Handshake {
                    version: 1,
                    address: self.address.clone(),
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(error = %err, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(Fresh::Http1(sender))
    }
}

/// An HTTP/1.1 connection lent to one exchange.
struct Lease {
    pool: Weak<Inner>,
    sender: http1::SendRequest<ProxyBody>,
    /// Set once the request body went out whole; `None` for a request without one.
    uploaded: Option<Arc<AtomicBool>>,
}

pin_project_lite::pin_project! {
    /// A request body that says when it has been sent to its end.
    struct Uploading {
        #[pin]
        inner: ProxyBody,
        done: Arc<AtomicBool>,
    }
}

impl Body for Uploading {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.done.store(true, Ordering::Release);
        }
        polled
    }

    // hyper stops polling a body that says it has ended (its length reached).
    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.done.store(true, Ordering::Release);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// An upstream response body. Read to the end, it returns its HTTP/1.1 connection to the
    /// pool; dropped before that, the connection closes with it (it may hold unread bytes).
    pub struct PooledBody {
        #[pin]
        inner: Incoming,
        lease: Option<Lease>,
        stream: Option<Stream>,
    }

    impl PinnedDrop for PooledBody {
        fn drop(this: Pin<&mut Self>) {
            // An empty body (204, HEAD, `content-length: 0`) is never polled to its end.
            let this = this.project();
            if this.inner.is_end_stream() {
                give_back(this.lease.take());
            }
        }
    }
}

fn give_back(lease: Option<Lease>) {
    if let Some(lease) = lease
        && lease
            .uploaded
            .as_ref()
            .is_none_or(|done| done.load(Ordering::Acquire))
        && let Some(pool) = lease.pool.upgrade()
    {
        pool.put_idle(lease.sender);
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            give_back(this.lease.take());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl PooledBody {
    pub fn boxed(self) -> ProxyBody {
        self.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()
    }
}
