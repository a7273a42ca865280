//! `wasmesh-host`: the proxy-wasm ABI host on wasmtime.
//!
//! It loads a filter module, detects its ABI version (0.2.1, 0.2.0 or 0.1.0), refuses at load
//! time a module that imports anything this host does not provide, pre-links it once, and runs
//! one VM replica per worker. It knows nothing about sockets or the proxy's types: the proxy
//! hands it a stream's headers and bodies as plain data and answers its questions about the
//! stream through the [`StreamEnv`] trait.
//!
//! ```no_run
//! use std::sync::Arc;
//! use wasmesh_host::{Host, HostConfig, PluginConfig, StreamEnv, Action};
//!
//! struct NoAttributes;
//! impl StreamEnv for NoAttributes {
//!     fn property(&self, _path: &[&str]) -> Option<Vec<u8>> { None }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host = Host::new(HostConfig::default())?;
//! let wasm = std::fs::read("filter.wasm")?;
//! let plugin = host.load_plugin(PluginConfig::new("my-filter"), &wasm)?;
//! let mut stream = plugin.http_stream(Arc::new(NoAttributes))?;
//! stream.data.request_headers = vec![(":path".into(), b"/".to_vec())];
//! match stream.on_request_headers(true)? {
//!     Action::Continue => { /* forward with stream.data.request_headers */ }
//!     Action::Pause => { /* a local response, or wait for stream.resumed() */ }
//! }
//! # Ok(()) }
//! ```
//!
//! What the host needs from its embedder beyond one stream — HTTP and gRPC callouts, and
//! optionally where log lines go, the clocks filters read, who fires ticks and runs deferred
//! work — is the [`Services`] trait, installed with [`Host::set_services`]. The proxy
//! implements callouts (gRPC ones through [`GrpcReply`] and [`GrpcOutbound`]);
//! the SDK's test harness (`wasmesh-sdk-test`) implements all of it to drive a filter
//! deterministically, with [`Plugin::tick`], [`CalloutDone::complete_now`],
//! [`HttpStream::resume_count`], [`HttpStream::peek`] and the host's shared data and queues
//! ([`Host::shared_data`], [`Host::enqueue_shared_queue`], …).
//!
//! Failures inside a filter (traps, deadline overruns, exhausted memory) come back as
//! [`FilterFailure`]; the proxy applies the plugin's [`FailurePolicy`], and the failed replica
//! is rebuilt on its next use. The host never panics on guest input.

pub mod abi;
mod callout;
mod filter_state;
mod grpc;
pub mod headers;
mod host;
mod hostcalls;
pub mod limits;
mod metrics;
mod plugin;
mod services;
mod shared;
mod state;
mod stream;
mod wasi;

pub use abi::{AbiVersion, Action, LogLevel, MetricType};
pub use callout::{CalloutDone, CalloutError, CalloutRequest, CalloutResponse};
pub use filter_state::FilterState;
pub use grpc::{GrpcCode, GrpcError, GrpcKind, GrpcOutbound, GrpcReply, GrpcRequest};
pub use headers::HeaderMap;
pub use host::{Host, HostConfig, ModuleCheck, SharedError};
pub use metrics::PluginMetrics;
pub use plugin::{FailureKind, FailurePolicy, FilterFailure, LoadError, Plugin, PluginConfig};
pub use services::{Deferred, Services, log_to_tracing};
pub use state::StreamData;
pub use stream::{HttpStream, KeptHeaders, LocalResponse, PeerType, ResumeWaiter, StreamEnv};
