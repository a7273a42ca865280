//! Bodies through the filters' body callbacks (`proxy_on_request_body`,
//! `proxy_on_response_body`), chunk by chunk, with Envoy's buffering semantics.

use wasmesh_host::{Action, FailurePolicy};

use super::{SharedStream, lock};

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
    attributes: Option<std::sync::Arc<super::RequestAttributes>>,
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
        attributes: Option<std::sync::Arc<super::RequestAttributes>>,
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
            if *this.direction == Direction::Request
                && let Some(attributes) = this.attributes.as_ref()
            {
                attributes.count_request_bytes(data.len());
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
                    if *this.direction == Direction::Response
                        && let Some(attributes) = this.attributes.as_ref()
                    {
                        attributes.count_response_bytes(out.len());
                    }
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
