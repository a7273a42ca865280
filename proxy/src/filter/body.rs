//! Bodies and trailers through the filters' callbacks (`proxy_on_request_body`,
//! `proxy_on_request_trailers`, and their response forms), chunk by chunk, in Envoy's order.
//!
//! - Each data frame goes through the filters with `end_of_stream` false, but for the last one
//!   when the body's end is known with it (its length reached, an HTTP/2 frame ending the
//!   stream): that one carries `end_of_stream` true, as in Envoy. A filter that
//!   returns `Pause` has its input buffered and is called again with everything buffered when
//!   more arrives (Envoy's `StopIterationAndBuffer`); what it leaves in the buffer when it
//!   continues is what flows on. One filter may hold at most the listener's
//!   `filter_buffer_limit_bytes`: beyond it a request is answered 413 and a response (its
//!   headers gone already) is reset, as Envoy does at its buffer limit.
//! - A body that ends without trailers gives every filter a last call with `end_of_stream`
//!   true, where a filter may still add trailers (they are sent after the data).
//! - A filter that returns `Pause` at the body's end, or on trailers, holds the stream as a
//!   paused header phase does: nothing flows past it until it resumes the stream
//!   (`proxy_continue_stream`, say after a callout) or answers, within the pause limit (past
//!   it, the filter has failed). Meanwhile the body (or the trailers) stays with the filter's
//!   VM, so a callout answer can still read and change it.
//! - Trailers go to each filter in turn: any data reaching it first, then its trailers
//!   callback, then whatever it held flows on with the trailers.
//! - A request filter answering itself (`proxy_send_local_response`) from a body or trailers
//!   callback stops the upstream request; its answer is what the client gets. In the response
//!   direction the headers are already gone, so that stream is reset instead.
//! - A filter closing the stream (`proxy_close_stream`) resets it, as Envoy does: a request
//!   is never answered, a response is cut off.
//! - A failing fail-closed filter aborts the body (the peer sees a reset); a fail-open one is
//!   bypassed from then on.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use wasmesh_host::{Action, FailurePolicy, HeaderMap as Pairs, HttpStream, LocalResponse};

use super::pairs::{apply_pairs, push_headers};
use super::{RequestAttributes, Settled, SharedStream, lock, resolve, resumption};

/// Which way a body flows, and so which callbacks see it and in what order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Request bodies: `proxy_on_request_body`/`_trailers`, in chain order.
    Request,
    /// Response bodies: `proxy_on_response_body`/`_trailers`, in reverse order.
    Response,
}

/// How long and how much the filters may hold a body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// How long a filter may pause the stream (the route's pause limit).
    pub pause: Duration,
    /// Most bytes one filter may hold buffered (the listener's `filter_buffer_limit_bytes`).
    pub buffer: usize,
}

/// Where a request filter's decision, made in a body or trailers callback, waits for the
/// forwarding path: an answer to send instead of the upstream's, or a reset.
pub type Answer = Arc<Mutex<Option<Interrupt>>>;

/// Takes what a request filter left in `answer`, if it left anything.
pub fn take_answer(answer: Option<&Answer>) -> Option<Interrupt> {
    answer.and_then(|a| a.lock().unwrap_or_else(|e| e.into_inner()).take())
}

/// A request filter's decision to stop the request from its body or trailers.
pub enum Interrupt {
    /// It answered itself (`proxy_send_local_response`).
    Respond(LocalResponse),
    /// It closed the stream (`proxy_close_stream`).
    Reset,
    /// It failed, and fails closed: answered 503, as for a failure in a header callback.
    Failed,
    /// It buffered more of the body than `filter_buffer_limit_bytes`: answered 413.
    TooLarge,
}

/// Runs `body` through the filters of `streams` (in chain order; reversed here for responses).
/// A request body's `watch` is told while a filter holds it paused, so the request's timers
/// do not take that wait for a stalled upload.
pub fn filter_body(
    body: crate::body::ProxyBody,
    streams: Vec<SharedStream>,
    direction: Direction,
    limits: BodyLimits,
    attributes: Option<Arc<RequestAttributes>>,
    answer: Option<Answer>,
    watch: Option<Arc<crate::body::BodyWatch>>,
) -> crate::body::ProxyBody {
    use http_body_util::BodyExt;
    let mut streams = streams;
    if direction == Direction::Response {
        streams.reverse();
    }
    let buffers = vec![Vec::new(); streams.len()];
    BodyFilter {
        inner: body,
        filters: Filters {
            streams,
            buffers,
            bypass: Vec::new(),
            direction,
            limits,
        },
        finished: false,
        waiting: None,
        attributes,
        answer,
        watch,
        pending_trailers: None,
    }
    .boxed_unsync()
}

