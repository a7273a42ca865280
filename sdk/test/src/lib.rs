//! `wasmesh-sdk-test`: runs a built filter (`.wasm`) on wasmesh's proxy-wasm host in-process
//! and drives it deterministically from an ordinary `cargo test` — no proxy, no sockets, no
//! tokio runtime, no real time passing.
//!
//! ```no_run
//! use wasmesh_sdk_test::{Action, Harness};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let wasm = wasmesh_sdk_test::build_wasm(env!("CARGO_MANIFEST_DIR"))?;
//! let harness = Harness::builder(wasm)
//!     .plugin_config(r#"{"request": {"set": {"x-env": "prod"}}}"#)
//!     .load()?;
//! harness.set_property("source.address", "10.0.0.7:51234");
//!
//! let mut stream = harness.http_stream()?;
//! let action = stream.send_request_headers(&[(":method", "GET"), (":path", "/")], true)?;
//! assert_eq!(action, Action::Continue);
//! assert_eq!(stream.request_header("x-env").as_deref(), Some("prod"));
//! # Ok(()) }
//! ```
//!
//! What a test controls and sees:
//!
//! - **loading**: plugin and VM configuration, `root_id`, `vm_id`, on one VM replica or
//!   several ([`HarnessBuilder::replicas`]: streams take the replicas in turn, as the proxy's
//!   workers do); a configuration the filter refuses comes back as [`Error::Load`] with the
//!   filter's log;
//! - **streams** ([`Stream`]): request/response headers, body chunks, trailers, in any order;
//!   the [`Action`] each callback returns, the headers and bodies after the filter, a local
//!   response, whether a paused stream was resumed; the end of the stream with
//!   [`Stream::finish`], which reports a failure in `on_log` (dropping the stream cannot);
//! - **properties**: [`Harness::set_property`] (all streams) and [`Stream::set_property`],
//!   encoded as Envoy does ([`PropertyValue`]);
//! - **time**: the clock filters read (`get_current_time`, `SystemTime::now`, `Instant::now`)
//!   starts at [`DEFAULT_START`] and moves only with [`Harness::set_time`] and
//!   [`Harness::advance`]; ticks fire only with [`Harness::tick`];
//! - **callouts**: [`Harness::callouts`] shows what the filter sent (cluster, headers, body,
//!   timeout); [`Harness::respond`] and [`Harness::fail_callout`] answer them;
//! - **gRPC calls and streams**: [`Harness::grpc_calls`] shows what the filter opened and sent
//!   (cluster, service, method, metadata, messages, half-close, cancel); the test answers as
//!   the server with [`Harness::grpc_initial_metadata`], [`Harness::grpc_message`],
//!   [`Harness::grpc_trailing_metadata`] and [`Harness::grpc_close`] ([`Harness::grpc_respond`]
//!   for a unary call's answer);
//! - **shared state**: [`Harness::shared_data`], [`Harness::set_shared_data`],
//!   [`Harness::enqueue`] (the filter's `on_queue_ready` runs before it returns),
//!   [`Harness::dequeue`];
//! - **output**: [`Harness::metrics`] and [`Harness::logs`];
//! - **portability**: [`portability::unportable_imports`] lists what a built module imports
//!   that the proxy-wasm ABI, WASI or Envoy do not provide.
//!
//! Everything a callback causes — a queue notification, a callout answer's callback, a gRPC
//! reply's callback — has run
//! by the time the harness call that caused it returns, so a test never polls or sleeps.
//! Wasmesh's own tests get their filters from `wasmesh-test-programs`; a filter crate
//! elsewhere builds itself with [`build_wasm`].

mod compile;
mod env;
mod failures;
pub mod portability;
mod services;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmesh_host::{
    CalloutResponse, FilterFailure, Host, HostConfig, LoadError, Plugin, PluginConfig, SharedError,
};

pub use compile::{BuildError, build_wasm};
pub use env::PropertyValue;
pub use services::{Callout, GrpcCall, LogLine};
pub use stream::Stream;
pub use wasmesh_host::{
    Action, FailureKind, GrpcCode, HeaderMap, LocalResponse, LogLevel, MetricType,
};

use services::TestServices;

/// Where the filter's clock starts unless [`HarnessBuilder::start_time`] says otherwise:
/// 2024-01-01T00:00:00Z.
pub const DEFAULT_START: Duration = Duration::from_secs(1_704_067_200);

