//! One HTTP stream through the filter under test, fed by the test the way the proxy feeds it:
//! headers, body chunks (with Envoy's buffering when the filter pauses), trailers.

use std::sync::Arc;

use wasmesh_host::{Action, HeaderMap, HttpStream, LocalResponse, StreamData};

use crate::env::{PropertyMap, PropertyValue, lock};
use crate::services::TestServices;
use crate::{Error, settle};

/// The first value of `name` in `map` (case-insensitive), as text (lossy).
pub(crate) fn first(map: &HeaderMap, name: &str) -> Option<String> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

fn all(map: &HeaderMap, name: &str) -> Vec<String> {
    map.iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect()
}

pub(crate) fn pairs(headers: &[(&str, &str)]) -> HeaderMap {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect()
}

/// Which way a body goes.
#[derive(Clone, Copy)]
enum Side {
    Request,
    Response,
}

/// A body as the proxy passes it through a filter: what the filter holds while it pauses,
/// and what has flowed on.
#[derive(Default)]
struct Body {
    held: Vec<u8>,
    passed: Vec<u8>,
    /// The filter paused at the body's end: the body waits with its VM until it resumes.
    parked: bool,
}

/// One HTTP stream (see [`crate::Harness::http_stream`]). [`Stream::finish`] ends the
/// filter's context (`on_done`, `on_log`, `on_delete`) and reports how that went; dropping
/// the stream ends it too, but cannot report a failure, and what the end caused (a queue
/// notification, say) runs only with the harness's next call.
///
/// The `send_*` methods may be called in any order. While the filter holds the stream paused
/// (waiting for a callout, say), its data stays with the VM so the callout's answer can edit
/// it; the proxy sends nothing further until the filter resumes. Sending the next phase
/// anyway takes the data back first, after which a late answer can no longer edit it.
pub struct Stream {
    inner: HttpStream,
    services: Arc<TestServices>,
    properties: PropertyMap,
    request_body: Body,
    response_body: Body,
    /// The resume count when the stream last paused.
    paused_at: Option<u64>,
    /// The VM replica the stream runs on.
    replica: usize,
}

impl Stream {
    pub(crate) fn new(
        inner: HttpStream,
        services: Arc<TestServices>,
        properties: PropertyMap,
        replica: usize,
    ) -> Stream {
        Stream {
            inner,
            services,
            properties,
            request_body: Body::default(),
            response_body: Body::default(),
            paused_at: None,
            replica,
        }
    }

    /// Ends the stream as the proxy does once the exchange is over: runs the filter's
    /// `on_done`, `on_log` and `on_delete`, then what they caused (a queue's
    /// `on_queue_ready`, …), and reports a failure in any of them — a trap in `on_log`, a
    /// deadline overrun — as [`Error::Filter`]. The replica that failed is rebuilt on its next
    /// use, as in the proxy. A stream ended on a replica that failed earlier runs nothing and
    /// finishes with `Ok`.
    pub fn finish(self) -> Result<(), Error> {
        let Stream {
            inner, services, ..
        } = self;
        let plugin = inner.plugin().name().to_string();
        let failure = crate::failures::watch(&plugin, || drop(inner));
        let settled = services.run_deferred();
        if let Some(failure) = failure {
            return Err(Error::Filter(failure));
        }
        if settled { Ok(()) } else { Err(Error::Runaway) }
    }

    /// The VM replica this stream runs on (0 unless the harness has several; see
    /// [`crate::HarnessBuilder::replicas`]).
    pub fn replica(&self) -> usize {
        self.replica
    }

    /// Sets a property for this stream only (it wins over the harness's); see
    /// [`crate::Harness::set_property`].
    pub fn set_property(&self, path: &str, value: impl PropertyValue) {
        lock(&self.properties).insert(path.to_string(), value.encode());
    }

    /// Runs `on_http_request_headers` with `headers` (names are lowercased, as the proxy
    /// does; pseudo headers such as `:method` and `:path` are given like any other).
    pub fn send_request_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action, Error> {
        self.take_back();
        self.inner.data.request_headers = pairs(headers);
        let result = self.inner.on_request_headers(end_of_stream);
        self.after(result)
    }

    /// Runs `on_http_request_body` with `chunk` added to what the filter holds. If the filter
    /// pauses before the end, it keeps the body and sees all of it again with the next chunk;
    /// if it pauses at the end, the body waits with it until it resumes the stream (after a
    /// callout, say); otherwise what it leaves flows on ([`Stream::request_body`]).
    pub fn send_request_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, Error> {
        self.body(Side::Request, chunk, end_of_stream)
    }