pin_project_lite::pin_project! {
    struct BodyFilter {
        #[pin]
        inner: crate::body::ProxyBody,
        filters: Filters,
        finished: bool,
        // A filter that paused at the body's end or on trailers, until it resumes.
        waiting: Option<Waiting>,
        // Where the body's size is counted (`request.size`, `response.size`).
        attributes: Option<Arc<RequestAttributes>>,
        answer: Option<Answer>,
        watch: Option<Arc<crate::body::BodyWatch>>,
        // Trailers already through the filters, sent after the last data frame.
        pending_trailers: Option<HeaderMap>,
    }
}

/// The filters a body runs through, in the order it meets them, and what each holds.
struct Filters {
    streams: Vec<SharedStream>,
    /// What each filter holds while it buffers.
    buffers: Vec<Vec<u8>>,
    /// Fail-open filters that failed: the body goes past them from then on.
    bypass: Vec<usize>,
    direction: Direction,
    limits: BodyLimits,
}

/// A filter that paused the stream at the body's end or on trailers; the pass through the
/// chain picks up after it once it resumes.
struct Waiting {
    index: usize,
    at: Resume,
    /// Whether it resumed within the pause limit (see [`resumption`]).
    resumed: Pin<Box<dyn Future<Output = bool> + Send>>,
}

/// Which callback a filter paused in.
enum Resume {
    /// The body's last: the body, as the filter leaves it, flows on to the end.
    Body,
    /// Trailers: `data` reached the filter with them and goes on after the body it held
    /// (which waits with the VM too).
    Trailers { data: Vec<u8> },
}

/// How one pass through the chain ended.
enum Pass<T> {
    /// Every filter let it through: this flows on.
    Through(T),
    /// A filter buffers it until more arrives.
    Buffering,
    /// The filter at this index paused the stream.
    Paused(usize, Resume),
}

impl<T> Pass<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Pass<U> {
        match self {
            Pass::Through(t) => Pass::Through(f(t)),
            Pass::Buffering => Pass::Buffering,
            Pass::Paused(index, at) => Pass::Paused(index, at),
        }
    }
}

/// What flows out of a pass: data, then trailers if the pass ended the body with them.
type Out = (Vec<u8>, Option<HeaderMap>);

/// Why a body stops flowing.
enum Stop {
    /// A fail-closed filter failed.
    Failed(String),
    /// A filter answered itself.
    Answered(LocalResponse),
    /// A filter closed the stream.
    Closed,
    /// This filter buffered more than the limit.
    TooLarge(String),
}

/// Whether the filter just called stopped the body: closed the stream or answered.
fn interrupted(s: &mut HttpStream) -> Result<(), Stop> {
    if s.data.close_requested {
        return Err(Stop::Closed);
    }
    match s.take_local_response() {
        Some(local) => Err(Stop::Answered(local)),
        None => Ok(()),
    }
}

/// One filter's body callback over `input`; returns the callback's result and what flows on
/// (nothing, while the filter holds the stream paused: its body is with the VM).
fn body_callback(
    s: &mut HttpStream,
    direction: Direction,
    input: Vec<u8>,
    end_of_stream: bool,
) -> (Result<Action, wasmesh_host::FilterFailure>, Vec<u8>) {
    match direction {
        Direction::Request => {
            s.data.request_body = input;
            let r = s.on_request_body(end_of_stream);
            (r, std::mem::take(&mut s.data.request_body))
        }
        Direction::Response => {
            s.data.response_body = input;
            let r = s.on_response_body(end_of_stream);
            (r, std::mem::take(&mut s.data.response_body))
        }
    }
}

/// The body as a filter left it (after it resumed).
fn take_body(s: &mut HttpStream, direction: Direction) -> Vec<u8> {
    match direction {
        Direction::Request => std::mem::take(&mut s.data.request_body),
        Direction::Response => std::mem::take(&mut s.data.response_body),
    }
}

/// The trailers as a filter left them.
fn take_trailers(s: &mut HttpStream, direction: Direction) -> Pairs {
    match direction {
        Direction::Request => std::mem::take(&mut s.data.request_trailers),
        Direction::Response => std::mem::take(&mut s.data.response_trailers),
    }
}

/// A callback failed: a fail-closed filter stops the body, a fail-open one is bypassed.
fn failed(
    s: &HttpStream,
    failure: wasmesh_host::FilterFailure,
    index: usize,
    bypass: &mut Vec<usize>,
) -> Result<(), Stop> {
    if s.plugin().failure_policy() == FailurePolicy::FailClosed {
        return Err(Stop::Failed(failure.to_string()));
    }
    bypass.push(index);
    Ok(())
}

