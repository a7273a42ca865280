//! The harness's side of the host's embedder boundary ([`wasmesh_host::Services`]): it records
//! HTTP and gRPC callouts instead of sending them, captures log lines, answers the clocks from
//! a value the test sets, fires no timers, and queues deferred work until the harness runs it —
//! so nothing happens behind the test's back, with or without a tokio runtime.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use wasmesh_host::{
    CalloutDone, CalloutError, CalloutRequest, Deferred, GrpcError, GrpcKind, GrpcOutbound,
    GrpcReply, GrpcRequest, HeaderMap, LogLevel, Services,
};

/// One line a filter logged (`proxy_log`, or stdout at `Info` and stderr at `Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The plugin's name.
    pub plugin: String,
    pub level: LogLevel,
    pub message: String,
}

/// An HTTP callout the filter issued (`dispatch_http_call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    /// The harness's number for it, for [`crate::Harness::respond`] and friends.
    pub id: u64,
    /// The cluster name the filter gave.
    pub upstream: String,
    /// Headers, `:method`, `:path` and `:authority` included.
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
    /// The timeout the filter asked for (zero: the host's default).
    pub timeout: Duration,
}

impl Callout {
    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        crate::stream::first(&self.headers, name)
    }
}

/// A gRPC call or stream the filter opened (`dispatch_grpc_call`, `open_grpc_stream`), with
/// what it has done on it since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    /// The harness's number for it, for [`crate::Harness::grpc_message`] and friends.
    pub id: u64,
    /// The cluster name the filter gave.
    pub upstream: String,
    pub service: String,
    pub method: String,
    pub initial_metadata: HeaderMap,
    /// A stream (`open_grpc_stream`), or a unary call.
    pub stream: bool,
    /// A unary call's request message, or the messages the filter sent on a stream so far.
    pub messages: Vec<Vec<u8>>,
    /// A unary call's deadline (`None`: the filter gave none).
    pub timeout: Option<Duration>,
    /// The filter closed its side of the stream (`end_stream`, or `close_grpc_stream`).
    pub half_closed: bool,
    /// The filter cancelled it (`cancel_grpc_call`/`_stream`, or `close` on a unary call).
    pub cancelled: bool,
}

impl GrpcCall {
    /// The first value of initial-metadata entry `name` (case-insensitive), as text.
    pub fn metadata(&self, name: &str) -> Option<String> {
        crate::stream::first(&self.initial_metadata, name)
    }
}

/// What the filter does to a call after opening it, recorded in the call's [`GrpcCall`].
struct Recorder(Arc<Mutex<GrpcCall>>);

impl GrpcOutbound for Recorder {
    fn send(&mut self, message: Vec<u8>, end_stream: bool) {
        let mut call = lock(&self.0);
        call.messages.push(message);
        call.half_closed |= end_stream;
    }

    fn close(&mut self) {
        lock(&self.0).half_closed = true;
    }

    fn cancel(&mut self) {
        lock(&self.0).cancelled = true;
    }
}

#[derive(Default)]
struct GrpcCalls {
    next_id: u64,
    issued: Vec<Arc<Mutex<GrpcCall>>>,
    /// Calls the test has not closed yet, with the way to answer them.
    open: BTreeMap<u64, GrpcReply>,
}

#[derive(Default)]
struct Callouts {
    next_id: u64,
    issued: Vec<Callout>,
    pending: BTreeMap<u64, CalloutDone>,
}

struct Clock {
    realtime: SystemTime,
    monotonic: Duration,
}

pub(crate) struct TestServices {
    clock: Mutex<Clock>,
    logs: Mutex<Vec<LogLine>>,
    callouts: Mutex<Callouts>,
    grpc: Mutex<GrpcCalls>,
    deferred: Mutex<VecDeque<Deferred>>,
    upstreams: Option<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Most rounds of deferred work run after one operation: more means work that keeps making
/// work (a queue the filter refills from its own `on_queue_ready`).
const MAX_DEFERRED: usize = 10_000;

impl TestServices {
    pub(crate) fn new(start: SystemTime, upstreams: Option<Vec<String>>) -> TestServices {
        TestServices {
            clock: Mutex::new(Clock {
                realtime: start,
                monotonic: Duration::from_secs(1),
            }),
            logs: Mutex::new(Vec::new()),
            callouts: Mutex::new(Callouts::default()),
            grpc: Mutex::new(GrpcCalls::default()),
            deferred: Mutex::new(VecDeque::new()),
            upstreams,
        }
    }

    pub(crate) fn set_time(&self, time: SystemTime) {
        lock(&self.clock).realtime = time;
    }

    pub(crate) fn advance(&self, by: Duration) {
        let mut clock = lock(&self.clock);
        clock.realtime += by;
        clock.monotonic += by;
    }

    pub(crate) fn logs(&self, plugin: &str) -> Vec<LogLine> {
        lock(&self.logs)
            .iter()
            .filter(|l| l.plugin == plugin)
            .cloned()
            .collect()
    }

