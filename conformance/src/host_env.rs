//! The host-abi environment: `wasmesh-host` alone, driven by the SDK's deterministic test
//! harness (`wasmesh-sdk-test`): streams fed by hand, time and ticks moved by the suite,
//! callouts and gRPC calls answered by the suite as the server.

use std::sync::{Arc, Mutex};

use wasmesh_host::{
    CalloutDone, CalloutError, CalloutRequest, Host, HostConfig, LogLevel, Plugin, PluginConfig,
    Services, StreamEnv,
};
use wasmesh_sdk_test::Harness;

use crate::capture::{self, Line};
use crate::error::{Context, Result};
use crate::probes;

/// A probe loaded in its own harness, under a name unique in this process.
pub struct Loaded {
    pub harness: Harness,
    pub name: String,
}

/// Loads `wasm` (a probe path) as plugin `<base>-<n>` with `config`.
pub fn load(wasm: &str, base: &str, config: &str) -> Result<Loaded> {
    load_with(wasm, base, |b| b.plugin_config(config))
}

/// Loads `wasm` as plugin `<base>-<n>`, letting `setup` adjust the harness first.
pub fn load_with(
    wasm: &str,
    base: &str,
    setup: impl FnOnce(wasmesh_sdk_test::HarnessBuilder) -> wasmesh_sdk_test::HarnessBuilder,
) -> Result<Loaded> {
    let name = capture::unique(base);
    let harness = setup(Harness::builder(wasm).name(&name))
        .load()
        .doing(&format!("loading {wasm} on the host"))?;
    Ok(Loaded { harness, name })
}

/// A stream environment with no attributes, for streams driven on plugins loaded beside a
/// harness (the probes that read attributes go through the harness).
pub struct NoAttributes;

impl StreamEnv for NoAttributes {
    fn property(&self, _path: &[&str]) -> Option<Vec<u8>> {
        None
    }
}

/// Loads another plugin of `wasm` on the same host as `beside` (sharing its shared data and
/// queues, as plugins of one proxy do), with one replica; returns it and its unique name.
pub fn load_beside(
    beside: &Harness,
    wasm: &str,
    base: &str,
    vm_id: &str,
    config: &str,
) -> Result<(Arc<Plugin>, String)> {
    let name = capture::unique(base);
    let mut plugin_config = PluginConfig::new(&name);
    plugin_config.replicas = 1;
    plugin_config.vm_id = vm_id.to_string();
    plugin_config.plugin_config = config.as_bytes().to_vec();
    let bytes = probes::read(wasm)?;
    let plugin = beside
        .host()
        .load_plugin(plugin_config, &bytes)
        .doing(&format!("loading {wasm} beside the harness"))?;
    Ok((plugin, name))
}

/// The host's embedder services for runs that end a plugin and need its last lines (its root
/// context ends when the plugin is dropped, after any harness is gone): every line is kept
/// with its exact level; callouts are refused, time is the system's.
#[derive(Default)]
pub struct Recorder {
    lines: Mutex<Vec<Line>>,
}

impl Recorder {
    /// The lines `plugin` logged so far.
    pub fn lines(&self, plugin: &str) -> Vec<Line> {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.plugin == plugin)
            .cloned()
            .collect()
    }
}

impl Services for Recorder {
    fn http_call(
        &self,
        request: CalloutRequest,
        _done: CalloutDone,
    ) -> std::result::Result<(), CalloutError> {
        Err(CalloutError::UnknownUpstream(request.upstream))
    }

    fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Line {
                plugin: plugin.to_string(),
                level: level.as_str(),
                message: message.to_string(),
            });
    }

    fn log_level(&self) -> LogLevel {
        LogLevel::Trace
    }

    fn automatic_ticks(&self) -> bool {
        false
    }
}

/// A host of its own with a [`Recorder`] as its services.
pub fn recorded_host() -> Result<(Arc<Host>, Arc<Recorder>)> {
    let host = Host::new(HostConfig::default()).doing("creating a host")?;
    let recorder = Arc::new(Recorder::default());
    host.set_services(recorder.clone());
    Ok((host, recorder))
}

/// Loads `wasm` on `host` as plugin `<base>-<n>` with `config` (one replica).
pub fn load_on(host: &Host, wasm: &str, base: &str, config: &str) -> Result<(Arc<Plugin>, String)> {
    let name = capture::unique(base);
    let mut plugin_config = PluginConfig::new(&name);
    plugin_config.replicas = 1;
    plugin_config.plugin_config = config.as_bytes().to_vec();
    let plugin = host
        .load_plugin(plugin_config, &probes::read(wasm)?)
        .doing(&format!("loading {wasm}"))?;
    Ok((plugin, name))
}

/// The lines the harness's plugin logged, with their exact levels (the harness keeps them
/// whatever `tracing` subscriber is in effect).
pub fn harness_lines(harness: &Harness) -> Vec<Line> {
    harness
        .logs()
        .into_iter()
        .map(|l| Line {
            plugin: l.plugin,
            level: l.level.as_str(),
            message: l.message,
        })
        .collect()
}