/// Keeps what filter `index` (stream `s`) buffers, within the limit.
fn hold(
    s: &HttpStream,
    buffers: &mut [Vec<u8>],
    index: usize,
    data: Vec<u8>,
    limit: usize,
) -> Result<(), Stop> {
    if data.len() > limit {
        buffer_exceeded(s.plugin().name());
        return Err(Stop::TooLarge(s.plugin().name().to_string()));
    }
    buffers[index] = data;
    Ok(())
}

/// Counts a filter holding more than `filter_buffer_limit_bytes`, with the host's other
/// limits (`wasmesh_filter_limit_exceeded_total{plugin,limit="buffer"}`).
pub(crate) fn buffer_exceeded(plugin: &str) {
    metrics::counter!(
        "wasmesh_filter_limit_exceeded_total",
        "plugin" => plugin.to_string(),
        "limit" => "buffer"
    )
    .increment(1);
}

/// What filter `index` held, followed by `data`: it flows on in that order.
fn release(buffers: &mut [Vec<u8>], index: usize, data: Vec<u8>) -> Vec<u8> {
    joined(std::mem::take(&mut buffers[index]), data)
}

/// `held` followed by `data`, without copying when nothing was held (the common case).
fn joined(mut held: Vec<u8>, data: Vec<u8>) -> Vec<u8> {
    if held.is_empty() {
        return data;
    }
    held.extend_from_slice(&data);
    held
}

impl Filters {
    /// Body data through the whole chain; `last` when the body ends with it.
    fn data(
        &mut self,
        data: Vec<u8>,
        last: bool,
        attributes: Option<&Arc<RequestAttributes>>,
    ) -> Result<Pass<Out>, Stop> {
        self.body_from(0, data, last, attributes)
    }

    /// Trailers through the whole chain (see the module docs).
    fn trailers(
        &mut self,
        trailers: &HeaderMap,
        attributes: Option<&Arc<RequestAttributes>>,
    ) -> Result<Pass<Out>, Stop> {
        let mut pairs = Vec::with_capacity(trailers.len());
        push_headers(&mut pairs, trailers);
        self.trailers_from(0, Vec::new(), pairs, attributes)
    }

    /// Picks the pass up after the filter at `index`, which paused it in `at`; `resumed` is
    /// whether it resumed within the pause limit.
    fn resume(
        &mut self,
        index: usize,
        at: Resume,
        resumed: bool,
        attributes: Option<&Arc<RequestAttributes>>,
    ) -> Result<Pass<Out>, Stop> {
        let stream = &self.streams[index];
        match resolve(stream, Some(resumed)) {
            Settled::Continue => {}
            Settled::Respond(local) => return Err(Stop::Answered(local)),
            Settled::Reset => return Err(Stop::Closed),
            Settled::Failed(message) => {
                if lock(stream).plugin().failure_policy() == FailurePolicy::FailClosed {
                    return Err(Stop::Failed(message));
                }
                self.bypass.push(index);
            }
        }
        match at {
            Resume::Body => {
                let data = take_body(&mut lock(stream), self.direction);
                self.body_from(index + 1, data, true, attributes)
            }
            Resume::Trailers { data } => {
                let (pairs, held) = {
                    let mut s = lock(stream);
                    let pairs = take_trailers(&mut s, self.direction);
                    (pairs, take_body(&mut s, self.direction))
                };
                self.trailers_from(index + 1, joined(held, data), pairs, attributes)
            }
        }
    }

    fn body_from(
        &mut self,
        start: usize,
        data: Vec<u8>,
        last: bool,
        attributes: Option<&Arc<RequestAttributes>>,
    ) -> Result<Pass<Out>, Stop> {
        let pass = self.run_chain(start, data, last)?;
        Ok(pass.map(|data| {
            let trailers = match last {
                true => added(&self.streams, self.direction, attributes),
                false => None,
            };
            (data, trailers)
        }))
    }

    fn trailers_from(
        &mut self,
        start: usize,
        data: Vec<u8>,
        pairs: Pairs,
        attributes: Option<&Arc<RequestAttributes>>,
    ) -> Result<Pass<Out>, Stop> {
        let pass = self.run_trailers(start, data, pairs)?;
        Ok(pass.map(|(data, pairs)| {
            let trailers = outgoing_trailers(pairs, self.direction, attributes);
            (data, Some(trailers))
        }))
    }

