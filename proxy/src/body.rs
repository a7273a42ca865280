//! The one body type the proxy moves around: a boxed stream of `Bytes` frames, so downstream
//! bodies flow to the upstream (and back) chunk by chunk, with trailers, and never buffered whole
//! unless a retry or a filter needs it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// `bytes`, then `trailers`: a buffered body replayed whole.
pub fn with_trailers(bytes: Bytes, trailers: http::HeaderMap) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .with_trailers(std::future::ready(Some(Ok(trailers))))
        .boxed_unsync()
}

/// What became of a downstream request body on its way upstream, for telling whose fault a
/// failed upstream request was, and when the request was complete.
#[derive(Debug, Default)]
pub struct BodyWatch {
    /// When the body was read to its end: where the route's timeouts start, as Envoy's do.
    ended: std::sync::OnceLock<tokio::time::Instant>,
    /// Who waits for `ended`.
    waker: futures_util::task::AtomicWaker,
    /// Frames read so far: whether an unfinished body is still moving.
    frames: std::sync::atomic::AtomicU64,
    /// A filter holds the body, paused (waiting for a callout's answer, say).
    held: AtomicBool,
    /// The body went past the listener's `max_request_body_bytes` (and was cut off there).
    pub too_large: AtomicBool,
    /// The body failed on the downstream side: malformed, cut off, too large, or silent.
    pub failed: AtomicBool,
    /// The client went silent in the middle of the body for longer than the route allows.
    pub timed_out: AtomicBool,
}

