//! Bodies and trailers through the filters' callbacks (`proxy_on_request_body`,
//! `proxy_on_request_trailers`, and their response forms), chunk by chunk, in Envoy's order.
//!
//! - Each data frame goes through the filters with `end_of_stream` false, but for the last one
//!   when the body's end is known with it (its length reached, an HTTP/2 frame ending the
//!   stream): that one carries `end_of_stream` true, as in Envoy. A filter that
//!   returns `Pause` has its input buffered and is called again with everything buffered when
//!   more arrives (Envoy's `StopIterationAndBuffer`); what it leaves in the buffer when it
//!   continues is what flows on.
//! - A body that ends without trailers gives every filter a last call with `end_of_stream`
//!   true, where a filter may still add trailers (they are sent after the data).
//! - Trailers go to each filter in turn: any data reaching it first, then its trailers
//!   callback, then whatever it held flows on with the trailers. Pausing on trailers is not
//!   supported here (a body is a pull-based stream): it counts as continuing.
//! - A request filter answering itself (`proxy_send_local_response`) from a body or trailers
//!   callback stops the upstream request; its answer is what the client gets. In the response
//!   direction the headers are already gone, so that stream is reset instead.
//! - A filter closing the stream (`proxy_close_stream`) resets it, as Envoy does: a request
//!   is never answered, a response is cut off.
//! - A failing fail-closed filter aborts the body (the peer sees a reset); a fail-open one is
//!   bypassed from then on.

use std::sync::{Arc, Mutex};

use http::HeaderMap;
use wasmesh_host::{Action, FailurePolicy, HeaderMap as Pairs, HttpStream, LocalResponse};

use super::pairs::{apply_pairs, push_headers};
use super::{RequestAttributes, SharedStream, lock};

/// Which way a body flows, and so which callbacks see it and in what order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Request bodies: `proxy_on_request_body`/`_trailers`, in chain order.
    Request,
    /// Response bodies: `proxy_on_response_body`/`_trailers`, in reverse order.
    Response,
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
}

/// Runs `body` through the filters of `streams` (in chain order; reversed here for responses).
pub fn filter_body(
    body: crate::body::ProxyBody,
    streams: Vec<SharedStream>,
    direction: Direction,
    attributes: Option<Arc<RequestAttributes>>,
    answer: Option<Answer>,
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
        attributes,
        answer,
        pending_trailers: None,
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
        // Where the body's size is counted (`request.size`, `response.size`).
        attributes: Option<Arc<RequestAttributes>>,
        answer: Option<Answer>,
        // Trailers already through the filters, sent after the last data frame.
        pending_trailers: Option<HeaderMap>,
    }
}

