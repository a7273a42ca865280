//! A loaded plugin: its module pre-linked once (`InstancePre`), and one VM replica per worker,
//! each a wasmtime `Store` with its own root context. A stream picks a replica when it starts and
//! keeps it; the replica is locked only for the length of one callback, so many streams
//! interleave in one VM (as in Envoy).
//!
//! Every callback runs under an epoch deadline and the store's memory cap. A trap, a deadline
//! overrun or an allocation failure marks the replica failed: the failure is counted in
//! `wasmesh_filter_failures_total{plugin,kind}`, returned to the proxy (which applies the
//! plugin's failure policy), and the replica is rebuilt from the pre-linked module the next time
//! a stream needs it.

use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rustc_hash::FxHashMap;
use wasmtime::{Engine, Instance, InstancePre, Store, StoreLimitsBuilder, Trap, TypedFunc};

use crate::abi::Action;
use crate::metrics::PluginMetrics;
use crate::state::{ALLOCATORS, HostShared, HostState, PluginInfo, RootEnd, StreamData};
use crate::stream::{HttpStream, StreamEnv, StreamSignals};

/// The shapes of stream callbacks' arguments after the context id.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CallbackArgs {
    /// `(ctx)`: `proxy_on_new_connection`.
    Context,
    /// `(ctx, n)`: trailers callbacks.
    Count(i32),
    /// `(ctx, n, end_of_stream)`: headers, bodies, TCP data (0.1.0 header callbacks take no
    /// `end_of_stream` and are called without it).
    CountEos(i32, bool),
    /// `(ctx, peer_type)`, returning nothing: TCP close callbacks.
    Peer(i32),
}

/// What a plugin failing means for the request it was handling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Answer 503.
    #[default]
    FailClosed,
    /// Skip the plugin and carry on.
    FailOpen,
}

/// How one plugin is run.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    /// Handed to `proxy_on_vm_start` as the `VM_CONFIGURATION` buffer.
    pub vm_config: Vec<u8>,
    /// Handed to `proxy_on_configure` as the `PLUGIN_CONFIGURATION` buffer.
    pub plugin_config: Vec<u8>,
    pub failure_policy: FailurePolicy,
    /// Longest one callback may run.
    pub deadline: Duration,
    /// Cap on each replica's linear memory.
    pub memory_limit: usize,
    /// VM replicas (one per worker thread is the usual choice).
    pub replicas: usize,
}

impl PluginConfig {
    pub fn new(name: &str) -> PluginConfig {
        PluginConfig {
            name: name.to_string(),
            root_id: String::new(),
            vm_id: String::new(),
            vm_config: Vec::new(),
            plugin_config: Vec::new(),
            failure_policy: FailurePolicy::FailClosed,
            deadline: Duration::from_millis(100),
            memory_limit: 64 * 1024 * 1024,
            replicas: 2,
        }
    }
}

/// Why a plugin could not be loaded or a replica built.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin \"{plugin}\": not a valid Wasm module: {message}")]
    Compile { plugin: String, message: String },
    #[error(
        "plugin \"{plugin}\": the module exports no proxy-wasm ABI marker (proxy_abi_version_0_2_1, _0_2_0 or _0_1_0)"
    )]
    NoAbiVersion { plugin: String },
    #[error("plugin \"{plugin}\": the module imports functions this host does not provide: {}", .imports.join(", "))]
    MissingImports {
        plugin: String,
        imports: Vec<String>,
    },
    #[error("plugin \"{plugin}\": instantiation failed: {message}")]
    Instantiate { plugin: String, message: String },
    #[error("plugin \"{plugin}\": {callback} returned false{}", said(.log))]
    Rejected {
        plugin: String,
        callback: &'static str,
        /// What the filter logged while starting, which usually says why.
        log: Vec<String>,
    },
    #[error("plugin \"{plugin}\": {0}", plugin = .1)]
    Failure(FilterFailure, String),
    #[error("wasm engine: {0}")]
    Engine(String),
}

fn said(log: &[String]) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; the filter said: {}", log.join(" | "))
    }
}