    /// Runs `on_http_request_trailers` with `trailers`.
    pub fn send_request_trailers(&mut self, trailers: &[(&str, &str)]) -> Result<Action, Error> {
        self.take_back();
        self.inner.data.request_trailers = pairs(trailers);
        let result = self.inner.on_request_trailers();
        self.after(result)
    }

    /// Runs `on_http_response_headers` with `headers` (`:status` included).
    pub fn send_response_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action, Error> {
        self.take_back();
        self.inner.data.response_headers = pairs(headers);
        let result = self.inner.on_response_headers(end_of_stream);
        self.after(result)
    }

    /// Runs `on_http_response_body`; see [`Stream::send_request_body`].
    pub fn send_response_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, Error> {
        self.body(Side::Response, chunk, end_of_stream)
    }

    /// Runs `on_http_response_trailers` with `trailers`.
    pub fn send_response_trailers(&mut self, trailers: &[(&str, &str)]) -> Result<Action, Error> {
        self.take_back();
        self.inner.data.response_trailers = pairs(trailers);
        let result = self.inner.on_response_trailers();
        self.after(result)
    }

    fn body(&mut self, side: Side, chunk: &[u8], end_of_stream: bool) -> Result<Action, Error> {
        self.take_back();
        let body = match side {
            Side::Request => &mut self.request_body,
            Side::Response => &mut self.response_body,
        };
        let mut input = std::mem::take(&mut body.held);
        input.extend_from_slice(chunk);
        let (result, output) = match side {
            Side::Request => {
                self.inner.data.request_body = input;
                let result = self.inner.on_request_body(end_of_stream);
                (result, std::mem::take(&mut self.inner.data.request_body))
            }
            Side::Response => {
                self.inner.data.response_body = input;
                let result = self.inner.on_response_body(end_of_stream);
                (result, std::mem::take(&mut self.inner.data.response_body))
            }
        };
        let parked = self.inner.is_paused();
        // A filter that answered or closed the stream stops the body there.
        let stopped = self.inner.data.local_response.is_some() || self.inner.data.close_requested;
        let body = match side {
            Side::Request => &mut self.request_body,
            Side::Response => &mut self.response_body,
        };
        // As the proxy does: a pause before the end holds what the filter left, a pause at
        // the end leaves the body with the VM until the filter resumes; anything else lets it
        // flow on.
        match result {
            Ok(Action::Pause) if !end_of_stream => body.held = output,
            Ok(Action::Pause) if parked => body.parked = true,
            Ok(_) if stopped => body.held = output,
            Ok(_) => body.passed.extend_from_slice(&output),
            Err(_) => {}
        }
        self.after(result)
    }

    /// Takes the stream's data back from the VM before the next phase. A body the filter
    /// paused at its end flows on then if the filter resumed it, as the proxy lets it;
    /// otherwise it stays held (the proxy would never send it).
    fn take_back(&mut self) {
        let resumed = self.resumed();
        self.inner.unpark();
        let stopped = self.inner.data.local_response.is_some() || self.inner.data.close_requested;
        let flows = resumed && !stopped;
        for side in [Side::Request, Side::Response] {
            let (body, data) = match side {
                Side::Request => (&mut self.request_body, &mut self.inner.data.request_body),
                Side::Response => (&mut self.response_body, &mut self.inner.data.response_body),
            };
            if std::mem::take(&mut body.parked) {
                let parked = std::mem::take(data);
                match flows {
                    true => body.passed.extend_from_slice(&parked),
                    false => body.held = parked,
                }
            }
        }
    }

    /// What of a body has flowed on: what passed, and a body paused at its end once the
    /// filter resumed it.
    fn flowed(&self, side: Side) -> Vec<u8> {
        let (body, parked) = self.parked_body(side);
        let mut flowed = body.passed.clone();
        if let Some(parked) = parked.filter(|_| self.resumed()) {
            flowed.extend_from_slice(&parked);
        }
        flowed
    }

    /// What of a body the filter holds: what it buffers, or the whole body while it holds it
    /// paused at its end.
    fn held(&self, side: Side) -> Vec<u8> {
        let (body, parked) = self.parked_body(side);
        match parked.filter(|_| !self.resumed()) {
            Some(parked) => parked,
            None => body.held.clone(),
        }
    }

