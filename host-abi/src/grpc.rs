//! gRPC calls and streams from filters (`proxy_grpc_call`, `proxy_grpc_stream`,
//! `proxy_grpc_send`, `proxy_grpc_cancel`, `proxy_grpc_close`), with Envoy's semantics.
//!
//! The work is split at the wire. The embedder ([`crate::Services::grpc_call`]) sends the call
//! and reports what comes back, in the order it arrives, through a [`GrpcReply`]; the filter's
//! later sends and closes reach it through the [`GrpcOutbound`] it returned. The host keeps the
//! ABI's side: tokens (one counter per replica, shared with HTTP callouts, since SDKs look a
//! token up in several tables), which calls are live, and what the filter is told:
//!
//! - a unary call ends with exactly one callback: `proxy_on_grpc_receive` with the response
//!   message (buffer `GRPC_CALL_MESSAGE`) if the status is OK, or else `proxy_on_grpc_close`
//!   with the status (OK without a message is `INTERNAL`, as in Envoy); metadata is not shown;
//! - a stream gets `proxy_on_grpc_receive_initial_metadata` (map `GRPC_CALL_INITIAL_METADATA`),
//!   `proxy_on_grpc_receive` per message, `proxy_on_grpc_receive_trailing_metadata` (map
//!   `GRPC_CALL_TRAILING_METADATA`) and `proxy_on_grpc_close`, each as the embedder reports it;
//! - during `proxy_on_grpc_close`, `proxy_get_status` answers the status code and message;
//! - `proxy_grpc_cancel` stops a call or stream: no callback follows, even for replies already
//!   on their way; `proxy_grpc_close` closes a stream's local side (its callbacks go on until
//!   the remote end closes) and cancels a unary call.
//!
//! Callbacks run on the root context of the replica that opened the call, never inside the
//! callback that caused them: each report is queued per call and delivered, in order, by
//! deferred work ([`crate::Services::spawn`]: a task on the runtime in the proxy, a queue the
//! SDK's test harness runs when the test says).
//!
//! Status sets (the Rust SDK panics on anything else): open answers OK, PARSE_FAILURE (unknown
//! upstream, malformed names or metadata) or INTERNAL_FAILURE (the embedder cannot make the
//! call); send OK, BAD_ARGUMENT (a unary call's token) or NOT_FOUND; cancel and close OK or
//! NOT_FOUND. As in Envoy, a stream stays known after its remote end closed until the filter
//! closes or cancels it, and sending on a closed stream is accepted and dropped: the SDK
//! unwraps these results, so answering anything else would crash a filter for a race.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::abi::{map, status};
use crate::headers::{self, HeaderMap};
use crate::plugin::Plugin;
use crate::state::{Ctx, read, write_u32};

type R = wasmtime::Result<i32>;

/// gRPC status codes (`google.rpc.Code`), as `proxy_on_grpc_close` passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The number on the wire (`grpc-status`) and in the ABI.
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// A gRPC call or stream a filter opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcRequest {
    /// The cluster name the filter gave.
    pub upstream: String,
    /// Fully qualified service name (`package.Service`).
    pub service: String,
    pub method: String,
    /// Sent as request headers; pseudo headers are the embedder's to set.
    pub initial_metadata: HeaderMap,
    pub kind: GrpcKind,
}

/// A unary call or a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcKind {
    /// One request message, one response message; `timeout` is the call's deadline (`None`
    /// when the filter gave 0, which Envoy reads as none).
    Call {
        message: Vec<u8>,
        timeout: Option<Duration>,
    },
    /// Messages both ways, sent by the filter with `proxy_grpc_send`; no deadline.
    Stream,
}

/// Why a call could not even be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrpcError {
    /// The filter gets PARSE_FAILURE, Envoy's answer for a cluster it does not know.
    #[error("unknown upstream \"{0}\"")]
    UnknownUpstream(String),
    /// The embedder cannot make this call (the upstream does not speak HTTP/2, no runtime,
    /// an invalid service or method name…); the filter gets INTERNAL_FAILURE.
    #[error("{0}")]
    Refused(String),
}

/// The embedder's handle on a call in flight, through which the filter's later actions reach
/// the wire. The host drops it when the call ends (its last callback ran), when the filter
/// cancels it, or with the replica; dropping it must stop the call if it still runs.
pub trait GrpcOutbound: Send {
    /// A stream's next message (not yet framed); `end_stream` closes the local side after it.
    fn send(&mut self, message: Vec<u8>, end_stream: bool);