    /// Runs `data` through the filters from `start` on.
    fn run_chain(
        &mut self,
        start: usize,
        mut data: Vec<u8>,
        end_of_stream: bool,
    ) -> Result<Pass<Vec<u8>>, Stop> {
        let Filters {
            streams,
            buffers,
            bypass,
            direction,
            limits,
        } = self;
        for (i, stream) in streams.iter().enumerate().skip(start) {
            if bypass.contains(&i) {
                continue;
            }
            let mut s = lock(stream);
            let input = release(buffers, i, data);
            let (result, out) = body_callback(&mut s, *direction, input, end_of_stream);
            // Paused at the end: the body waits with the filter's VM until it resumes.
            if end_of_stream && matches!(result, Ok(Action::Pause)) && s.is_paused() {
                return Ok(Pass::Paused(i, Resume::Body));
            }
            data = out;
            interrupted(&mut s)?;
            match result {
                Ok(Action::Pause) if !end_of_stream => {
                    hold(&s, buffers, i, data, limits.buffer)?;
                    return Ok(Pass::Buffering);
                }
                Ok(_) => {}
                Err(failure) => failed(&s, failure, i, bypass)?,
            }
        }
        Ok(Pass::Through(data))
    }

    /// Trailers through the filters from `start` on, after `data` that reached them first;
    /// ends with the data that flows out before them and the trailers as the filters left
    /// them.
    fn run_trailers(
        &mut self,
        start: usize,
        mut data: Vec<u8>,
        mut pairs: Pairs,
    ) -> Result<Pass<(Vec<u8>, Pairs)>, Stop> {
        let Filters {
            streams,
            buffers,
            bypass,
            direction,
            limits,
        } = self;
        for (i, stream) in streams.iter().enumerate().skip(start) {
            if bypass.contains(&i) {
                continue;
            }
            let mut s = lock(stream);
            if !data.is_empty() {
                let input = release(buffers, i, data);
                let (result, out) = body_callback(&mut s, *direction, input, false);
                interrupted(&mut s)?;
                match result {
                    // Held until its trailers callback lets it go.
                    Ok(Action::Pause) => {
                        hold(&s, buffers, i, out, limits.buffer)?;
                        data = Vec::new();
                    }
                    Ok(Action::Continue) => data = out,
                    Err(failure) => {
                        data = out;
                        failed(&s, failure, i, bypass)?;
                        continue;
                    }
                }
            }
            // The body it holds is its to read and change in its trailers callback (and in
            // a callout's answer while it pauses there), as Envoy's buffered body is.
            let held = std::mem::take(&mut buffers[i]);
            let result = match direction {
                Direction::Request => {
                    s.data.request_body = held;
                    s.data.request_trailers = std::mem::take(&mut pairs);
                    s.on_request_trailers()
                }
                Direction::Response => {
                    s.data.response_body = held;
                    s.data.response_trailers = std::mem::take(&mut pairs);
                    s.on_response_trailers()
                }
            };
            // Paused: the trailers and the body wait with the filter's VM until it resumes.
            if matches!(result, Ok(Action::Pause)) && s.is_paused() {
                return Ok(Pass::Paused(i, Resume::Trailers { data }));
            }
            pairs = take_trailers(&mut s, *direction);
            let held = take_body(&mut s, *direction);
            interrupted(&mut s)?;
            if let Err(failure) = result {
                failed(&s, failure, i, bypass)?;
            }
            // What this filter held flows on, ahead of anything behind it.
            data = joined(held, data);
        }
        Ok(Pass::Through((data, pairs)))
    }
}

/// Trailers the filters added in their last body callback of a body that had none.
fn added_trailers(streams: &[SharedStream], direction: Direction) -> Pairs {
    let mut pairs = Vec::new();
    for stream in streams {
        pairs.extend(take_trailers(&mut lock(stream), direction));
    }
    pairs
}

/// [`added_trailers`] as the trailers to send, if there are any.
fn added(
    streams: &[SharedStream],
    direction: Direction,
    attributes: Option<&Arc<RequestAttributes>>,
) -> Option<HeaderMap> {
    let added = added_trailers(streams, direction);
    (!added.is_empty()).then(|| outgoing_trailers(added, direction, attributes))
}

/// The trailers to send as the filters left them; the response's are also kept for filters
/// that read them later (`on_log`, the `response.trailers` attribute).
fn outgoing_trailers(
    pairs: Pairs,
    direction: Direction,
    attributes: Option<&Arc<RequestAttributes>>,
) -> HeaderMap {
    let map = to_header_map(&pairs);
    if direction == Direction::Response
        && let Some(attributes) = attributes
    {
        attributes.keep_response_trailers(pairs);
    }
    map
}