    /// A body and, if the filter paused at its end, the body as it is with the VM.
    fn parked_body(&self, side: Side) -> (&Body, Option<Vec<u8>>) {
        let body = match side {
            Side::Request => &self.request_body,
            Side::Response => &self.response_body,
        };
        let parked = body.parked.then(|| {
            self.peek(|d| match side {
                Side::Request => d.request_body.clone(),
                Side::Response => d.response_body.clone(),
            })
        });
        (body, parked)
    }

    /// Settles deferred work and remembers a pause.
    fn after(
        &mut self,
        result: Result<Action, wasmesh_host::FilterFailure>,
    ) -> Result<Action, Error> {
        let action = settle(&self.services, result)?;
        if action == Action::Pause {
            self.paused_at = Some(self.inner.resume_count());
        }
        Ok(action)
    }

    fn peek<R>(&self, f: impl FnOnce(&StreamData) -> R) -> R {
        self.inner.peek(f)
    }

    /// The request headers as the filter left them (also while it holds the stream paused).
    pub fn request_headers(&self) -> HeaderMap {
        self.peek(|d| d.request_headers.clone())
    }

    /// The first value of request header `name` (case-insensitive), as text.
    pub fn request_header(&self, name: &str) -> Option<String> {
        self.peek(|d| first(&d.request_headers, name))
    }

    /// Every value of request header `name`, in order.
    pub fn request_header_values(&self, name: &str) -> Vec<String> {
        self.peek(|d| all(&d.request_headers, name))
    }

    /// The request trailers as the filter left them.
    pub fn request_trailers(&self) -> HeaderMap {
        self.peek(|d| d.request_trailers.clone())
    }

    /// The response headers as the filter left them.
    pub fn response_headers(&self) -> HeaderMap {
        self.peek(|d| d.response_headers.clone())
    }

    /// The first value of response header `name` (case-insensitive), as text.
    pub fn response_header(&self, name: &str) -> Option<String> {
        self.peek(|d| first(&d.response_headers, name))
    }

    /// Every value of response header `name`, in order.
    pub fn response_header_values(&self, name: &str) -> Vec<String> {
        self.peek(|d| all(&d.response_headers, name))
    }

    /// The response trailers as the filter left them.
    pub fn response_trailers(&self) -> HeaderMap {
        self.peek(|d| d.response_trailers.clone())
    }

    /// The request body that has flowed on past the filter so far.
    pub fn request_body(&self) -> Vec<u8> {
        self.flowed(Side::Request)
    }

    /// The request body the filter holds (it paused, and has not resumed).
    pub fn held_request_body(&self) -> Vec<u8> {
        self.held(Side::Request)
    }

    /// The response body that has flowed on past the filter so far.
    pub fn response_body(&self) -> Vec<u8> {
        self.flowed(Side::Response)
    }

    /// The response body the filter holds (it paused, and has not resumed).
    pub fn held_response_body(&self) -> Vec<u8> {
        self.held(Side::Response)
    }

    /// The response the filter sent itself (`send_http_response`, `send_grpc_response`), if
    /// any: status, headers, body, gRPC status.
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.peek(|d| d.local_response.clone())
    }

    /// Whether the filter holds the stream paused: it returned `Pause` from a header or
    /// trailer callback or the body's last, answered nothing, and has not resumed it.
    pub fn is_paused(&self) -> bool {
        self.inner.is_paused() && !self.resumed() && self.local_response().is_none()
    }

    /// Whether the filter resumed the stream (`proxy_continue_stream`,
    /// `resume_http_request`, …) since it last paused it.
    pub fn resumed(&self) -> bool {
        self.paused_at
            .is_some_and(|at| self.inner.resume_count() > at)
    }

    /// How many times the filter has resumed the stream so far.
    pub fn resume_count(&self) -> u64 {
        self.inner.resume_count()
    }

    /// Whether the filter asked for the route to be chosen again (`clear_route_cache`).
    pub fn route_cache_cleared(&self) -> bool {
        self.peek(|d| d.clear_route_cache)
    }

    /// Values the filter set with `set_property`, by dotted path.
    pub fn filter_state(&self, path: &str) -> Option<Vec<u8>> {
        self.peek(|d| d.filter_state.get(path).cloned())
    }

    /// The host's stream, for what this wrapper does not cover.
    pub fn inner(&mut self) -> &mut HttpStream {
        &mut self.inner
    }
}