    /// Closes a stream's local side: no more messages; replies keep coming.
    fn close(&mut self);

    /// The filter cancelled the call (`proxy_grpc_cancel`); the handle is dropped next.
    fn cancel(&mut self) {}
}

/// Reports what came back for one call, in wire order: initial metadata, messages, trailing
/// metadata, then [`GrpcReply::close`] with the status, exactly once. Each report is queued
/// and delivered to the filter later, never inline, so these may be called from anywhere,
/// inside a filter callback included. Dropping it unclosed closes it with `INTERNAL`.
pub struct GrpcReply {
    call: Arc<PendingCall>,
    closed: bool,
}

/// A call's reports waiting for delivery, and where to deliver them.
pub(crate) struct PendingCall {
    plugin: Weak<Plugin>,
    pub(crate) replica: usize,
    pub(crate) generation: u64,
    pub(crate) token: u32,
    unary: bool,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Event>,
    /// A delivery is scheduled and has not yet found the queue empty.
    scheduled: bool,
    /// A unary call's response message, kept until its status arrives.
    response: Option<Vec<u8>>,
}

/// One report, as the filter will read it during its callback.
#[derive(Debug)]
pub(crate) enum Event {
    InitialMetadata(HeaderMap),
    Message(Vec<u8>),
    TrailingMetadata(HeaderMap),
    Close { code: u32, message: String },
}

impl GrpcReply {
    pub(crate) fn new(
        plugin: Weak<Plugin>,
        replica: usize,
        generation: u64,
        token: u32,
        unary: bool,
    ) -> GrpcReply {
        GrpcReply {
            call: Arc::new(PendingCall {
                plugin,
                replica,
                generation,
                token,
                unary,
                queue: Mutex::new(Queue::default()),
            }),
            closed: false,
        }
    }

    /// The response headers (`:status` included), or empty ones when there were none (a
    /// trailers-only response). Not shown to a unary call.
    pub fn initial_metadata(&self, metadata: HeaderMap) {
        if !self.call.unary {
            self.call.push(Event::InitialMetadata(metadata));
        }
    }

    /// One response message, unframed. For a unary call the last one is kept for the
    /// status, as in Envoy.
    pub fn message(&self, message: Vec<u8>) {
        if self.call.unary {
            self.call.lock().response = Some(message);
        } else {
            self.call.push(Event::Message(message));
        }
    }

    /// The trailers (`grpc-status` and `grpc-message` included), or empty ones when the call
    /// failed below gRPC. Not shown to a unary call.
    pub fn trailing_metadata(&self, metadata: HeaderMap) {
        if !self.call.unary {
            self.call.push(Event::TrailingMetadata(metadata));
        }
    }

    /// Ends the call with a status (see [`GrpcCode`]) and its message.
    pub fn close(mut self, code: u32, message: &str) {
        self.finish(code, message);
    }

    fn finish(&mut self, code: u32, message: &str) {
        self.closed = true;
        let event = if !self.call.unary {
            Event::Close {
                code,
                message: message.to_string(),
            }
        } else {
            match (code, self.call.lock().response.take()) {
                (0, Some(response)) => Event::Message(response),
                (0, None) => Event::Close {
                    code: GrpcCode::Internal.code(),
                    message: String::new(),
                },
                (code, _) => Event::Close {
                    code,
                    message: message.to_string(),
                },
            }
        };
        self.call.push(event);
    }
}

impl Drop for GrpcReply {
    fn drop(&mut self) {
        if !self.closed {
            self.finish(
                GrpcCode::Internal.code(),
                "the gRPC call ended without a status",
            );
        }
    }
}

impl std::fmt::Debug for GrpcReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcReply")
            .field("replica", &self.call.replica)
            .field("token", &self.call.token)
            .field("unary", &self.call.unary)
            .finish_non_exhaustive()
    }
}

impl PendingCall {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a report; the first one since the queue was last drained schedules a delivery.
    fn push(self: &Arc<Self>, event: Event) {
        let schedule = {
            let mut queue = self.lock();
            queue.events.push_back(event);
            !std::mem::replace(&mut queue.scheduled, true)
        };
        if !schedule {
            return;
        }
        let Some(plugin) = self.plugin.upgrade() else {
            return;
        };
        let call = self.clone();
        plugin.defer(Box::new(move || {
            if let Some(plugin) = call.plugin.upgrade() {
                plugin.deliver_grpc(&call);
            }
        }));
    }