fn to_header_map(pairs: &Pairs) -> HeaderMap {
    let mut map = HeaderMap::new();
    apply_pairs(pairs, &mut map);
    map
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
            if let Some(trailers) = this.pending_trailers.take() {
                return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
            }
            let direction = this.filters.direction;
            let attributes = this.attributes.as_ref();
            let outcome = if let Some(waiting) = this.waiting.as_mut() {
                let resumed = match waiting.resumed.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(resumed) => resumed,
                };
                let Some(Waiting { index, at, .. }) = this.waiting.take() else {
                    continue;
                };
                if let Some(watch) = this.watch.as_ref() {
                    watch.set_held(false);
                }
                this.filters.resume(index, at, resumed, attributes)
            } else {
                if *this.finished {
                    return Poll::Ready(None);
                }
                let frame = match this.inner.as_mut().poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(frame) => frame,
                };
                match frame {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            if direction == Direction::Request
                                && let Some(attributes) = attributes
                            {
                                attributes.count_request_bytes(data.len());
                            }
                            // The body's last data when its end is known here (its length is
                            // reached, or an HTTP/2 frame ended the stream): one callback with
                            // `end_of_stream` true, as Envoy makes, not a second empty one.
                            let last = this.inner.is_end_stream();
                            *this.finished = last;
                            this.filters.data(data.to_vec(), last, attributes)
                        }
                        Err(frame) => match frame.into_trailers() {
                            Ok(trailers) => {
                                *this.finished = true;
                                this.filters.trailers(&trailers, attributes)
                            }
                            Err(_) => continue,
                        },
                    },
                    Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                    None => {
                        *this.finished = true;
                        this.filters.data(Vec::new(), true, attributes)
                    }
                }
            };
            let (out, trailers) = match outcome {
                Ok(Pass::Through(out)) => out,
                Ok(Pass::Buffering) => continue,
                Ok(Pass::Paused(index, at)) => {
                    let stream = &this.filters.streams[index];
                    let resumed = Box::pin(resumption(stream, this.filters.limits.pause));
                    *this.waiting = Some(Waiting { index, at, resumed });
                    if let Some(watch) = this.watch.as_ref() {
                        watch.set_held(true);
                    }
                    continue;
                }
                Err(stop) => {
                    *this.finished = true;
                    let message = stopped(stop, direction, this.answer.as_ref());
                    return Poll::Ready(Some(Err(message.into())));
                }
            };
            if direction == Direction::Response
                && let Some(attributes) = attributes
            {
                attributes.count_response_bytes(out.len());
            }
            match trailers {
                Some(trailers) if out.is_empty() => {
                    return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
                }
                Some(trailers) => {
                    // The last data goes out first; the trailers follow on the next poll.
                    *this.pending_trailers = Some(trailers);
                    return Poll::Ready(Some(Ok(http_body::Frame::data(out.into()))));
                }
                None if out.is_empty() => continue,
                None => return Poll::Ready(Some(Ok(http_body::Frame::data(out.into())))),
            }
        }
    }

    // Known once the last frame is out, so the request's end is seen without another poll.
    fn is_end_stream(&self) -> bool {
        self.finished && self.waiting.is_none() && self.pending_trailers.is_none()
    }
}

/// Tells the forwarding path why a request body stopped (through `answer`), and logs what
/// needs it; returns the error the body ends with.
fn stopped(stop: Stop, direction: Direction, answer: Option<&Answer>) -> String {
    let leave = |interrupt: Interrupt| {
        if let (Direction::Request, Some(answer)) = (direction, answer) {
            *answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(interrupt);
        }
    };
    match stop {
        Stop::Failed(message) => {
            tracing::warn!(error = %message, "filter failed on the body; aborting it (fail_closed)");
            leave(Interrupt::Failed);
            message
        }
        Stop::Closed => {
            leave(Interrupt::Reset);
            "a filter closed the stream".to_string()
        }
        Stop::TooLarge(plugin) => {
            tracing::warn!(
                %plugin,
                ?direction,
                "filter buffered more than filter_buffer_limit_bytes; stopping the body"
            );
            leave(Interrupt::TooLarge);
            "a filter buffered more than filter_buffer_limit_bytes".to_string()
        }
        Stop::Answered(local) => match (direction, answer) {
            (Direction::Request, Some(answer)) => {
                *answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(Interrupt::Respond(local));
                "a filter answered the request itself".to_string()
            }
            _ => {
                tracing::warn!(
                    status = local.status,
                    "a filter answered after the response headers were sent; resetting the stream"
                );
                "a filter answered after the response headers were sent".to_string()
            }
        },
    }
}
