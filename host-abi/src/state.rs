//! What a VM replica's store holds (the host side of one VM), and safe access to guest memory:
//! every pointer and length is checked against the guest's memory before it is used.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use wasmtime::{Caller, Extern, Memory, StoreLimits, TypedFunc};

use crate::abi::{AbiVersion, status};
use crate::headers::HeaderMap;
use crate::metrics::PluginMetrics;
use crate::plugin::Plugin;
use crate::shared::SharedState;
use crate::stream::{LocalResponse, StreamEnv, StreamSignals};
use std::sync::{Mutex, Weak};

/// A plugin's identity and configuration, shared by its replicas.
#[derive(Debug)]
pub struct PluginInfo {
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub abi: AbiVersion,
    /// Unique per loaded plugin; tells shared-queue owners apart.
    pub key: usize,
}

/// The data of the stream whose callback is running (the "effective context").
pub struct StreamData {
    pub request_headers: HeaderMap,
    pub request_trailers: HeaderMap,
    pub response_headers: HeaderMap,
    pub response_trailers: HeaderMap,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    /// A network stream's data, downstream → upstream (`DOWNSTREAM_DATA`).
    pub downstream_data: Vec<u8>,
    /// A network stream's data, upstream → downstream (`UPSTREAM_DATA`).
    pub upstream_data: Vec<u8>,
    pub local_response: Option<LocalResponse>,
    pub env: Arc<dyn StreamEnv>,
    /// Values set with `proxy_set_property`, readable by later `proxy_get_property` calls,
    /// when the embedder shares no filter state across the stream's filters
    /// ([`StreamEnv::filter_state`]).
    pub filter_state: HashMap<String, Vec<u8>>,
    pub clear_route_cache: bool,
    pub close_requested: bool,
    /// Which maps the embedder kept ([`StreamEnv::kept_headers`]) were fetched back, a bit
    /// per [`KeptHeaders`]: each once, so a map the filter then empties stays empty.
    pub(crate) kept_fetched: u8,
}

impl StreamData {
    pub fn new(env: Arc<dyn StreamEnv>) -> StreamData {
        StreamData {
            request_headers: Vec::new(),
            request_trailers: Vec::new(),
            response_headers: Vec::new(),
            response_trailers: Vec::new(),
            request_body: Vec::new(),
            response_body: Vec::new(),
            downstream_data: Vec::new(),
            upstream_data: Vec::new(),
            local_response: None,
            env,
            filter_state: HashMap::new(),
            clear_route_cache: false,
            close_requested: false,
            kept_fetched: 0,
        }
    }
}

/// What all plugins of one host share: shared data and queues, and the plugins themselves so a
/// queue's owner can be told about new items.
#[derive(Default)]
pub struct HostShared {
    pub data: SharedState,
    pub plugins: Mutex<HashMap<usize, Weak<Plugin>>>,
    pub services: std::sync::RwLock<Option<crate::callout::SharedServices>>,
}