/// Why a body stops flowing.
enum Stop {
    /// A fail-closed filter failed.
    Failed(String),
    /// A filter answered itself.
    Answered(LocalResponse),
    /// A filter closed the stream.
    Closed,
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

/// One filter's body callback over `input`; returns what flows on, or `None` while it buffers.
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

/// Runs `data` through the chain; `None` means a filter is buffering it.
fn run_chain(
    streams: &[SharedStream],
    buffers: &mut [Vec<u8>],
    bypass: &mut Vec<usize>,
    direction: Direction,
    mut data: Vec<u8>,
    end_of_stream: bool,
) -> Result<Option<Vec<u8>>, Stop> {
    for (i, stream) in streams.iter().enumerate() {
        if bypass.contains(&i) {
            continue;
        }
        let mut s = lock(stream);
        let mut input = std::mem::take(&mut buffers[i]);
        input.extend_from_slice(&data);
        let (result, out) = body_callback(&mut s, direction, input, end_of_stream);
        data = out;
        interrupted(&mut s)?;
        match result {
            Ok(Action::Pause) if !end_of_stream => {
                buffers[i] = data;
                return Ok(None);
            }
            Ok(_) => {}
            Err(failure) => failed(&s, failure, i, bypass)?,
        }
    }
    Ok(Some(data))
}

/// Trailers through the chain (see the module docs); returns the data that flows out before
/// them and the trailers as the filters left them.
fn run_trailers(
    streams: &[SharedStream],
    buffers: &mut [Vec<u8>],
    bypass: &mut Vec<usize>,
    direction: Direction,
    trailers: &HeaderMap,
) -> Result<(Vec<u8>, Pairs), Stop> {
    let mut pairs = Vec::with_capacity(trailers.len());
    push_headers(&mut pairs, trailers);
    let mut data: Vec<u8> = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        if bypass.contains(&i) {
            continue;
        }
        let mut s = lock(stream);
        if !data.is_empty() {
            let mut input = std::mem::take(&mut buffers[i]);
            input.extend_from_slice(&data);
            let (result, out) = body_callback(&mut s, direction, input, false);
            interrupted(&mut s)?;
            match result {
                // Held until its trailers callback lets it go.
                Ok(Action::Pause) => {
                    buffers[i] = out;
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
        let result = match direction {
            Direction::Request => {
                s.data.request_trailers = std::mem::take(&mut pairs);
                let r = s.on_request_trailers();
                s.unpark();
                pairs = std::mem::take(&mut s.data.request_trailers);
                r
            }
            Direction::Response => {
                s.data.response_trailers = std::mem::take(&mut pairs);
                let r = s.on_response_trailers();
                s.unpark();
                pairs = std::mem::take(&mut s.data.response_trailers);
                r
            }
        };
        interrupted(&mut s)?;
        if let Err(failure) = result {
            failed(&s, failure, i, bypass)?;
        }
        // What this filter held flows on, ahead of anything behind it.
        let mut held = std::mem::take(&mut buffers[i]);
        held.extend_from_slice(&data);
        data = held;
    }
    Ok((data, pairs))
}

/// Trailers the filters added in their last body callback of a body that had none.
fn added_trailers(streams: &[SharedStream], direction: Direction) -> Pairs {
    let mut pairs = Vec::new();
    for stream in streams {
        let mut s = lock(stream);
        let added = match direction {
            Direction::Request => std::mem::take(&mut s.data.request_trailers),
            Direction::Response => std::mem::take(&mut s.data.response_trailers),
        };
        pairs.extend(added);
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
            if *this.finished {
                return Poll::Ready(None);
            }
            let frame = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            let direction = *this.direction;
            let outcome = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if direction == Direction::Request
                            && let Some(attributes) = this.attributes.as_ref()
                        {
                            attributes.count_request_bytes(data.len());
                        }
                        // The body's last data when its end is known here (its length is
                        // reached, or an HTTP/2 frame ended the stream): one callback with
                        // `end_of_stream` true, as Envoy makes, not a second empty one.
                        let last = this.inner.is_end_stream();
                        *this.finished = last;
                        run_chain(
                            this.streams,
                            this.buffers,
                            this.bypass,
                            direction,
                            data.to_vec(),
                            last,
                        )
                        .map(|out| {
                            out.map(|data| {
                                let trailers = last
                                    .then(|| {
                                        added(this.streams, direction, this.attributes.as_ref())
                                    })
                                    .flatten();
                                (data, trailers)
                            })
                        })
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => {
                            *this.finished = true;
                            run_trailers(
                                this.streams,
                                this.buffers,
                                this.bypass,
                                direction,
                                &trailers,
                            )
                            .map(|(data, pairs)| {
                                let trailers =
                                    outgoing_trailers(pairs, direction, this.attributes.as_ref());
                                Some((data, Some(trailers)))
                            })
                        }
                        Err(_) => continue,
                    },
                },
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => {
                    *this.finished = true;
                    run_chain(
                        this.streams,
                        this.buffers,
                        this.bypass,
                        direction,
                        Vec::new(),
                        true,
                    )
                    .map(|out| {
                        out.map(|data| {
                            (
                                data,
                                added(this.streams, direction, this.attributes.as_ref()),
                            )
                        })
                    })
                }
            };
            let (out, trailers) = match outcome {
                Ok(Some(pair)) => pair,
                Ok(None) => continue,
                Err(stop) => {
                    *this.finished = true;
                    let message = match stop {
                        Stop::Failed(message) => {
                            tracing::warn!(error = %message, "filter failed on the body; aborting it (fail_closed)");
                            if let (Direction::Request, Some(answer)) =
                                (direction, this.answer.as_ref())
                            {
                                *answer.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(Interrupt::Failed);
                            }
                            message
                        }
                        Stop::Closed => {
                            if let (Direction::Request, Some(answer)) =
                                (direction, this.answer.as_ref())
                            {
                                *answer.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(Interrupt::Reset);
                            }
                            "a filter closed the stream".to_string()
                        }
                        Stop::Answered(local) => match (direction, this.answer.as_ref()) {
                            (Direction::Request, Some(answer)) => {
                                *answer.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(Interrupt::Respond(local));
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
                    };
                    return Poll::Ready(Some(Err(message.into())));
                }
            };
            if direction == Direction::Response
                && let Some(attributes) = this.attributes.as_ref()
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
}