/// What went wrong driving a filter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    /// The module did not load, or its `on_vm_start`/`on_configure` refused.
    #[error("{error}{}", show_logs(.logs))]
    Load {
        error: LoadError,
        logs: Vec<LogLine>,
    },
    /// A callback trapped or ran past its deadline (the replica is rebuilt, as in the proxy).
    #[error("filter failed: {0}")]
    Filter(#[from] FilterFailure),
    #[error("the filter set no tick period, so it would never be ticked")]
    NoTickPeriod,
    #[error("no pending callout #{0}")]
    NoSuchCallout(u64),
    #[error("no gRPC call #{0} open (never issued, or already closed by the test)")]
    NoSuchGrpcCall(u64),
    #[error(transparent)]
    Shared(#[from] SharedError),
    #[error("deferred work kept making more work (a queue refilled from its own on_queue_ready?)")]
    Runaway,
    /// [`portability::unportable_imports`] was given something that is not a proxy-wasm
    /// module.
    #[error("not a proxy-wasm filter: {0}")]
    NotAFilter(String),
}

impl Error {
    /// The filter's log lines, for a load failure.
    pub fn logs(&self) -> &[LogLine] {
        match self {
            Error::Load { logs, .. } => logs,
            _ => &[],
        }
    }
}

fn show_logs(logs: &[LogLine]) -> String {
    logs.iter()
        .map(|l| format!("\n  [{}] {}", l.level, l.message))
        .collect()
}

/// Runs what a callback deferred, then turns its result into the harness's.
pub(crate) fn settle(
    services: &TestServices,
    result: Result<Action, FilterFailure>,
) -> Result<Action, Error> {
    let settled = services.run_deferred();
    let action = result?;
    if settled {
        Ok(action)
    } else {
        Err(Error::Runaway)
    }
}

/// A metric the filter defined, with its current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// The name the filter gave (labels flattened in, if it used the SDK's families).
    pub name: String,
    pub kind: MetricType,
    /// Counters and gauges: the value; histograms: the last value recorded.
    pub value: i64,
}

/// Sets up a [`Harness`]; see [`Harness::builder`].
#[derive(Debug, Clone)]
pub struct HarnessBuilder {
    wasm: Wasm,
    config: PluginConfig,
    start: SystemTime,
    upstreams: Option<Vec<String>>,
    properties: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone)]
enum Wasm {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl HarnessBuilder {
    /// The plugin configuration (`on_configure`'s `PLUGIN_CONFIGURATION` buffer).
    pub fn plugin_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.config.plugin_config = config.into();
        self
    }