/// What went wrong inside a filter callback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct FilterFailure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped (panic, `unreachable`, out-of-bounds access, failed allocation…).
    Trap,
    /// The callback ran past its deadline.
    Timeout,
    /// The replica this stream was on failed earlier, or could not be rebuilt.
    Unavailable,
    /// The filter made the host hold more for its stream than it may (see
    /// [`crate::limits`]): header maps, bodies or filter state past their bounds.
    Limit,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Unavailable => "unavailable",
            FailureKind::Limit => "limit",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) struct Replica {
    store: Store<HostState>,
    instance: Instance,
    /// Typed exports by (name, signature), filled on first use.
    funcs: FxHashMap<(&'static str, TypeId), Box<dyn Any + Send>>,
}

struct Slot {
    replica: Option<Replica>,
    /// Bumped each time the replica is rebuilt; streams of an older generation are orphaned.
    generation: u64,
    /// The data of streams that were paused on a replica when it failed, until each stream
    /// takes it back (`unpark`) or ends: a fail-open request then goes on with its own
    /// headers, not an empty map.
    orphans: FxHashMap<u32, StreamData>,
}

pub struct Plugin {
    pub(crate) info: Arc<PluginInfo>,
    config: PluginConfig,
    engine: Engine,
    pre: InstancePre<HostState>,
    shared: Arc<HostShared>,
    metrics: Arc<PluginMetrics>,
    slots: Vec<Mutex<Slot>>,
    next_replica: AtomicUsize,
    next_context: AtomicU32,
    tick_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    me: Weak<Plugin>,
}

impl Drop for Plugin {
    fn drop(&mut self) {
        for task in self
            .tick_tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        // Root contexts end with the plugin, as Envoy's do when a VM is torn down; the embedder
        // may have begun that earlier (`begin_shutdown`) to give them time to finish.
        // `proxy_on_delete` comes only once a root is done: one still pending is torn down
        // without it.
        for index in 0..self.slots.len() {
            let mut slot = self.lock(index);
            if let Some(replica) = slot.replica.as_mut() {
                if replica.store.data().root_end == RootEnd::Running {
                    end_root(&self.config, replica);
                }
                let root = replica.store.data().root_context_id;
                if replica.store.data().root_end == RootEnd::Done {
                    let _ = call_unit(&self.config, replica, "proxy_on_delete", (root as i32,));
                } else {
                    tracing::warn!(plugin = %self.info.name, replica = index,
                        "root context never called proxy_done; torn down without proxy_on_delete");
                }
            }
        }
    }
}

/// `proxy_on_done` on a replica's root context: done, or pending until it calls `proxy_done`.
/// A module without the export, or one that fails in it, is done.
fn end_root(config: &PluginConfig, replica: &mut Replica) {
    let root = replica.store.data().root_context_id;
    replica.store.data_mut().effective = root;
    let answer = call(config, replica, "proxy_on_done", (root as i32,));
    repark(replica.store.data_mut());
    replica.store.data_mut().root_end = match answer {
        Ok(Some(0)) => RootEnd::Pending,
        _ => RootEnd::Done,
    };
}

/// After a root callback: a stream it switched to goes back to the parked set.
fn repark(state: &mut HostState) {
    if let Some(id) = state.borrowed.take()
        && let Some(data) = state.stream.take()
    {
        state.parked.insert(id, data);
    }
    state.effective = state.root_context_id;
}

fn classify(err: &wasmtime::Error) -> FailureKind {
    if err.downcast_ref::<crate::limits::LimitExceeded>().is_some() {
        return FailureKind::Limit;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FailureKind::Timeout,
        _ => FailureKind::Trap,
    }
}

fn failure(err: wasmtime::Error) -> FilterFailure {
    FilterFailure {
        kind: classify(&err),
        message: format!("{err:#}"),
    }
}

fn arm_deadline(config: &PluginConfig, store: &mut Store<HostState>) {
    // The epoch ticks every millisecond (see `Host`); a deadline is at least one tick.
    let ticks = (config.deadline.as_millis() as u64).max(1);
    store.set_epoch_deadline(ticks);
}

/// The export `name` as a typed function, looked up once per replica: a lookup by name plus
/// the type check costs more than the call itself, and callbacks run several times per request.
/// Borrowed from the cache, not cloned (a handle's clone copies its registered type).
fn typed<'a, P, R>(
    funcs: &'a mut FxHashMap<(&'static str, TypeId), Box<dyn Any + Send>>,
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &'static str,
) -> Option<&'a TypedFunc<P, R>>
where
    P: wasmtime::WasmParams + 'static,
    R: wasmtime::WasmResults + 'static,
{
    funcs
        .entry((name, TypeId::of::<(P, R)>()))
        .or_insert_with(|| Box::new(instance.get_typed_func::<P, R>(&mut *store, name).ok()))
        .downcast_ref::<Option<TypedFunc<P, R>>>()
        .and_then(Option::as_ref)
}