    /// The next report to deliver; `None` ends this delivery (a later report schedules the
    /// next one).
    pub(crate) fn next(&self) -> Option<Event> {
        let mut queue = self.lock();
        let event = queue.events.pop_front();
        if event.is_none() {
            queue.scheduled = false;
        }
        event
    }
}

/// The gRPC calls of one replica (kept in its store), and the report its running gRPC
/// callback may read.
#[derive(Default)]
pub(crate) struct GrpcCalls {
    live: HashMap<u32, Live>,
    received: Option<Event>,
}

struct Live {
    unary: bool,
    /// Dropped once the call can no longer send (it ended, or was cancelled).
    outbound: Option<Box<dyn GrpcOutbound>>,
    /// The filter sent `end_stream` or closed: no more messages go out.
    half_closed: bool,
    /// The filter called `proxy_grpc_close`.
    local_closed: bool,
    /// The status was delivered.
    remote_closed: bool,
}

impl GrpcCalls {
    /// `GRPC_CALL_INITIAL_METADATA` or `_TRAILING_METADATA`, during the callback showing it.
    pub(crate) fn metadata(&self, map_type: i32) -> Option<&HeaderMap> {
        match (map_type, self.received.as_ref()) {
            (map::GRPC_CALL_INITIAL_METADATA, Some(Event::InitialMetadata(m)))
            | (map::GRPC_CALL_TRAILING_METADATA, Some(Event::TrailingMetadata(m))) => Some(m),
            _ => None,
        }
    }

    /// `GRPC_CALL_MESSAGE`, during `proxy_on_grpc_receive`.
    pub(crate) fn message(&self) -> Option<&[u8]> {
        match self.received.as_ref() {
            Some(Event::Message(m)) => Some(m),
            _ => None,
        }
    }

    /// What `proxy_get_status` answers: the status during `proxy_on_grpc_close`, else OK.
    pub(crate) fn status(&self) -> (u32, &str) {
        match self.received.as_ref() {
            Some(Event::Close { code, message }) => (*code, message),
            _ => (0, ""),
        }
    }

    /// Forgets a call and tells the embedder it was cancelled; false if it was not live.
    fn cancel(&mut self, token: u32) -> bool {
        match self.live.remove(&token) {
            Some(mut live) => {
                if let Some(outbound) = live.outbound.as_mut() {
                    outbound.cancel();
                }
                true
            }
            None => false,
        }
    }

    /// Makes `event` readable and says which callback shows it, with its size argument; `None`
    /// if the call is no longer live (cancelled, or of a replica since rebuilt).
    pub(crate) fn prepare(&mut self, token: u32, event: Event) -> Option<(&'static str, i32)> {
        self.live.get(&token)?;
        let (callback, n) = match &event {
            Event::InitialMetadata(m) => ("proxy_on_grpc_receive_initial_metadata", m.len()),
            Event::Message(m) => ("proxy_on_grpc_receive", m.len()),
            Event::TrailingMetadata(m) => ("proxy_on_grpc_receive_trailing_metadata", m.len()),
            Event::Close { code, .. } => ("proxy_on_grpc_close", *code as usize),
        };
        self.received = Some(event);
        Some((callback, n as i32))
    }

    /// After the callback: a call whose last callback this was is forgotten (a stream the
    /// filter has not closed stays known, as in Envoy, so closing it still answers OK).
    pub(crate) fn delivered(&mut self, token: u32) {
        let ended = match self.received.take() {
            Some(Event::Close { .. }) => true,
            Some(_) => self.live.get(&token).is_some_and(|l| l.unary),
            None => false,
        };
        if !ended {
            return;
        }
        let forget = match self.live.get_mut(&token) {
            Some(live) if !live.unary && !live.local_closed => {
                live.remote_closed = true;
                live.outbound = None;
                false
            }
            Some(_) => true,
            None => false,
        };
        if forget {
            self.live.remove(&token);
        }
    }
}

/// A string argument: not UTF-8 is a parse failure (the only refusal the SDKs accept here).
fn read_name(c: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<String, i32> {
    String::from_utf8(read(c, ptr, len)?).map_err(|_| status::PARSE_FAILURE)
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(status) => return Ok(status),
        }
    };
}