    /// The VM configuration (`on_vm_start`'s `VM_CONFIGURATION` buffer).
    pub fn vm_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.config.vm_config = config.into();
        self
    }

    /// The plugin's `root_id` (default empty).
    pub fn root_id(mut self, root_id: &str) -> Self {
        self.config.root_id = root_id.to_string();
        self
    }

    /// The plugin's `vm_id` (default empty): the namespace of its shared data and queues.
    pub fn vm_id(mut self, vm_id: &str) -> Self {
        self.config.vm_id = vm_id.to_string();
        self
    }

    /// The plugin's name (`plugin_name`; default: the file's stem, or `filter`).
    pub fn name(mut self, name: &str) -> Self {
        self.config.name = name.to_string();
        self
    }

    /// Longest one callback may run (default 1 s; the proxy's default is 100 ms).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.config.deadline = deadline;
        self
    }

    /// Cap on the VM's linear memory (default 64 MiB).
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.config.memory_limit = bytes;
        self
    }

    /// How many VM replicas the plugin runs on (default 1; 0 is taken as 1), as the proxy runs
    /// one per worker thread. Each replica has its own root context and memory; they share
    /// the plugin's shared data, queues and metrics. Streams take the replicas in turn: the
    /// n-th stream (from 0) runs on replica `n % replicas` — see [`Harness::next_replica`]
    /// and [`Stream::replica`]. Use it to test what a filter keeps in shared data across
    /// replicas (counters, rate limit buckets, admitted label values).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.config.replicas = replicas.max(1);
        self
    }

    /// Where the filter's clock starts (default [`DEFAULT_START`]).
    pub fn start_time(mut self, time: SystemTime) -> Self {
        self.start = time;
        self
    }

    /// The clusters callouts may name; others are refused (the filter's `dispatch_http_call`
    /// fails) as the proxy refuses unknown clusters. Default: any name is accepted.
    pub fn upstreams(mut self, names: &[&str]) -> Self {
        self.upstreams = Some(names.iter().map(|n| n.to_string()).collect());
        self
    }

    /// A property every stream sees from the start (see [`Harness::set_property`]).
    pub fn property(mut self, path: &str, value: impl PropertyValue) -> Self {
        self.properties.push((path.to_string(), value.encode()));
        self
    }

    /// Loads the module: compiles it (cached on disk across runs), starts its VM and
    /// configures it.
    pub fn load(self) -> Result<Harness, Error> {
        let wasm = match &self.wasm {
            Wasm::Bytes(bytes) => bytes.clone(),
            Wasm::File(path) => std::fs::read(path).map_err(|e| Error::Read {
                path: path.clone(),
                message: e.to_string(),
            })?,
        };
        // Room for the replicas, their rebuilds after a failure, and a few plugins a test
        // loads itself on `host()`.
        let wanted = self.config.replicas.saturating_mul(2).saturating_add(6);
        let max_instances = u32::try_from(wanted).unwrap_or(u32::MAX);
        let host = Host::new(HostConfig {
            cache_dir: Some(std::env::temp_dir().join("wasmesh-sdk-test-modules")),
            max_instances: Some(max_instances.max(8)),
        })
        .map_err(|error| Error::Load {
            error,
            logs: Vec::new(),
        })?;
        let services = Arc::new(TestServices::new(self.start, self.upstreams));
        host.set_services(services.clone());
        let name = self.config.name.clone();
        let replicas = self.config.replicas.max(1);
        let plugin = match host.load_plugin(self.config, &wasm) {
            Ok(plugin) => plugin,
            Err(error) => {
                return Err(Error::Load {
                    error,
                    logs: services.logs(&name),
                });
            }
        };
        let harness = Harness {
            host,
            plugin,
            services,
            properties: Arc::new(Mutex::new(self.properties.into_iter().collect())),
            replicas,
            streams: AtomicUsize::new(0),
        };
        if !harness.services.run_deferred() {
            return Err(Error::Runaway);
        }
        Ok(harness)
    }
}

/// One filter loaded on its own host (its own shared data, clock and log), driven by the test.
pub struct Harness {
    host: Arc<Host>,
    plugin: Arc<Plugin>,
    services: Arc<TestServices>,
    properties: env::PropertyMap,
    replicas: usize,
    /// Streams started so far: the host gives them the replicas in turn.
    streams: AtomicUsize,
}

