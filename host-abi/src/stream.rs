//! One HTTP stream through one plugin: the proxy feeds it headers (and later bodies and
//! trailers), the filter's callbacks run on the replica the stream was pinned to, and the
//! filter's edits, local responses and pause/resume decisions come back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::abi::Action;
use crate::headers::HeaderMap;
use crate::plugin::{CallbackArgs, FilterFailure, Plugin};
use crate::state::StreamData;

/// What only the proxy knows about a stream: its attributes, by Envoy's attribute paths
/// (`request.path`, `source.address`, `connection.mtls`, …), as the bytes Envoy would return.
pub trait StreamEnv: Send + Sync {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;

    /// The request's filter state, shared by every filter on the stream, as in Envoy: what
    /// one filter sets with `proxy_set_property`, the next reads. `None` (the default): each
    /// filter's values stay its own (`StreamData::filter_state`).
    fn filter_state(&self) -> Option<&crate::FilterState> {
        None
    }

    /// The request's or response's headers as they went on after their headers phase (and the
    /// response's trailers after theirs), for a filter that reads them later: request headers
    /// in its body or response callbacks, any of them in `proxy_on_log`, as Envoy allows. An
    /// embedder that moves each filter's header maps on to the next filter, the upstream or
    /// the client keeps the final ones here; the host asks only when a filter touches a map
    /// that is empty then, once per map, so a filter that does not costs no copy. `None` (the
    /// default): the stream's own maps are all there is.
    fn kept_headers(&self, _which: KeptHeaders) -> Option<crate::HeaderMap> {
        None
    }
}

/// Which headers [`StreamEnv::kept_headers`] is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptHeaders {
    Request,
    Response,
    /// The response's trailers as the filters left them, for `on_log` and the
    /// `response.trailers` attribute.
    ResponseTrailers,
}

/// `proxy_peer_type_t`: who closed a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerType {
    Unknown = 0,
    /// The proxy closed it.
    Local = 1,
    /// The peer did.
    Remote = 2,
}

/// A reply made by the filter itself (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: HeaderMap,
    /// `None` unless the filter answered with a gRPC status.
    pub grpc_status: Option<u32>,
}

/// Wakes a paused stream when its filter calls `proxy_continue_stream` (or the 0.1.0 forms).
#[derive(Debug, Default)]
pub struct StreamSignals {
    pub(crate) resume: Notify,
    /// How many times the filter resumed the stream, for embedders that check rather than wait.
    pub(crate) resumes: AtomicU64,
}

impl StreamSignals {
    /// Drops a resumption stored while nothing waited for one (a filter may resume a stream
    /// that is not paused, say from an answer to a callout it did not wait for), so that it
    /// cannot end a later pause at once.
    pub(crate) fn forget_resume(&self) {
        let notified = self.resume.notified();
        let mut notified = std::pin::pin!(notified);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = std::future::Future::poll(notified.as_mut(), &mut cx);
    }
}

/// See [`HttpStream::resume_waiter`].
#[derive(Debug, Clone)]
pub struct ResumeWaiter(Arc<StreamSignals>);

impl ResumeWaiter {
    pub async fn wait(&self) {
        self.0.resume.notified().await;
    }
}

/// One stream's state in one plugin. Dropping it ends the context (`proxy_on_done`,
/// `proxy_on_log`, `proxy_on_delete`).
pub struct HttpStream {
    pub(crate) plugin: Arc<Plugin>,
    pub(crate) replica: usize,
    pub(crate) generation: u64,
    pub(crate) context_id: u32,
    /// While paused, the data lives in the replica (see `HostState::parked`).
    pub(crate) parked: bool,
    pub(crate) signals: Arc<StreamSignals>,
    /// The stream's headers, bodies and trailers as the filter sees and edits them.
    pub data: StreamData,
}

impl HttpStream {
    /// Runs `proxy_on_request_headers`; `data.request_headers` holds the map before and after.
    pub fn on_request_headers(&mut self, end_of_stream: bool) -> Result<Action, FilterFailure> {
        let n = self.data.request_headers.len() as i32;
        self.callback("proxy_on_request_headers", n, end_of_stream, true)
    }

    /// Runs `proxy_on_request_body` over everything buffered in `data.request_body`. A
    /// `Pause` before the end means "buffer more"; at the end (`end_of_stream`) it parks the
    /// stream like a paused header phase, until the filter resumes it.
    pub fn on_request_body(&mut self, end_of_stream: bool) -> Result<Action, FilterFailure> {
        let n = self.data.request_body.len() as i32;
        self.callback("proxy_on_request_body", n, end_of_stream, end_of_stream)
    }

    pub fn on_request_trailers(&mut self) -> Result<Action, FilterFailure> {
        let n = self.data.request_trailers.len() as i32;
        self.callback2("proxy_on_request_trailers", n)
    }

    pub fn on_response_headers(&mut self, end_of_stream: bool) -> Result<Action, FilterFailure> {
        let n = self.data.response_headers.len() as i32;
        self.callback("proxy_on_response_headers", n, end_of_stream, true)
    }

    /// As [`Self::on_request_body`], over `data.response_body`.
    pub fn on_response_body(&mut self, end_of_stream: bool) -> Result<Action, FilterFailure> {
        let n = self.data.response_body.len() as i32;
        self.callback("proxy_on_response_body", n, end_of_stream, end_of_stream)
    }