/// Calls an `i32`-returning export with `args`; `Ok(None)` if the module does not export it.
fn call<P: wasmtime::WasmParams + 'static>(
    config: &PluginConfig,
    replica: &mut Replica,
    name: &'static str,
    args: P,
) -> Result<Option<i32>, FilterFailure> {
    let Replica {
        store,
        instance,
        funcs,
    } = replica;
    let Some(func) = typed::<P, i32>(funcs, instance, store, name) else {
        return Ok(None);
    };
    arm_deadline(config, store);
    func.call(store, args).map(Some).map_err(failure)
}

fn call_unit<P: wasmtime::WasmParams + 'static>(
    config: &PluginConfig,
    replica: &mut Replica,
    name: &'static str,
    args: P,
) -> Result<bool, FilterFailure> {
    let Replica {
        store,
        instance,
        funcs,
    } = replica;
    let Some(func) = typed::<P, ()>(funcs, instance, store, name) else {
        return Ok(false);
    };
    arm_deadline(config, store);
    func.call(store, args).map(|()| true).map_err(failure)
}

impl Plugin {
    pub(crate) fn new(
        info: PluginInfo,
        config: PluginConfig,
        engine: Engine,
        pre: InstancePre<HostState>,
        shared: Arc<HostShared>,
    ) -> Result<Arc<Plugin>, LoadError> {
        let replicas = config.replicas.max(1);
        let plugin = Arc::new_cyclic(|me| Plugin {
            me: me.clone(),
            metrics: Arc::new(PluginMetrics::new(&info.name)),
            info: Arc::new(info),
            config,
            engine,
            pre,
            shared,
            slots: (0..replicas)
                .map(|_| {
                    Mutex::new(Slot {
                        replica: None,
                        generation: 0,
                        orphans: FxHashMap::default(),
                    })
                })
                .collect(),
            next_replica: AtomicUsize::new(0),
            // Context ids are unique within the plugin and never reused.
            next_context: AtomicU32::new(1),
            tick_tasks: Mutex::new(Vec::new()),
        });
        plugin
            .shared
            .plugins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(plugin.info.key, Arc::downgrade(&plugin));
        // Build every replica now: a plugin whose VM start or configure fails is refused at
        // load time, before any request depends on it.
        for index in 0..replicas {
            let mut slot = plugin.lock(index);
            let replica = plugin.instantiate(index, 1)?;
            slot.replica = Some(replica);
            slot.generation = 1;
            drop(slot);
            plugin.start_tick(index, 1);
        }
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The `vm_id` whose shared data and queues the plugin uses.
    pub fn vm_id(&self) -> &str {
        &self.info.vm_id
    }

    pub fn root_id(&self) -> &str {
        &self.info.root_id
    }

    /// The ABI version the module declared.
    pub fn abi_version(&self) -> crate::abi::AbiVersion {
        self.info.abi
    }

    pub fn failure_policy(&self) -> FailurePolicy {
        self.config.failure_policy
    }

    pub fn metrics(&self) -> &PluginMetrics {
        &self.metrics
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Slot> {
        self.slots[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_context_id(&self) -> u32 {
        self.next_context.fetch_add(1, Ordering::Relaxed)
    }

    /// Builds replica `index` for slot generation `generation` (callouts a starting filter
    /// sends carry it, so their answers reach the replica once it serves).
    fn instantiate(&self, index: usize, generation: u64) -> Result<Replica, LoadError> {
        let plugin = self.info.name.clone();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.config.memory_limit)
            .instances(1)
            .build();
        let root = self.new_context_id();
        let state = HostState {
            plugin: self.info.clone(),
            shared: self.shared.clone(),
            metrics: self.metrics.clone(),
            limits,
            replica: index,
            root_context_id: root,
            effective: root,
            stream: None,
            memory: None,
            allocator: None,
            signals: FxHashMap::default(),
            tick_period: None,
            tick_watch: tokio::sync::watch::Sender::new(None),
            startup_log: Some(Vec::new()),
            foreign_args: Vec::new(),
            root_end: RootEnd::Running,
            call_response: None,
            parked: FxHashMap::default(),
            borrowed: None,
            plugin_ref: self.me.clone(),
            generation,
            next_token: 1,
            grpc: Default::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline((self.config.deadline.as_millis() as u64).max(1));
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| LoadError::Instantiate {
                plugin: plugin.clone(),
                message: format!("{e:#}"),
            })?;
        let memory = instance.get_memory(&mut store, "memory");
        let allocator = ALLOCATORS
            .into_iter()
            .find_map(|name| instance.get_func(&mut store, name))
            .and_then(|func| func.typed::<i32, i32>(&store).ok());
        store.data_mut().memory = memory;
        store.data_mut().allocator = allocator;
        let mut replica = Replica {
            store,
            instance,
            funcs: FxHashMap::default(),
        };
        let cfg = &self.config;
        let fail = |f: FilterFailure| LoadError::Failure(f, plugin.clone());
        // WASI reactor start-up, then the ABI's VM and plugin start.
        if !call_unit(cfg, &mut replica, "_initialize", ()).map_err(fail)? {
            call_unit(cfg, &mut replica, "_start", ()).map_err(fail)?;
        } else {
            call(cfg, &mut replica, "main", (0i32, 0i32)).map_err(fail)?;
        }
        call_unit(
            cfg,
            &mut replica,
            "proxy_on_context_create",
            (root as i32, 0i32),
        )
        .map_err(fail)?;
        let vm_config_len = self.info.vm_config.len() as i32;
        if call(
            cfg,
            &mut replica,
            "proxy_on_vm_start",
            (root as i32, vm_config_len),
        )
        .map_err(fail)?
            == Some(0)
        {
            return Err(LoadError::Rejected {
                plugin,
                callback: "proxy_on_vm_start",
                log: replica
                    .store
                    .data_mut()
                    .startup_log
                    .take()
                    .unwrap_or_default(),
            });
        }
        let plugin_config_len = self.info.plugin_config.len() as i32;
        if call(
            cfg,
            &mut replica,
            "proxy_on_configure",
            (root as i32, plugin_config_len),
        )
        .map_err(fail)?
            == Some(0)
        {
            return Err(LoadError::Rejected {
                plugin,
                callback: "proxy_on_configure",
                log: replica
                    .store
                    .data_mut()
                    .startup_log
                    .take()
                    .unwrap_or_default(),
            });
        }
        replica.store.data_mut().startup_log = None;
        Ok(replica)
    }

    /// Marks a replica failed after a callback failure; it is rebuilt on next use.
    fn fail_replica(&self, slot: &mut Slot, failure: &FilterFailure) {
        // Streams paused on the replica get their data back and are woken: their wait ends
        // now (the proxy sees the replica failed) rather than at their pause limit.
        if let Some(mut replica) = slot.replica.take() {
            let state = replica.store.data_mut();
            for (id, data) in state.parked.drain() {
                if let Some(signals) = state.signals.get(&id) {
                    signals.resume.notify_one();
                }
                slot.orphans.insert(id, data);
            }
        }
        slot.generation += 1;
        metrics::counter!("wasmesh_filter_failures_total",
            "plugin" => self.info.name.clone(), "kind" => failure.kind.as_str())
        .increment(1);
        tracing::warn!(plugin = %self.info.name, kind = %failure.kind, error = %failure.message,
            "filter failed; its VM replica will be rebuilt");
    }

    /// Starts a network (TCP) stream: the same context as an HTTP stream, driven through
    /// [`HttpStream::on_new_connection`] and the data and close callbacks.
    pub fn network_stream(
        self: &Arc<Self>,
        env: Arc<dyn StreamEnv>,
    ) -> Result<HttpStream, FilterFailure> {
        self.http_stream(env)
    }

    /// [`Plugin::network_stream`] on replica `replica` (see [`Plugin::http_stream_on`]).
    pub fn network_stream_on(
        self: &Arc<Self>,
        replica: usize,
        env: Arc<dyn StreamEnv>,
    ) -> Result<HttpStream, FilterFailure> {
        self.http_stream_on(replica, env)
    }

    /// Starts a stream on the next replica (round robin), rebuilding it first if it failed.
    pub fn http_stream(
        self: &Arc<Self>,
        env: Arc<dyn StreamEnv>,
    ) -> Result<HttpStream, FilterFailure> {
        let index = self.next_replica.fetch_add(1, Ordering::Relaxed);
        self.http_stream_on(index, env)
    }

    /// Starts a stream on replica `replica` (modulo the number of replicas): an embedder with
    /// one replica per worker thread, as Envoy has one VM per worker, passes the worker's index
    /// so its streams never wait on another worker's.
    pub fn http_stream_on(
        self: &Arc<Self>,
        replica: usize,
        env: Arc<dyn StreamEnv>,
    ) -> Result<HttpStream, FilterFailure> {
        let index = replica % self.slots.len();
        let mut slot = self.lock(index);
        if slot.replica.is_none() {
            match self.instantiate(index, slot.generation) {
                Ok(replica) => {
                    slot.replica = Some(replica);
                    let generation = slot.generation;
                    drop(slot);
                    self.start_tick(index, generation);
                    slot = self.lock(index);
                }
                Err(err) => {
                    return Err(FilterFailure {
                        kind: FailureKind::Unavailable,
                        message: err.to_string(),
                    });
                }
            }
        }
        let generation = slot.generation;
        let context_id = self.new_context_id();
        let signals = Arc::new(StreamSignals::default());
        let Some(replica) = slot.replica.as_mut() else {
            return Err(FilterFailure {
                kind: FailureKind::Unavailable,
                message: "replica unavailable".into(),
            });
        };
        let root = replica.store.data().root_context_id;
        replica
            .store
            .data_mut()
            .signals
            .insert(context_id, signals.clone());
        replica.store.data_mut().effective = context_id;
        let created = call_unit(
            &self.config,
            replica,
            "proxy_on_context_create",
            (context_id as i32, root as i32),
        );
        // Root callbacks (ticks, callout answers) run as the root context until they switch.
        replica.store.data_mut().effective = root;
        if let Err(f) = created {
            self.fail_replica(&mut slot, &f);
            return Err(f);
        }
        Ok(HttpStream {
            plugin: self.clone(),
            replica: index,
            generation,
            context_id,
            parked: false,
            signals,
            data: StreamData::new(env),
        })
    }

    /// Runs one stream callback with the stream's data as the effective context.
    pub(crate) fn stream_callback(
        &self,
        stream: &mut HttpStream,
        name: &'static str,
        args: CallbackArgs,
        park_on_pause: bool,
    ) -> Result<Action, FilterFailure> {
        let mut slot = self.lock(stream.replica);
        if slot.generation != stream.generation {
            return Err(FilterFailure {
                kind: FailureKind::Unavailable,
                message: "the VM replica this stream ran on failed".into(),
            });
        }
        let Some(replica) = slot.replica.as_mut() else {
            return Err(FilterFailure {
                kind: FailureKind::Unavailable,
                message: "replica unavailable".into(),
            });
        };
        let env = stream.data.env.clone();
        let data = std::mem::replace(&mut stream.data, StreamData::new(env));
        {
            let state = replica.store.data_mut();
            state.stream = Some(data);
            state.effective = stream.context_id;
        }
        let resumes_before = stream.signals.resumes.load(Ordering::Relaxed);
        let ctx = stream.context_id as i32;
        let result = match args {
            CallbackArgs::CountEos(n, eos) => {
                match call(&self.config, replica, name, (ctx, n, eos as i32)) {
                    // ABI 0.1.0 header callbacks take no end_of_stream.
                    Ok(None) => call(&self.config, replica, name, (ctx, n)),
                    other => other,
                }
            }
            CallbackArgs::Count(n) => call(&self.config, replica, name, (ctx, n)),
            CallbackArgs::Context => call(&self.config, replica, name, (ctx,)),
            CallbackArgs::Peer(peer) => {
                call_unit(&self.config, replica, name, (ctx, peer)).map(|_| None)
            }
        };
        let state = replica.store.data_mut();
        let action = match &result {
            Ok(raw) => raw.map_or(Action::Continue, Action::from_raw),
            Err(_) => Action::Continue,
        };
        if let Some(data) = state.stream.take() {
            if park_on_pause && action == Action::Pause && data.local_response.is_none() {
                // Paused: a callout answer or tick may switch to this stream and edit it.
                state.parked.insert(stream.context_id, data);
                stream.parked = true;
                // Only a resumption from now on (or during this callback) ends the pause, not
                // one the filter made earlier while the stream was not paused.
                if stream.signals.resumes.load(Ordering::Relaxed) == resumes_before {
                    stream.signals.forget_resume();
                }
            } else {
                stream.data = data;
            }
        }
        state.effective = state.root_context_id;
        match result {
            Ok(_) => Ok(action),
            Err(f) => {
                self.fail_replica(&mut slot, &f);
                Err(f)
            }
        }
    }

    /// Ends a stream's context: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    pub(crate) fn finish_stream(&self, stream: &mut HttpStream) {
        let mut slot = self.lock(stream.replica);
        if slot.generation != stream.generation {
            slot.orphans.remove(&stream.context_id);
            return;
        }
        let Some(replica) = slot.replica.as_mut() else {
            return;
        };
        let env = stream.data.env.clone();
        let mut data = std::mem::replace(&mut stream.data, StreamData::new(env));
        if stream.parked {
            if let Some(parked) = replica.store.data_mut().parked.remove(&stream.context_id) {
                data = parked;
            }
            stream.parked = false;
        }
        let ctx = stream.context_id as i32;
        replica.store.data_mut().stream = Some(data);
        replica.store.data_mut().effective = stream.context_id;
        let result = call(&self.config, replica, "proxy_on_done", (ctx,))
            .and_then(|_| call_unit(&self.config, replica, "proxy_on_log", (ctx,)))
            .and_then(|_| call_unit(&self.config, replica, "proxy_on_delete", (ctx,)));
        let state = replica.store.data_mut();
        state.stream = None;
        state.parked.remove(&stream.context_id);
        state.signals.remove(&stream.context_id);
        state.effective = state.root_context_id;
        if let Err(f) = result {
            self.fail_replica(&mut slot, &f);
        }
    }

    /// Runs a root-context callback (tick, queue ready) on one replica.
    pub(crate) fn root_callback(
        &self,
        index: usize,
        generation: u64,
        name: &'static str,
        arg: Option<i32>,
    ) -> bool {
        let mut slot = self.lock(index);
        if slot.generation != generation {
            return false;
        }
        self.root_callback_in(&mut slot, name, arg)
            .is_ok_and(|ran| ran)
    }

    /// Runs a root-context callback on a locked slot: `Ok(false)` if it has no replica.
    fn root_callback_in(
        &self,
        slot: &mut Slot,
        name: &'static str,
        arg: Option<i32>,
    ) -> Result<bool, FilterFailure> {
        let Some(replica) = slot.replica.as_mut() else {
            return Ok(false);
        };
        let root = replica.store.data().root_context_id as i32;
        replica.store.data_mut().effective = root as u32;
        let result = match arg {
            Some(a) => call_unit(&self.config, replica, name, (root, a)),
            None => call_unit(&self.config, replica, name, (root,)),
        };
        repark(replica.store.data_mut());
        if let Err(f) = result {
            self.fail_replica(slot, &f);
            return Err(f);
        }
        Ok(true)
    }

    /// Runs `proxy_on_tick` now, on every replica whose root context set a tick period, and
    /// says on how many it ran. For embedders that fire ticks themselves (see
    /// [`crate::Services::automatic_ticks`]); a failing tick fails its replica, as a timer's
    /// would, and is returned.
    pub fn tick(&self) -> Result<usize, FilterFailure> {
        let mut ticked = 0;
        for index in 0..self.slots.len() {
            let mut slot = self.lock(index);
            let asked = slot
                .replica
                .as_ref()
                .is_some_and(|r| r.store.data().tick_period.is_some());
            if asked && self.root_callback_in(&mut slot, "proxy_on_tick", None)? {
                ticked += 1;
            }
        }
        Ok(ticked)
    }

    /// Begins the plugin's end, as Envoy does when the plugin's configuration goes away:
    /// `proxy_on_done` on each replica's root context. A root that answers false is pending:
    /// it keeps its ticks, callout answers and queues until it calls `proxy_done`. Returns
    /// whether every root is done already; dropping the plugin ends it either way.
    pub fn begin_shutdown(&self) -> bool {
        for index in 0..self.slots.len() {
            let mut slot = self.lock(index);
            if let Some(replica) = slot.replica.as_mut()
                && replica.store.data().root_end == RootEnd::Running
            {
                end_root(&self.config, replica);
            }
        }
        self.is_shut_down()
    }

    /// Whether every root context is done (see [`Plugin::begin_shutdown`]).
    pub fn is_shut_down(&self) -> bool {
        (0..self.slots.len()).all(|index| {
            self.lock(index)
                .replica
                .as_ref()
                .is_none_or(|r| r.store.data().root_end == RootEnd::Done)
        })
    }

    /// The tick period the filter's root context set (`proxy_set_tick_period_milliseconds`),
    /// as its first live replica has it.
    pub fn tick_period(&self) -> Option<Duration> {
        (0..self.slots.len()).find_map(|index| {
            self.lock(index)
                .replica
                .as_ref()
                .and_then(|r| r.store.data().tick_period)
        })
    }

    /// Lets `f` read a paused stream's data where the replica keeps it; gives `f` back if the
    /// data is not there (the replica failed or the stream was resumed and unparked).
    pub(crate) fn peek_parked<R, F: FnOnce(&StreamData) -> R>(
        &self,
        stream: &HttpStream,
        f: F,
    ) -> Result<R, F> {
        let slot = self.lock(stream.replica);
        if slot.generation != stream.generation {
            return match slot.orphans.get(&stream.context_id) {
                Some(data) => Ok(f(data)),
                None => Err(f),
            };
        }
        match slot
            .replica
            .as_ref()
            .and_then(|r| r.store.data().parked.get(&stream.context_id))
        {
            Some(data) => Ok(f(data)),
            None => Err(f),
        }
    }

    /// How many paused streams' data the plugin holds (see `HostState::parked`, and the
    /// orphans of failed replicas): a paused stream's data goes back to it when it resumes,
    /// times out or ends, so this falls back to zero once no request is paused.
    pub fn parked_streams(&self) -> usize {
        (0..self.slots.len())
            .map(|index| {
                let slot = self.lock(index);
                slot.orphans.len()
                    + slot
                        .replica
                        .as_ref()
                        .map_or(0, |r| r.store.data().parked.len())
            })
            .sum()
    }

    pub(crate) fn generation(&self, index: usize) -> u64 {
        self.lock(index).generation
    }

    /// The replica's tick timer: a tokio task that follows the period the root context sets
    /// (at start or any time later; 0 stops it) and calls `proxy_on_tick`; it ends when the
    /// replica is rebuilt or the plugin dropped.
    fn start_tick(self: &Arc<Self>, index: usize, generation: u64) {
        if !self.shared.services().automatic_ticks() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(mut periods) = self
            .lock(index)
            .replica
            .as_ref()
            .map(|r| r.store.data().tick_watch.subscribe())
        else {
            return;
        };
        let weak: Weak<Plugin> = Arc::downgrade(self);
        let task = runtime.spawn(async move {
            loop {
                let Some(period) = *periods.borrow_and_update() else {
                    // No timer until the filter sets one; the replica gone ends the task.
                    if periods.changed().await.is_err() {
                        return;
                    }
                    continue;
                };
                let mut interval = tokio::time::interval(period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                interval.tick().await;
                loop {
                    // A new period (0: stop) wins over a tick that is also due, so no tick
                    // comes after the filter stopped the timer.
                    tokio::select! {
                        biased;
                        changed = periods.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            break;
                        }
                        _ = interval.tick() => {
                            let Some(plugin) = weak.upgrade() else { return };
                            if !plugin.root_callback(index, generation, "proxy_on_tick", None) {
                                return;
                            }
                        }
                    }
                }
            }
        });
        self.tick_tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Delivers a callout's answer: `proxy_on_http_call_response` on the replica that asked,
    /// run on the runtime if there is one (the caller may hold that replica), else — or when
    /// `now` — on this thread.
    pub(crate) fn http_call_response(
        self: &Arc<Self>,
        replica: usize,
        generation: u64,
        token: u32,
        response: Option<crate::callout::CalloutResponse>,
        now: bool,
    ) {
        let plugin = self.clone();
        let deliver = move || {
            let mut slot = plugin.lock(replica);
            if slot.generation != generation {
                return;
            }
            let Some(r) = slot.replica.as_mut() else {
                return;
            };
            let root = r.store.data().root_context_id as i32;
            let (headers, body, trailers) = response.as_ref().map_or((0, 0, 0), |c| {
                (c.headers.len(), c.body.len(), c.trailers.len())
            });
            r.store.data_mut().call_response = response;
            let result = call_unit(
                &plugin.config,
                r,
                "proxy_on_http_call_response",
                (
                    root,
                    token as i32,
                    headers as i32,
                    body as i32,
                    trailers as i32,
                ),
            );
            let state = r.store.data_mut();
            state.call_response = None;
            repark(state);
            if let Err(f) = result {
                plugin.fail_replica(&mut slot, &f);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !now => {
                runtime.spawn(async move { deliver() });
            }
            _ => deliver(),
        }
    }

    /// Takes a paused stream's data back from the replica (after it was resumed).
    pub(crate) fn unpark(&self, stream: &mut HttpStream) {
        if !stream.parked {
            return;
        }
        let mut slot = self.lock(stream.replica);
        if slot.generation == stream.generation
            && let Some(replica) = slot.replica.as_mut()
            && let Some(data) = replica.store.data_mut().parked.remove(&stream.context_id)
        {
            stream.data = data;
        } else if let Some(data) = slot.orphans.remove(&stream.context_id) {
            stream.data = data;
        }
        stream.parked = false;
    }

    /// Whether the replica a stream runs on failed since the stream started.
    pub(crate) fn replica_failed(&self, stream: &HttpStream) -> bool {
        self.lock(stream.replica).generation != stream.generation
    }

    /// Runs `work` later through the embedder's [`crate::Services::spawn`].
    pub(crate) fn defer(&self, work: crate::services::Deferred) {
        self.shared.services().spawn(work);
    }

    /// Delivers a gRPC call's queued reports, in order, to the root context of the replica
    /// that opened it (see `grpc`); reports for a call no longer live are dropped.
    pub(crate) fn deliver_grpc(&self, call: &crate::grpc::PendingCall) {
        let mut slot = self.lock(call.replica);
        while let Some(event) = call.next() {
            if slot.generation != call.generation {
                continue;
            }
            let Some(r) = slot.replica.as_mut() else {
                continue;
            };
            let Some((callback, n)) = r.store.data_mut().grpc.prepare(call.token, event) else {
                continue;
            };
            let root = r.store.data().root_context_id as i32;
            let result = call_unit(&self.config, r, callback, (root, call.token as i32, n));
            let state = r.store.data_mut();
            state.grpc.delivered(call.token);
            repark(state);
            if let Err(f) = result {
                self.fail_replica(&mut slot, &f);
            }
        }
    }

    /// Tells the registering root context that its queue has items, through the embedder's
    /// [`crate::Services::spawn`]: never inline, the enqueueing callback may hold this very
    /// replica.
    pub(crate) fn notify_queue(self: &Arc<Self>, replica: usize, queue_id: u32) {
        let plugin = self.clone();
        self.shared.services().spawn(Box::new(move || {
            let generation = plugin.generation(replica);
            plugin.root_callback(
                replica,
                generation,
                "proxy_on_queue_ready",
                Some(queue_id as i32),
            );
        }));
    }
}