/// The names and metadata of `proxy_grpc_call` and `proxy_grpc_stream`, as guest ranges.
pub(crate) struct OpenArgs {
    pub upstream: (i32, i32),
    pub service: (i32, i32),
    pub method: (i32, i32),
    pub metadata: (i32, i32),
}

/// `proxy_grpc_call`.
pub(crate) fn call(
    c: &mut Ctx<'_>,
    args: OpenArgs,
    message: (i32, i32),
    timeout_ms: i32,
    token_out: i32,
) -> R {
    let message = tri!(read(c, message.0, message.1));
    // The SDKs pass the timeout as an unsigned number of milliseconds.
    let timeout_ms = timeout_ms as u32;
    let kind = GrpcKind::Call {
        message,
        timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms.into())),
    };
    open(c, args, kind, token_out)
}

/// `proxy_grpc_stream`.
pub(crate) fn stream(c: &mut Ctx<'_>, args: OpenArgs, token_out: i32) -> R {
    open(c, args, GrpcKind::Stream, token_out)
}

fn open(c: &mut Ctx<'_>, args: OpenArgs, kind: GrpcKind, token_out: i32) -> R {
    let upstream = tri!(read_name(c, args.upstream.0, args.upstream.1));
    let service = tri!(read_name(c, args.service.0, args.service.1));
    let method = tri!(read_name(c, args.method.0, args.method.1));
    let Ok(initial_metadata) =
        headers::deserialize(&tri!(read(c, args.metadata.0, args.metadata.1)))
    else {
        return Ok(status::PARSE_FAILURE);
    };
    let services = c
        .data()
        .shared
        .services
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(services) = services else {
        return Ok(status::INTERNAL_FAILURE);
    };
    let unary = matches!(kind, GrpcKind::Call { .. });
    let state = c.data_mut();
    let token = state.next_token;
    state.next_token = state.next_token.wrapping_add(1).max(1);
    let reply = GrpcReply::new(
        state.plugin_ref.clone(),
        state.replica,
        state.generation,
        token,
        unary,
    );
    let request = GrpcRequest {
        upstream,
        service,
        method,
        initial_metadata,
        kind,
    };
    let outbound = match services.grpc_call(request, reply) {
        Ok(outbound) => outbound,
        Err(GrpcError::UnknownUpstream(upstream)) => {
            tracing::debug!(upstream, "gRPC call to an unknown upstream refused");
            return Ok(status::PARSE_FAILURE);
        }
        Err(GrpcError::Refused(reason)) => {
            tracing::debug!(reason, "gRPC call refused");
            return Ok(status::INTERNAL_FAILURE);
        }
    };
    c.data_mut().grpc.live.insert(
        token,
        Live {
            unary,
            outbound: Some(outbound),
            half_closed: unary,
            local_closed: false,
            remote_closed: false,
        },
    );
    if let Err(st) = write_u32(c, token_out, token) {
        // The filter will never know this token: stop the call.
        c.data_mut().grpc.cancel(token);
        return Ok(st);
    }
    Ok(status::OK)
}

/// `proxy_grpc_send`.
pub(crate) fn send(c: &mut Ctx<'_>, token: i32, ptr: i32, len: i32, end_stream: i32) -> R {
    let message = tri!(read(c, ptr, len));
    let Some(live) = c.data_mut().grpc.live.get_mut(&(token as u32)) else {
        return Ok(status::NOT_FOUND);
    };
    if live.unary {
        return Ok(status::BAD_ARGUMENT);
    }
    if live.half_closed || live.remote_closed {
        // Envoy accepts it too (and the SDK unwraps the result); there is nowhere to send it.
        tracing::debug!(token, "gRPC message on a closed stream dropped");
        return Ok(status::OK);
    }
    let end_stream = end_stream != 0;
    if let Some(outbound) = live.outbound.as_mut() {
        outbound.send(message, end_stream);
    }
    live.half_closed = end_stream;
    Ok(status::OK)
}

/// `proxy_grpc_cancel`: the call is dropped, and nothing more is delivered for it.
pub(crate) fn cancel(c: &mut Ctx<'_>, token: i32) -> R {
    if c.data_mut().grpc.cancel(token as u32) {
        Ok(status::OK)
    } else {
        Ok(status::NOT_FOUND)
    }
}