impl Harness {
    /// Starts setting up a harness for the module at `wasm`.
    pub fn builder(wasm: impl AsRef<Path>) -> HarnessBuilder {
        let path = wasm.as_ref().to_path_buf();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "filter".into());
        HarnessBuilder::new(Wasm::File(path), &name)
    }

    /// Starts setting up a harness for a module given as bytes.
    pub fn builder_from_bytes(wasm: Vec<u8>) -> HarnessBuilder {
        HarnessBuilder::new(Wasm::Bytes(wasm), "filter")
    }

    /// Loads the module at `wasm` with `plugin_config` and every other setting at its default.
    pub fn load(wasm: impl AsRef<Path>, plugin_config: &str) -> Result<Harness, Error> {
        Harness::builder(wasm).plugin_config(plugin_config).load()
    }

    /// Starts an HTTP stream (a new context in the filter), on the replica
    /// [`Harness::next_replica`] names.
    pub fn http_stream(&self) -> Result<Stream, Error> {
        let env = Arc::new(env::TestEnv {
            shared: self.properties.clone(),
            own: Arc::new(Mutex::new(Default::default())),
        });
        let own = env.own.clone();
        // The host takes the next replica for every stream it starts, even one that fails.
        let replica = self.streams.fetch_add(1, Ordering::Relaxed) % self.replicas;
        let result = self.plugin.http_stream(env);
        let settled = self.services.run_deferred();
        let inner = result?;
        if !settled {
            return Err(Error::Runaway);
        }
        Ok(Stream::new(inner, self.services.clone(), own, replica))
    }

    /// How many VM replicas the plugin runs on ([`HarnessBuilder::replicas`]).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The replica the next [`Harness::http_stream`] will run on: streams take the replicas
    /// in turn, from 0. (Streams started on [`Harness::plugin`] directly take turns too, and
    /// are not counted here.)
    pub fn next_replica(&self) -> usize {
        self.streams.load(Ordering::Relaxed) % self.replicas
    }

    /// Sets a property every stream reads (unless the stream sets its own), by dotted path:
    /// `harness.set_property("source.port", 51234)`, `("connection.mtls", true)`,
    /// `("connection.uri_san_peer_certificate", "spiffe://…")`. `plugin_name`,
    /// `plugin_root_id` and `plugin_vm_id` come from the plugin's settings.
    pub fn set_property(&self, path: &str, value: impl PropertyValue) {
        env::lock(&self.properties).insert(path.to_string(), value.encode());
    }

    /// Removes a property set with [`Harness::set_property`].
    pub fn remove_property(&self, path: &str) {
        env::lock(&self.properties).remove(path);
    }

    /// The wall-clock time the filter sees.
    pub fn now(&self) -> SystemTime {
        wasmesh_host::Services::now(self.services.as_ref())
    }

    /// Sets the wall-clock time the filter sees (the monotonic clock does not move).
    pub fn set_time(&self, time: SystemTime) {
        self.services.set_time(time);
    }

    /// Moves both the wall clock and the monotonic clock forward by `by`. Ticks do not fire
    /// by themselves: call [`Harness::tick`].
    pub fn advance(&self, by: Duration) {
        self.services.advance(by);
    }

    /// Runs the filter's `on_tick` once, on every replica whose root context set a tick
    /// period.
    pub fn tick(&self) -> Result<(), Error> {
        let result = self.plugin.tick();
        let settled = self.services.run_deferred();
        match result? {
            0 => Err(Error::NoTickPeriod),
            _ if !settled => Err(Error::Runaway),
            _ => Ok(()),
        }
    }

    /// The tick period the filter asked for, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        self.plugin.tick_period()
    }

    /// Every callout the filter issued, in order, answered or not.
    pub fn callouts(&self) -> Vec<Callout> {
        self.services.callouts()
    }

    /// The callouts still waiting for an answer.
    pub fn pending_callouts(&self) -> Vec<Callout> {
        self.services.pending_callouts()
    }

    /// Answers callout `id` with `status`, `headers` and `body`; the filter's
    /// `on_http_call_response` has run when this returns.
    pub fn respond(
        &self,
        id: u64,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), Error> {
        let mut map: HeaderMap = vec![(":status".to_string(), status.to_string().into_bytes())];
        map.extend(
            headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())),
        );
        self.respond_with(
            id,
            CalloutResponse {
                headers: map,
                body: body.to_vec(),
                trailers: Vec::new(),
            },
        )
    }

    /// Answers callout `id` with a full response (trailers included; `:status` is up to you).
    pub fn respond_with(&self, id: u64, response: CalloutResponse) -> Result<(), Error> {
        self.complete(id, Some(response))
    }

    /// Fails callout `id`: the filter sees an answer with no headers, which is also how it
    /// sees a timeout.
    pub fn fail_callout(&self, id: u64) -> Result<(), Error> {
        self.complete(id, None)
    }

    fn complete(&self, id: u64, response: Option<CalloutResponse>) -> Result<(), Error> {
        let done = self
            .services
            .take_callout(id)
            .ok_or(Error::NoSuchCallout(id))?;
        done.complete_now(response);
        if self.services.run_deferred() {
            Ok(())
        } else {
            Err(Error::Runaway)
        }
    }

    /// Every gRPC call and stream the filter opened, in order, with what it has sent on them
    /// and whether it closed or cancelled them.
    pub fn grpc_calls(&self) -> Vec<GrpcCall> {
        self.services.grpc_calls()
    }

    /// The gRPC calls and streams the test has not closed and the filter has not cancelled.
    pub fn pending_grpc_calls(&self) -> Vec<GrpcCall> {
        self.services.pending_grpc_calls()
    }

    /// Answers gRPC call `id` with one message and status OK: a unary call's success, whose
    /// `on_grpc_call_response` has run when this returns.
    pub fn grpc_respond(&self, id: u64, message: &[u8]) -> Result<(), Error> {
        self.grpc_message(id, message)?;
        self.grpc_close(id, GrpcCode::Ok, "")
    }

    /// Sends the response headers of stream `id` (given as is: add `:status` and
    /// `content-type` if the filter looks at them); `on_grpc_stream_initial_metadata` has run
    /// when this returns. A unary call is not shown metadata, as in Envoy.
    pub fn grpc_initial_metadata(&self, id: u64, metadata: &[(&str, &str)]) -> Result<(), Error> {
        let metadata = stream::pairs(metadata);
        self.grpc_report(id, |reply| reply.initial_metadata(metadata))
    }

    /// Sends one response message on call `id`: a stream's filter sees it in
    /// `on_grpc_stream_message` before this returns; a unary call keeps it for its status.
    pub fn grpc_message(&self, id: u64, message: &[u8]) -> Result<(), Error> {
        self.grpc_report(id, |reply| reply.message(message.to_vec()))
    }

    /// Sends the trailers of stream `id` (`grpc-status` is not added: give it if the filter
    /// reads it); `on_grpc_stream_trailing_metadata` has run when this returns.
    pub fn grpc_trailing_metadata(&self, id: u64, metadata: &[(&str, &str)]) -> Result<(), Error> {
        let metadata = stream::pairs(metadata);
        self.grpc_report(id, |reply| reply.trailing_metadata(metadata))
    }

    /// Ends call `id` with `code` and `message` (read by the filter with `get_grpc_status`):
    /// a stream's `on_grpc_stream_close`, or a unary call's `on_grpc_call_response` (with the
    /// message sent before, if `code` is OK), has run when this returns.
    pub fn grpc_close(&self, id: u64, code: GrpcCode, message: &str) -> Result<(), Error> {
        let reply = self
            .services
            .take_grpc_reply(id)
            .ok_or(Error::NoSuchGrpcCall(id))?;
        reply.close(code.code(), message);
        self.settle_deferred()
    }

    fn grpc_report(&self, id: u64, f: impl FnOnce(&wasmesh_host::GrpcReply)) -> Result<(), Error> {
        self.services
            .with_grpc_reply(id, f)
            .ok_or(Error::NoSuchGrpcCall(id))?;
        self.settle_deferred()
    }

    fn settle_deferred(&self) -> Result<(), Error> {
        if self.services.run_deferred() {
            Ok(())
        } else {
            Err(Error::Runaway)
        }
    }

    fn vm_id(&self) -> &str {
        self.plugin.vm_id()
    }

    /// A shared-data value of the filter's `vm_id`.
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.host.shared_data(self.vm_id(), key).map(|(v, _)| v)
    }

    /// Sets a shared-data value of the filter's `vm_id` (unconditionally).
    pub fn set_shared_data(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<(), Error> {
        Ok(self
            .host
            .set_shared_data(self.vm_id(), key, value.into(), 0)?)
    }

    /// Puts `value` on the filter's shared queue `name` (registered by the filter in its
    /// `vm_id`); the filter's `on_queue_ready` has run when this returns.
    pub fn enqueue(&self, name: &str, value: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.host
            .enqueue_shared_queue(self.vm_id(), name, value.into())?;
        if self.services.run_deferred() {
            Ok(())
        } else {
            Err(Error::Runaway)
        }
    }

    /// Takes the oldest item off the shared queue `name` of the filter's `vm_id`.
    pub fn dequeue(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.host.dequeue_shared_queue(self.vm_id(), name)?)
    }

    /// Every metric the filter defined.
    pub fn metrics(&self) -> Vec<Metric> {
        self.plugin
            .metrics()
            .snapshot()
            .into_iter()
            .map(|(name, kind, value)| Metric { name, kind, value })
            .collect()
    }

    /// The value of metric `name`, if the filter defined it.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.metrics()
            .into_iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Every line the filter logged so far.
    pub fn logs(&self) -> Vec<LogLine> {
        self.services.logs(self.plugin.name())
    }

    /// The lines logged so far, which are then forgotten.
    pub fn take_logs(&self) -> Vec<LogLine> {
        let logs = self.logs();
        self.services.clear_logs(self.plugin.name());
        logs
    }

    /// The host plugin, for what the harness does not cover.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The host, for what the harness does not cover.
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }
}

impl HarnessBuilder {
    fn new(wasm: Wasm, name: &str) -> HarnessBuilder {
        let mut config = PluginConfig::new(name);
        config.replicas = 1;
        config.deadline = Duration::from_secs(1);
        HarnessBuilder {
            wasm,
            config,
            start: UNIX_EPOCH + DEFAULT_START,
            upstreams: None,
            properties: Vec::new(),
        }
    }
}
