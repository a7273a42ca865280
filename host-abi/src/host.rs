//! The process-wide host: one wasmtime `Engine` (epoch interruption, pooling allocator), the
//! linker with every host function, the on-disk cache of precompiled modules, and the state
//! plugins share.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
};

use crate::abi::AbiVersion;
use crate::plugin::{LoadError, Plugin, PluginConfig};
use crate::state::{HostShared, HostState, PluginInfo};

/// How the host is set up.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    /// Where precompiled modules are kept between runs; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Most VM replicas alive at once; sizes the pooling allocator.
    pub max_instances: Option<u32>,
}

/// Why an embedder's access to shared data or a shared queue failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedError {
    #[error("shared data: the CAS does not match the current value's")]
    CasMismatch,
    #[error("no shared queue \"{name}\" registered in vm_id \"{vm_id}\"")]
    NoSuchQueue { vm_id: String, name: String },
    /// The item is larger than a whole queue may hold (a full queue drops its oldest items
    /// instead).
    #[error("the item is too large for shared queue \"{name}\" in vm_id \"{vm_id}\"")]
    TooLarge { vm_id: String, name: String },
}

/// What [`Host::check_module`] found in a module that would load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleCheck {
    /// The ABI version its marker export declares.
    pub abi: AbiVersion,
    /// Every import, as `module.name`; all of them provided by this host.
    pub imports: Vec<String>,
    /// Every export's name.
    pub exports: Vec<String>,
}

pub struct Host {
    engine: Engine,
    linker: Linker<HostState>,
    provided: HashSet<(String, String)>,
    shared: Arc<HostShared>,
    cache_dir: Option<PathBuf>,
    next_key: AtomicUsize,
}

/// Each pooled memory slot reserves this much address space; filters are small.
const POOLED_MEMORY_MAX: usize = 256 * 1024 * 1024;

fn engine(config: &HostConfig) -> Result<Engine, LoadError> {
    let mut cfg = Config::new();
    cfg.epoch_interruption(true);
    cfg.max_wasm_stack(512 * 1024);
    let mut pooling = PoolingAllocationConfig::default();
    let instances = config.max_instances.unwrap_or(256);
    pooling
        .total_core_instances(instances)
        .total_memories(instances)
        .total_tables(instances)
        .max_memory_size(POOLED_MEMORY_MAX);
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    match Engine::new(&cfg) {
        Ok(engine) => Ok(engine),
        Err(err) => {
            // Some sandboxes refuse the large address-space reservation; run without pooling.
            tracing::warn!(error = %err, "pooling allocator unavailable; using on-demand allocation");
            cfg.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Engine::new(&cfg).map_err(|e| LoadError::Engine(format!("{e:#}")))
        }
    }
}