/// `proxy_grpc_close`: a stream's local side closes; a unary call is cancelled.
pub(crate) fn close(c: &mut Ctx<'_>, token: i32) -> R {
    let token = token as u32;
    let calls = &mut c.data_mut().grpc;
    let Some(live) = calls.live.get_mut(&token) else {
        return Ok(status::NOT_FOUND);
    };
    if live.unary {
        calls.cancel(token);
        return Ok(status::OK);
    }
    if live.remote_closed {
        calls.live.remove(&token);
        return Ok(status::OK);
    }
    live.local_closed = true;
    if !live.half_closed {
        live.half_closed = true;
        if let Some(outbound) = live.outbound.as_mut() {
            outbound.close();
        }
    }
    Ok(status::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(unary: bool) -> GrpcReply {
        GrpcReply::new(Weak::new(), 0, 1, 7, unary)
    }

    fn drain(reply: &GrpcReply) -> Vec<String> {
        std::iter::from_fn(|| reply.call.next())
            .map(|e| match e {
                Event::InitialMetadata(m) => format!("initial {}", m.len()),
                Event::Message(m) => format!("message {}", String::from_utf8_lossy(&m)),
                Event::TrailingMetadata(m) => format!("trailing {}", m.len()),
                Event::Close { code, message } => format!("close {code} {message}"),
            })
            .collect()
    }

    #[test]
    fn a_stream_reports_everything_in_order() {
        let r = reply(false);
        r.initial_metadata(vec![(":status".into(), b"200".to_vec())]);
        r.message(b"a".to_vec());
        r.message(b"b".to_vec());
        r.trailing_metadata(Vec::new());
        let call = r.call.clone();
        r.close(14, "gone");
        let events: Vec<String> = std::iter::from_fn(|| call.next())
            .map(|e| format!("{e:?}"))
            .collect();
        assert_eq!(events.len(), 5, "{events:?}");
        assert!(events[4].contains("14") && events[4].contains("gone"));
    }

    #[test]
    fn a_unary_call_ends_in_one_report() {
        let ok = reply(true);
        ok.initial_metadata(vec![("x".into(), b"1".to_vec())]);
        ok.message(b"first".to_vec());
        ok.message(b"last".to_vec());
        ok.trailing_metadata(Vec::new());
        let call = ok.call.clone();
        ok.close(0, "");
        assert!(matches!(call.next(), Some(Event::Message(m)) if m == b"last"));
        assert!(call.next().is_none());

        let empty = reply(true);
        let call = empty.call.clone();
        empty.close(0, "");
        assert!(matches!(call.next(), Some(Event::Close { code: 13, .. })));

        let denied = reply(true);
        denied.message(b"ignored".to_vec());
        assert_eq!(drain(&denied), Vec::<String>::new());
        let call = denied.call.clone();
        denied.close(7, "no");
        assert!(matches!(call.next(), Some(Event::Close { code: 7, message }) if message == "no"));
    }

    #[test]
    fn a_dropped_reply_closes_with_internal() {
        let r = reply(false);
        let call = r.call.clone();
        drop(r);
        assert!(matches!(call.next(), Some(Event::Close { code: 13, .. })));
    }

    #[test]
    fn a_stream_stays_known_after_its_remote_close_until_the_filter_closes_it() {
        let mut calls = GrpcCalls::default();
        for (token, unary) in [(1, false), (2, true)] {
            calls.live.insert(
                token,
                Live {
                    unary,
                    outbound: None,
                    half_closed: unary,
                    local_closed: false,
                    remote_closed: false,
                },
            );
        }
        let close = Event::Close {
            code: 0,
            message: String::new(),
        };
        assert_eq!(calls.prepare(1, close), Some(("proxy_on_grpc_close", 0)));
        assert_eq!(calls.status(), (0, ""));
        calls.delivered(1);
        assert!(calls.live.get(&1).is_some_and(|l| l.remote_closed));
        assert_eq!(
            calls.prepare(2, Event::Message(b"m".to_vec())),
            Some(("proxy_on_grpc_receive", 1))
        );
        assert_eq!(calls.message(), Some(&b"m"[..]));
        calls.delivered(2);
        assert!(
            !calls.live.contains_key(&2),
            "a unary call ends with its answer"
        );
        assert_eq!(calls.prepare(2, Event::Message(Vec::new())), None);
        assert_eq!(calls.message(), None);
    }
}