impl BodyWatch {
    pub fn too_large(&self) -> bool {
        self.too_large.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Marks the body read to its end (the first time counts), and wakes who waits for it.
    fn end(&self) {
        if self.ended.set(tokio::time::Instant::now()).is_ok() {
            self.waker.wake();
        }
    }

    /// Whether a filter holds the body paused now: the wait is the filter's (bounded by its
    /// pause limit), not a stalled upload.
    pub fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Notes that a filter holds the body paused, or has let it go.
    pub fn set_held(&self, held: bool) {
        self.held.store(held, Ordering::Relaxed);
    }

    /// How many frames of the body went through so far.
    pub fn progress(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// When the body ended, if it has.
    pub fn ended(&self) -> Option<tokio::time::Instant> {
        self.ended.get().copied()
    }

    /// When the body ended; if it has not yet, `cx` is woken when it does.
    pub fn poll_ended(&self, cx: &mut Context<'_>) -> Option<tokio::time::Instant> {
        if let Some(at) = self.ended() {
            return Some(at);
        }
        self.waker.register(cx.waker());
        self.ended()
    }
}

/// `body`, watched by `watch`, and cut off with an error once more than `max` bytes of data
/// went through.
pub fn watched(body: ProxyBody, max: Option<u64>, watch: Arc<BodyWatch>) -> ProxyBody {
    Watched {
        inner: body,
        left: max,
        watch,
        marks_end: true,
    }
    .boxed_unsync()
}

/// As [`watched`], for a body that goes through filters next: its end is the request's end
/// only once the filters let it go, which [`ends_request`] marks.
pub fn watched_before_filters(
    body: ProxyBody,
    max: Option<u64>,
    watch: Arc<BodyWatch>,
) -> ProxyBody {
    Watched {
        inner: body,
        left: max,
        watch,
        marks_end: false,
    }
    .boxed_unsync()
}

/// `body` (a request body out of its filters), whose end marks the request's end in `watch`:
/// a filter holding the body (waiting for a callout, say) does not eat into the route's
/// timeout, as in Envoy, where the router sees the end only once the filters continue.
pub fn ends_request(body: ProxyBody, watch: Arc<BodyWatch>) -> ProxyBody {
    EndsRequest { inner: body, watch }.boxed_unsync()
}

pin_project_lite::pin_project! {
    struct Watched {
        #[pin]
        inner: ProxyBody,
        left: Option<u64>,
        watch: Arc<BodyWatch>,
        // Whether this body's end is the request's (no filters after it).
        marks_end: bool,
    }
}

pin_project_lite::pin_project! {
    struct EndsRequest {
        #[pin]
        inner: ProxyBody,
        watch: Arc<BodyWatch>,
    }
}

impl http_body::Body for EndsRequest {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        if ends_body(&frame, this.inner.is_end_stream()) {
            this.watch.end();
        }
        Poll::Ready(frame)
    }

    // hyper stops polling a body that says it has ended.
    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.watch.end();
        }
        end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `frame`, just read from a body whose `is_end_stream` now says `inner_ended`, ends
/// it. Trailers do: an HTTP/1.1 chunked body never says it has ended, and its reader polls no
/// further after them.
fn ends_body(frame: &Option<Result<http_body::Frame<Bytes>, BoxError>>, inner_ended: bool) -> bool {
    match frame {
        Some(Ok(frame)) => frame.is_trailers() || inner_ended,
        Some(Err(_)) => false,
        None => true,
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        if *this.marks_end && ends_body(&frame, this.inner.is_end_stream()) {
            this.watch.end();
        }
        match &frame {
            Some(Ok(frame)) => {
                this.watch.frames.fetch_add(1, Ordering::Relaxed);
                if let (Some(left), Some(data)) = (this.left.as_mut(), frame.data_ref()) {
                    match left.checked_sub(data.len() as u64) {
                        Some(rest) => *left = rest,
                        None => {
                            this.watch.too_large.store(true, Ordering::Relaxed);
                            this.watch.failed.store(true, Ordering::Relaxed);
                            return Poll::Ready(Some(Err(
                                "request body larger than the listener allows".into(),
                            )));
                        }
                    }
                }
            }
            Some(Err(err)) => {
                if err.is::<Silent>() {
                    this.watch.timed_out.store(true, Ordering::Relaxed);
                }
                this.watch.failed.store(true, Ordering::Relaxed);
            }
            None => {}
        }
        Poll::Ready(frame)
    }

    // hyper stops polling a body that says it has ended (its length reached).
    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end && self.marks_end {
            self.watch.end();
        }
        end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The end of a route's timeout, for the response body that must finish by then.
pub struct Deadline {
    pub at: tokio::time::Instant,
    /// Counts the bodies cut off at `at` (the cluster's `upstream_rq_timeout`).
    pub expired: metrics::Counter,
}

/// `body`, cut off with an error when it stays silent (no frame, no end) for `idle`, or is
/// still going at `deadline`: an upstream that stalls in the middle of its response, or
/// trickles it for ever, must not hold the client past its route's limits. The timer is armed
/// only while the body waits, so a body that is ready costs nothing; one that outlives its
/// deadline is cut at its next wait.
pub fn time_limited(body: ProxyBody, idle: Duration, deadline: Option<Deadline>) -> ProxyBody {
    TimeLimited {
        inner: body,
        idle,
        deadline,
        timer: None,
        armed: false,
        side: Side::Response,
    }
    .boxed_unsync()
}

/// A downstream request body, cut off with a [`Silent`] error when the client stays silent
/// in the middle of it for `idle` (Envoy's stream idle timeout, which watches both
/// directions): a client that stops sending must not hold its request, and the listener's
/// in-flight slot, for ever.
pub fn idle_limited(body: ProxyBody, idle: Duration) -> ProxyBody {
    TimeLimited {
        inner: body,
        idle,
        deadline: None,
        timer: None,
        armed: false,
        side: Side::Request,
    }
    .boxed_unsync()
}

/// A request body that stayed silent past the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body was silent for {0:?} (idle_timeout)")]
pub struct Silent(Duration);

#[derive(Clone, Copy)]
enum Side {
    Request,
    Response,
}

struct TimeLimited {
    inner: ProxyBody,
    idle: Duration,
    deadline: Option<Deadline>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether `timer` counts the current wait (it is re-armed after each frame).
    armed: bool,
    side: Side,
}

impl http_body::Body for TimeLimited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let idle_at = tokio::time::Instant::now() + this.idle;
                let wake_at = this
                    .deadline
                    .as_ref()
                    .map_or(idle_at, |deadline| idle_at.min(deadline.at));
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(wake_at)));
                if !this.armed {
                    timer.as_mut().reset(wake_at);
                    this.armed = true;
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Side::Request = this.side {
                    return Poll::Ready(Some(Err(Box::new(Silent(this.idle)))));
                }
                let message = match &this.deadline {
                    Some(deadline) if tokio::time::Instant::now() >= deadline.at => {
                        deadline.expired.increment(1);
                        "the upstream's response did not finish within the route's timeout"
                            .to_string()
                    }
                    _ => format!(
                        "the upstream's response body was silent for {:?} (idle_timeout)",
                        this.idle
                    ),
                };
                Poll::Ready(Some(Err(message.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `first`'s frames, then `rest`'s: a body whose beginning was already read.
pub fn prefixed(first: ProxyBody, rest: ProxyBody) -> ProxyBody {
    Prefixed {
        first: Some(first),
        rest,
    }
    .boxed_unsync()
}

struct Prefixed {
    first: Option<ProxyBody>,
    rest: ProxyBody,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(first) = this.first.as_mut() {
            match std::task::ready!(Pin::new(first).poll_frame(cx)) {
                Some(frame) => return Poll::Ready(Some(frame)),
                None => this.first = None,
            }
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.as_ref().is_none_or(|f| f.is_end_stream()) && self.rest.is_end_stream()
    }
}

/// A downstream or upstream hyper body, boxed.
pub fn incoming(body: hyper::body::Incoming) -> ProxyBody {
    body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(body: ProxyBody) {
        body.collect().await.expect("body");
    }

    /// A request body that goes through filters ends the request when the filters let it
    /// go, not when the client finished sending it: the route's timeout starts there.
    #[tokio::test]
    async fn a_filtered_body_ends_the_request_where_the_filters_let_it_go() {
        let plain = Arc::new(BodyWatch::default());
        drain(watched(full("abc"), None, plain.clone())).await;
        assert!(plain.ended().is_some());

        let filtered = Arc::new(BodyWatch::default());
        let held = watched_before_filters(full("abc"), None, filtered.clone());
        drain(held).await;
        assert_eq!(filtered.ended(), None, "the filters still hold it");
        assert_eq!(filtered.progress(), 1, "it is still watched");
        drain(ends_request(full("abc"), filtered.clone())).await;
        assert!(filtered.ended().is_some());

        // Trailers end it too (hyper polls no further after them).
        let trailed = Arc::new(BodyWatch::default());
        let mut body = ends_request(
            with_trailers(Bytes::from_static(b"abc"), http::HeaderMap::new()),
            trailed.clone(),
        );
        while let Some(frame) = body.frame().await {
            if frame.expect("frame").is_trailers() {
                break;
            }
        }
        assert!(trailed.ended().is_some());
    }
}