    pub(crate) fn clear_logs(&self, plugin: &str) {
        lock(&self.logs).retain(|l| l.plugin != plugin);
    }

    pub(crate) fn callouts(&self) -> Vec<Callout> {
        lock(&self.callouts).issued.clone()
    }

    pub(crate) fn pending_callouts(&self) -> Vec<Callout> {
        let callouts = lock(&self.callouts);
        callouts
            .issued
            .iter()
            .filter(|c| callouts.pending.contains_key(&c.id))
            .cloned()
            .collect()
    }

    /// The completion of a pending callout, which is then no longer pending.
    pub(crate) fn take_callout(&self, id: u64) -> Option<CalloutDone> {
        lock(&self.callouts).pending.remove(&id)
    }

    pub(crate) fn grpc_calls(&self) -> Vec<GrpcCall> {
        lock(&self.grpc)
            .issued
            .iter()
            .map(|c| lock(c).clone())
            .collect()
    }

    /// The calls the test has not closed and the filter has not cancelled.
    pub(crate) fn pending_grpc_calls(&self) -> Vec<GrpcCall> {
        let grpc = lock(&self.grpc);
        grpc.issued
            .iter()
            .map(|c| lock(c).clone())
            .filter(|c| grpc.open.contains_key(&c.id) && !c.cancelled)
            .collect()
    }

    /// Runs `f` on the reply of call `id` if the test has not closed it; `None` otherwise.
    pub(crate) fn with_grpc_reply<T>(&self, id: u64, f: impl FnOnce(&GrpcReply) -> T) -> Option<T> {
        lock(&self.grpc).open.get(&id).map(f)
    }

    /// The reply of call `id`, which is then closed as far as the test goes.
    pub(crate) fn take_grpc_reply(&self, id: u64) -> Option<GrpcReply> {
        lock(&self.grpc).open.remove(&id)
    }

    /// Runs deferred work (queue notifications) until there is none; `false` if it never
    /// settles.
    pub(crate) fn run_deferred(&self) -> bool {
        for _ in 0..MAX_DEFERRED {
            // Not holding the lock while the work runs: it may defer more.
            let Some(work) = lock(&self.deferred).pop_front() else {
                return true;
            };
            work();
        }
        lock(&self.deferred).is_empty()
    }
}

impl Services for TestServices {
    fn http_call(&self, request: CalloutRequest, done: CalloutDone) -> Result<(), CalloutError> {
        // The same refusals as the proxy's: an unknown cluster, a request it could not send.
        if let Some(known) = &self.upstreams
            && !known.contains(&request.upstream)
        {
            return Err(CalloutError::UnknownUpstream(request.upstream));
        }
        let has = |name: &str| request.headers.iter().any(|(k, _)| k == name);
        if !(has(":method") && has(":path") && has(":authority")) {
            return Err(CalloutError::MissingPseudoHeaders);
        }
        let mut callouts = lock(&self.callouts);
        callouts.next_id += 1;
        let id = callouts.next_id;
        callouts.issued.push(Callout {
            id,
            upstream: request.upstream,
            headers: request.headers,
            body: request.body,
            trailers: request.trailers,
            timeout: request.timeout,
        });
        callouts.pending.insert(id, done);
        Ok(())
    }

    fn grpc_call(
        &self,
        request: GrpcRequest,
        reply: GrpcReply,
    ) -> Result<Box<dyn GrpcOutbound>, GrpcError> {
        // The proxy's refusal for a cluster it does not have.
        if let Some(known) = &self.upstreams
            && !known.contains(&request.upstream)
        {
            return Err(GrpcError::UnknownUpstream(request.upstream));
        }
        let mut grpc = lock(&self.grpc);
        grpc.next_id += 1;
        let id = grpc.next_id;
        let (stream, messages, timeout) = match request.kind {
            GrpcKind::Call { message, timeout } => (false, vec![message], timeout),
            GrpcKind::Stream => (true, Vec::new(), None),
        };
        let call = Arc::new(Mutex::new(GrpcCall {
            id,
            upstream: request.upstream,
            service: request.service,
            method: request.method,
            initial_metadata: request.initial_metadata,
            stream,
            messages,
            timeout,
            half_closed: !stream,
            cancelled: false,
        }));
        grpc.issued.push(call.clone());
        grpc.open.insert(id, reply);
        Ok(Box::new(Recorder(call)))
    }

    fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        wasmesh_host::log_to_tracing(plugin, level, message);
        lock(&self.logs).push(LogLine {
            plugin: plugin.to_string(),
            level,
            message: message.to_string(),
        });
    }

    fn log_level(&self) -> LogLevel {
        LogLevel::Trace
    }

    fn now(&self) -> SystemTime {
        lock(&self.clock).realtime
    }

    fn monotonic(&self) -> Duration {
        lock(&self.clock).monotonic
    }

    fn automatic_ticks(&self) -> bool {
        false
    }

    fn spawn(&self, work: Deferred) {
        lock(&self.deferred).push_back(work);
    }
}