impl HostShared {
    /// The embedder's services (or the defaults) for one host call.
    pub(crate) fn services(&self) -> crate::services::Installed {
        crate::services::Installed(
            self.services
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Appends to a shared queue and tells the root context that registered it (never inline:
    /// the caller may be a callback holding that very replica); returns how many of the oldest
    /// items a full queue dropped.
    pub(crate) fn enqueue(&self, queue_id: u32, value: Vec<u8>) -> Result<usize, i32> {
        let (owner, dropped) = self.data.enqueue(queue_id, value)?;
        let plugin = self
            .plugins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&owner.plugin)
            .and_then(Weak::upgrade);
        if let Some(plugin) = plugin {
            plugin.notify_queue(owner.replica, queue_id);
        }
        Ok(dropped)
    }
}

/// How many of a starting filter's log lines a refusal quotes.
const STARTUP_LOG_LINES: usize = 8;

pub struct HostState {
    pub plugin: Arc<PluginInfo>,
    pub shared: Arc<HostShared>,
    pub metrics: Arc<PluginMetrics>,
    pub limits: StoreLimits,
    pub replica: usize,
    pub root_context_id: u32,
    /// The context the running callback is for.
    pub effective: u32,
    /// Present while a stream callback runs.
    pub stream: Option<StreamData>,
    /// The guest's `memory` export and its allocator (`proxy_on_memory_allocate`, or the
    /// legacy `malloc`), resolved once the instance exists: a lookup by name costs more than
    /// the copy most host calls make, and a filter makes several per callback.
    pub memory: Option<Memory>,
    pub allocator: Option<TypedFunc<i32, i32>>,
    /// Live stream contexts of this VM, so `proxy_set_effective_context` + `proxy_continue_stream`
    /// from a root callback can resume the right one. (Context ids are the host's own
    /// counters, so a fast non-keyed hash is safe.)
    pub signals: FxHashMap<u32, Arc<StreamSignals>>,
    pub tick_period: Option<Duration>,
    /// Tells the replica's tick task the period whenever the filter sets it.
    pub tick_watch: tokio::sync::watch::Sender<Option<Duration>>,
    /// While the replica starts (VM start, configure): what the filter logged, so a refusal
    /// can say why in the filter's own words.
    pub startup_log: Option<Vec<String>>,
    pub foreign_args: Vec<u8>,
    /// Where the root context is in its end (`proxy_on_done`, `proxy_done`).
    pub root_end: RootEnd,
    /// Data of streams paused by their filter, kept here so a later root callback (a callout's
    /// answer, a tick) can switch to them with `proxy_set_effective_context` and edit them.
    pub parked: FxHashMap<u32, StreamData>,
    /// The parked stream a root callback switched to, to be parked again when it ends.
    pub borrowed: Option<u32>,
    /// The answer being delivered by `proxy_on_http_call_response`, readable during it.
    pub call_response: Option<crate::callout::CalloutResponse>,
    /// Where a callout's answer must be delivered: this plugin and replica.
    pub plugin_ref: Weak<Plugin>,
    pub generation: u64,
    pub next_token: u32,
    /// This replica's gRPC calls and streams, and the report a gRPC callback is showing.
    pub(crate) grpc: crate::grpc::GrpcCalls,
}

impl HostState {
    /// A line the filter logged (`proxy_log`, or stdout/stderr): to the embedder, and kept
    /// while the replica starts.
    pub(crate) fn log(&mut self, level: crate::abi::LogLevel, message: &str) {
        // Lines that will be emitted count against the plugin's budget (see `limits`).
        let services = self.shared.services();
        if level < services.log_level() || self.metrics.log_budget.allow(&self.plugin.name) {
            services.log(&self.plugin.name, level, message);
        }
        if let Some(lines) = self.startup_log.as_mut()
            && lines.len() < STARTUP_LOG_LINES
        {
            lines.push(message.to_string());
        }
    }
}

pub(crate) type Ctx<'a> = Caller<'a, HostState>;

/// A guest-memory problem answered as a status, never a host panic.
pub(crate) const OOB: i32 = status::INVALID_MEMORY_ACCESS;

fn memory(caller: &mut Ctx<'_>) -> Option<Memory> {
    if let Some(memory) = caller.data().memory {
        return Some(memory);
    }
    // Before the instance is complete (a start function calling the host).
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

/// Reads `len` bytes at `ptr`; a null pointer with length 0 is the ABI's "absent" and reads as
/// empty.
pub(crate) fn read(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<Vec<u8>, i32> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let mem = memory(caller).ok_or(OOB)?;
    let data = mem.data(&*caller);
    let end = ptr.checked_add(len).ok_or(OOB)?;
    data.get(ptr..end).map(<[u8]>::to_vec).ok_or(OOB)
}

pub(crate) fn read_str(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<String, i32> {
    let bytes = read(caller, ptr, len)?;
    String::from_utf8(bytes).map_err(|_| status::BAD_ARGUMENT)
}

pub(crate) fn write(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    let ptr = ptr as u32 as usize;
    let mem = memory(caller).ok_or(OOB)?;
    let data = mem.data_mut(&mut *caller);
    let end = ptr.checked_add(bytes.len()).ok_or(OOB)?;
    let dst = data.get_mut(ptr..end).ok_or(OOB)?;
    dst.copy_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_u32(caller: &mut Ctx<'_>, ptr: i32, value: u32) -> Result<(), i32> {
    write(caller, ptr, &value.to_le_bytes())
}

pub(crate) fn write_u64(caller: &mut Ctx<'_>, ptr: i32, value: u64) -> Result<(), i32> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Copies `bytes` into memory the guest allocates (ownership passes to the guest, as the ABI
/// says) and writes its address and length to the two out-pointers.
pub(crate) fn return_bytes(
    caller: &mut Ctx<'_>,
    bytes: &[u8],
    ptr_out: i32,
    len_out: i32,
) -> wasmtime::Result<i32> {
    let addr = if bytes.is_empty() {
        0
    } else {
        match allocate(caller, bytes.len())? {
            Some(addr) => addr,
            None => return Ok(status::INTERNAL_FAILURE),
        }
    };
    if !bytes.is_empty()
        && let Err(st) = write(caller, addr as i32, bytes)
    {
        return Ok(st);
    }
    if let Err(st) = write_u32(caller, ptr_out, addr) {
        return Ok(st);
    }
    if let Err(st) = write_u32(caller, len_out, bytes.len() as u32) {
        return Ok(st);
    }
    Ok(status::OK)
}

/// The exports a guest may allocate host-returned memory with, in order of preference.
pub(crate) const ALLOCATORS: [&str; 2] = ["proxy_on_memory_allocate", "malloc"];

/// Calls the guest's allocator: `proxy_on_memory_allocate`, or the legacy `malloc`.
fn allocate(caller: &mut Ctx<'_>, size: usize) -> wasmtime::Result<Option<u32>> {
    let Ok(size) = i32::try_from(size) else {
        return Ok(None);
    };
    // Taken out for the call (the store is borrowed by it) and put back: no handle cloned. A
    // guest allocator calling back into the host meanwhile finds it by name.
    if let Some(typed) = caller.data_mut().allocator.take() {
        let addr = typed.call(&mut *caller, size);
        caller.data_mut().allocator = Some(typed);
        let addr = addr?;
        return Ok((addr != 0).then_some(addr as u32));
    }
    let func = ALLOCATORS
        .iter()
        .find_map(|name| caller.get_export(name).and_then(Extern::into_func));
    let Some(func) = func else {
        return Ok(None);
    };
    let typed = func.typed::<i32, i32>(&*caller)?;
    let addr = typed.call(&mut *caller, size)?;
    Ok((addr != 0).then_some(addr as u32))
}

/// How far a root context is in ending, as cpp-host tracks it (`WasmBase::startShutdown`,
/// `pending_done_`, `WasmBase::done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootEnd {
    /// Its plugin has not begun to shut down.
    #[default]
    Running,
    /// `proxy_on_done` answered false: the plugin finishes its work (ticks, callouts and
    /// queues still reach it) and calls `proxy_done` when it is.
    Pending,
    /// Done: `proxy_on_done` answered true, or the plugin called `proxy_done` since.
    /// `proxy_on_delete` may follow.
    Done,
}