impl Host {
    pub fn new(config: HostConfig) -> Result<Arc<Host>, LoadError> {
        let engine = engine(&config)?;
        let mut linker = Linker::new(&engine);
        let mut provided = HashSet::new();
        crate::hostcalls::link(&mut linker, &mut provided)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        crate::wasi::link(&mut linker, &mut provided)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        // Epoch ticks drive callback deadlines; the thread ends with the engine.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        Ok(Arc::new(Host {
            engine,
            linker,
            provided,
            shared: Arc::new(HostShared::default()),
            cache_dir: config.cache_dir,
            next_key: AtomicUsize::new(1),
        }))
    }

    /// Installs the embedder's [`crate::Services`]: HTTP callouts (through the proxy's
    /// clusters), and optionally logging, clocks, ticks and deferred work. Install them before
    /// loading plugins: a replica reads `automatic_ticks` when it is built.
    pub fn set_services(&self, services: std::sync::Arc<dyn crate::services::Services>) {
        *self
            .shared
            .services
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(services);
    }

    /// A shared-data value of `vm_id` and its CAS, as filters of that `vm_id` see it.
    pub fn shared_data(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        self.shared.data.get(vm_id, key)
    }

    /// Sets a shared-data value of `vm_id`, as `proxy_set_shared_data` does: a non-zero `cas`
    /// must match the current one.
    pub fn set_shared_data(
        &self,
        vm_id: &str,
        key: &str,
        value: Vec<u8>,
        cas: u32,
    ) -> Result<(), SharedError> {
        match self.shared.data.set(vm_id, key, value, cas) {
            crate::abi::status::OK => Ok(()),
            _ => Err(SharedError::CasMismatch),
        }
    }

    /// Puts `value` on the shared queue `name` of `vm_id` (registered by a filter), and tells
    /// the root context that registered it (`proxy_on_queue_ready`, through
    /// [`crate::Services::spawn`]).
    pub fn enqueue_shared_queue(
        &self,
        vm_id: &str,
        name: &str,
        value: Vec<u8>,
    ) -> Result<(), SharedError> {
        let id = self.queue_id(vm_id, name)?;
        self.shared
            .enqueue(id, value)
            .map(drop)
            .map_err(|st| match st {
                crate::abi::status::NOT_FOUND => SharedError::NoSuchQueue {
                    vm_id: vm_id.to_string(),
                    name: name.to_string(),
                },
                _ => SharedError::TooLarge {
                    vm_id: vm_id.to_string(),
                    name: name.to_string(),
                },
            })
    }

    /// Takes the oldest item off the shared queue `name` of `vm_id`; `None` when it is empty.
    pub fn dequeue_shared_queue(
        &self,
        vm_id: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, SharedError> {
        let id = self.queue_id(vm_id, name)?;
        match self.shared.data.dequeue(id) {
            Ok(value) => Ok(Some(value)),
            Err(crate::abi::status::EMPTY) => Ok(None),
            Err(_) => Err(SharedError::NoSuchQueue {
                vm_id: vm_id.to_string(),
                name: name.to_string(),
            }),
        }
    }

    fn queue_id(&self, vm_id: &str, name: &str) -> Result<u32, SharedError> {
        self.shared
            .data
            .resolve_queue(vm_id, name)
            .ok_or_else(|| SharedError::NoSuchQueue {
                vm_id: vm_id.to_string(),
                name: name.to_string(),
            })
    }

    /// Compiles a module, or loads its precompiled form from the cache. The cache key covers
    /// the module's digest and the engine's compatibility hash (wasmtime version and settings).
    pub fn compile(&self, plugin: &str, wasm: &[u8]) -> Result<Module, LoadError> {
        let compile_err = |e: wasmtime::Error| LoadError::Compile {
            plugin: plugin.to_string(),
            message: format!("{e:#}"),
        };
        let Some(dir) = &self.cache_dir else {
            return Module::new(&self.engine, wasm).map_err(compile_err);
        };
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let digest = Sha256::digest(wasm);
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{name}-{:016x}.cwasm", engine_hash.finish()));
        if path.exists() {
            // SAFETY: the file was written by `Module::serialize` of this same engine
            // configuration (the name carries its compatibility hash and the source digest),
            // into a directory this host owns.
            match unsafe { Module::deserialize_file(&self.engine, &path) } {
                Ok(module) => return Ok(module),
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "ignoring unusable cached module")
                }
            }
        }
        let module = Module::new(&self.engine, wasm).map_err(compile_err)?;
        if let Ok(bytes) = module.serialize() {
            // Unique per writer, so concurrent loads of one module never share a temp file.
            let tmp = dir.join(format!(
                ".{name}.{}.{:016x}.tmp",
                std::process::id(),
                rand::random::<u64>()
            ));
            let written = std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&tmp, &bytes))
                .and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(err) = written {
                tracing::warn!(dir = %dir.display(), error = %err, "cannot cache precompiled module");
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(module)
    }

    /// The ABI version `module` declares, once every one of its imports is known to be one
    /// this host provides (by name; `instantiate_pre` then checks their types).
    fn check_abi_and_imports(
        &self,
        plugin: &str,
        module: &Module,
    ) -> Result<AbiVersion, LoadError> {
        let abi =
            AbiVersion::from_exports(module.exports().map(|e| e.name())).ok_or_else(|| {
                LoadError::NoAbiVersion {
                    plugin: plugin.to_string(),
                }
            })?;
        let missing: Vec<String> = module
            .imports()
            .filter(|i| {
                !self
                    .provided
                    .contains(&(i.module().to_string(), i.name().to_string()))
            })
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect();
        if !missing.is_empty() {
            return Err(LoadError::MissingImports {
                plugin: plugin.to_string(),
                imports: missing,
            });
        }
        Ok(abi)
    }

    /// Checks a module the way [`Host::load_plugin`] does before it runs anything — it
    /// compiles, declares an ABI version, and every import is one this host provides with
    /// the type the module expects — without instantiating it. For build tools.
    pub fn check_module(&self, plugin: &str, wasm: &[u8]) -> Result<ModuleCheck, LoadError> {
        let module = self.compile(plugin, wasm)?;
        let abi = self.check_abi_and_imports(plugin, &module)?;
        self.linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Instantiate {
                plugin: plugin.to_string(),
                message: format!("{e:#}"),
            })?;
        Ok(ModuleCheck {
            abi,
            imports: module
                .imports()
                .map(|i| format!("{}.{}", i.module(), i.name()))
                .collect(),
            exports: module.exports().map(|e| e.name().to_string()).collect(),
        })
    }

    /// Loads a plugin: compiles (or reuses) the module, checks its ABI version and imports,
    /// pre-links it, and builds its replicas (VM start and configure included).
    pub fn load_plugin(&self, config: PluginConfig, wasm: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        let module = self.compile(&config.name, wasm)?;
        self.load_compiled(config, &module)
    }

    /// Like [`Host::load_plugin`] with a module [`Host::compile`] returned: several plugins
    /// of one module (or a benchmark) skip even the cache lookup.
    pub fn load_compiled(
        &self,
        config: PluginConfig,
        module: &Module,
    ) -> Result<Arc<Plugin>, LoadError> {
        let module = module.clone();
        let abi = self.check_abi_and_imports(&config.name, &module)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Instantiate {
                plugin: config.name.clone(),
                message: format!("{e:#}"),
            })?;
        let info = PluginInfo {
            name: config.name.clone(),
            root_id: config.root_id.clone(),
            vm_id: config.vm_id.clone(),
            vm_config: config.vm_config.clone(),
            plugin_config: config.plugin_config.clone(),
            abi,
            key: self.next_key.fetch_add(1, Ordering::Relaxed),
        };
        Plugin::new(info, config, self.engine.clone(), pre, self.shared.clone())
    }
}