    pub fn on_response_trailers(&mut self) -> Result<Action, FilterFailure> {
        let n = self.data.response_trailers.len() as i32;
        self.callback2("proxy_on_response_trailers", n)
    }

    /// The local response the filter sent, if any (taken once).
    pub fn take_local_response(&mut self) -> Option<LocalResponse> {
        self.unpark();
        self.data.local_response.take()
    }

    /// Whether the filter paused the stream and has not been given its data back yet.
    pub fn is_paused(&self) -> bool {
        self.parked
    }

    /// Whether the VM replica this stream runs on failed since the stream started (its later
    /// callbacks fail as `Unavailable`). A paused stream is woken when that happens; its data
    /// comes back with [`HttpStream::unpark`].
    pub fn replica_failed(&self) -> bool {
        self.plugin.replica_failed(self)
    }

    /// After a paused stream was resumed, brings its (possibly edited) data back into
    /// [`HttpStream::data`]. Called by `take_local_response`; call it before reading `data`.
    pub fn unpark(&mut self) {
        let plugin = self.plugin.clone();
        plugin.unpark(self);
    }

    /// Waits until the filter resumes a paused stream.
    pub async fn resumed(&self) {
        self.signals.resume.notified().await;
    }

    /// How many times the filter has resumed this stream (`proxy_continue_stream`, or the
    /// 0.1.0 `proxy_continue_request`/`_response`) so far: a synchronous check for embedders
    /// that drive the host themselves, where [`HttpStream::resumed`] would need a runtime.
    pub fn resume_count(&self) -> u64 {
        self.signals.resumes.load(Ordering::Relaxed)
    }

    /// Reads the stream's data where it is: in [`HttpStream::data`], or — while the stream is
    /// paused — with the VM, without taking it back (a later callout answer or tick can still
    /// switch to the stream and edit it, which [`HttpStream::unpark`] would prevent).
    pub fn peek<R>(&self, f: impl FnOnce(&StreamData) -> R) -> R {
        if self.parked {
            match self.plugin.peek_parked(self, f) {
                Ok(result) => result,
                Err(f) => f(&self.data),
            }
        } else {
            f(&self.data)
        }
    }

    /// A handle that waits for the resumption without borrowing the stream, so the stream can
    /// sit behind a lock that is not held while waiting. A resumption that happened already
    /// counts.
    pub fn resume_waiter(&self) -> ResumeWaiter {
        ResumeWaiter(self.signals.clone())
    }

    /// The plugin this stream runs in.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Header and trailer callbacks park the stream's data with the VM when they pause (the
    /// proxy then waits for a resume), and so does a body callback at the body's end; before
    /// the end, a body callback pausing means "buffer", so it does not park.
    fn callback(
        &mut self,
        name: &'static str,
        n: i32,
        eos: bool,
        park: bool,
    ) -> Result<Action, FilterFailure> {
        let plugin = self.plugin.clone();
        plugin.stream_callback(self, name, CallbackArgs::CountEos(n, eos), park)
    }

    fn callback2(&mut self, name: &'static str, n: i32) -> Result<Action, FilterFailure> {
        let plugin = self.plugin.clone();
        plugin.stream_callback(self, name, CallbackArgs::Count(n), true)
    }

    /// Runs `proxy_on_new_connection` for a network (TCP) stream. A `Pause` parks the stream
    /// like a paused header phase: the filter resumes it with `proxy_continue_stream` (after a
    /// callout, say) or closes it.
    pub fn on_new_connection(&mut self) -> Result<Action, FilterFailure> {
        let plugin = self.plugin.clone();
        plugin.stream_callback(self, "proxy_on_new_connection", CallbackArgs::Context, true)
    }

    /// Runs `proxy_on_downstream_data` over everything buffered in `data.downstream_data`;
    /// `Pause` before the end means "buffer more" (as for bodies), never a park.
    pub fn on_downstream_data(&mut self, end_of_stream: bool) -> Result<Action, FilterFailure> {
        let n = self.data.downstream_data.len() as i32;
        self.callback("proxy_on_downstream_data", n, end_of_stream, false)
    }

    /// Runs `proxy_on_upstream_data` over `data.upstream_data`, as [`Self::on_downstream_data`].
    pub fn on_upstream_data(&mut self, end_of_stream: bool) -> Result<Action, FilterFailure> {
        let n = self.data.upstream_data.len() as i32;
        self.callback("proxy_on_upstream_data", n, end_of_stream, false)
    }

    /// Runs `proxy_on_downstream_connection_close` with who closed it.
    pub fn on_downstream_close(&mut self, peer: PeerType) -> Result<(), FilterFailure> {
        let plugin = self.plugin.clone();
        plugin
            .stream_callback(
                self,
                "proxy_on_downstream_connection_close",
                CallbackArgs::Peer(peer as i32),
                false,
            )
            .map(drop)
    }

    /// Runs `proxy_on_upstream_connection_close` with who closed it.
    pub fn on_upstream_close(&mut self, peer: PeerType) -> Result<(), FilterFailure> {
        let plugin = self.plugin.clone();
        plugin
            .stream_callback(
                self,
                "proxy_on_upstream_connection_close",
                CallbackArgs::Peer(peer as i32),
                false,
            )
            .map(drop)
    }
}

impl Drop for HttpStream {
    fn drop(&mut self) {
        let plugin = self.plugin.clone();
        plugin.finish_stream(self);
    }
}
