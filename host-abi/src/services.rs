//! The embedder's side of the host: what filters reach beyond a single stream (HTTP and gRPC
//! callouts), where their log lines go, the clocks they read, and who runs the host's timers
//! and deferred work. The proxy installs one [`Services`] with [`crate::Host::set_services`]
//! and overrides only `http_call` and `grpc_call`; the SDK's test harness overrides the rest
//! too, so a test controls time, ticks and log capture and nothing runs behind its back.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use crate::abi::LogLevel;
use crate::callout::{CalloutDone, CalloutError, CalloutRequest};
use crate::grpc::{GrpcError, GrpcOutbound, GrpcReply, GrpcRequest};

/// Work the host hands to [`Services::spawn`].
pub type Deferred = Box<dyn FnOnce() + Send + 'static>;

/// What the embedder provides to filters beyond a single stream. Only [`Services::http_call`]
/// must be written; every other method has the behaviour a host without services has.
pub trait Services: Send + Sync {
    /// Starts a callout; `done` must be called exactly once, with `None` if it failed or
    /// timed out (the filter then sees zero headers, as in Envoy).
    fn http_call(&self, request: CalloutRequest, done: CalloutDone) -> Result<(), CalloutError>;

    /// Starts a gRPC call or stream (see [`crate::GrpcRequest`]); what comes back is reported
    /// through `reply`, and the filter's later sends and closes reach the returned handle.
    /// [`GrpcError::UnknownUpstream`] answers the filter PARSE_FAILURE, anything else
    /// INTERNAL_FAILURE. Default: refused, as by a host without gRPC.
    fn grpc_call(
        &self,
        request: GrpcRequest,
        reply: GrpcReply,
    ) -> Result<Box<dyn GrpcOutbound>, GrpcError> {
        drop(reply);
        Err(GrpcError::Refused(format!(
            "gRPC calls are not offered here (upstream \"{}\")",
            request.upstream
        )))
    }

    /// A line a filter logged with `proxy_log` (or wrote to stdout, `Info`, or stderr, `Error`).
    /// Default: a `tracing` event with target `wasm` and field `plugin`.
    fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        log_to_tracing(plugin, level, message);
    }

    /// The level `proxy_get_log_level` reports. Default: the current `tracing` level filter.
    fn log_level(&self) -> LogLevel {
        tracing_level()
    }

    /// Wall-clock time as filters see it (`proxy_get_current_time_nanoseconds`, WASI
    /// `clock_time_get` REALTIME). Default: the system clock.
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    /// Monotonic time as filters see it (WASI `clock_time_get` MONOTONIC, so `Instant` in a
    /// Rust filter): any fixed origin, never going back. Default: time since the process's
    /// first reading.
    fn monotonic(&self) -> Duration {
        process_clock()
    }

    /// Whether the host runs tick timers itself (a tokio interval per replica whose root
    /// context set a tick period, when a runtime is present). An embedder that fires ticks
    /// itself with [`crate::Plugin::tick`] answers false. Read when a replica is built.
    fn automatic_ticks(&self) -> bool {
        true
    }

    /// Runs host work that must not run inside the callback that caused it
    /// (`proxy_on_queue_ready` after an enqueue, the callbacks of gRPC calls: both need the
    /// replica the callback that caused them may hold). Default: a task on the current tokio
    /// runtime; without a runtime the work is dropped, since nothing would run it later. The
    /// SDK's test harness queues it and runs it once the callback has returned.
    fn spawn(&self, work: Deferred) {
        spawn_on_runtime(work);
    }
}

/// [`Services::log`]'s default, for embedders that override it and still want the event.
pub fn log_to_tracing(plugin: &str, level: LogLevel, message: &str) {
    match level {
        LogLevel::Trace => tracing::trace!(target: "wasm", plugin, "{message}"),
        LogLevel::Debug => tracing::debug!(target: "wasm", plugin, "{message}"),
        LogLevel::Info => tracing::info!(target: "wasm", plugin, "{message}"),
        LogLevel::Warn => tracing::warn!(target: "wasm", plugin, "{message}"),
        LogLevel::Error | LogLevel::Critical => {
            tracing::error!(target: "wasm", plugin, "{message}")
        }
    }
}

fn tracing_level() -> LogLevel {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE => LogLevel::Trace,
        LevelFilter::DEBUG => LogLevel::Debug,
        LevelFilter::INFO => LogLevel::Info,
        LevelFilter::WARN => LogLevel::Warn,
        LevelFilter::ERROR => LogLevel::Error,
        _ => LogLevel::Critical,
    }
}

fn process_clock() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

fn spawn_on_runtime(work: Deferred) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { work() });
    }
}

/// The embedder's services as the host calls them: the installed ones, or the defaults.
pub(crate) struct Installed(pub(crate) Option<crate::callout::SharedServices>);

impl Installed {
    pub(crate) fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        match &self.0 {
            Some(s) => s.log(plugin, level, message),
            None => log_to_tracing(plugin, level, message),
        }
    }

    pub(crate) fn log_level(&self) -> LogLevel {
        self.0
            .as_ref()
            .map_or_else(tracing_level, |s| s.log_level())
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.0.as_ref().map_or_else(SystemTime::now, |s| s.now())
    }

    pub(crate) fn monotonic(&self) -> Duration {
        self.0
            .as_ref()
            .map_or_else(process_clock, |s| s.monotonic())
    }

    pub(crate) fn automatic_ticks(&self) -> bool {
        self.0.as_ref().is_none_or(|s| s.automatic_ticks())
    }

    pub(crate) fn spawn(&self, work: Deferred) {
        match &self.0 {
            Some(s) => s.spawn(work),
            None => spawn_on_runtime(work),
        }
    }
}
