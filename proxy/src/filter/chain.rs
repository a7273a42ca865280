//! Loading filter chains when a configuration snapshot is built.
//!
//! Every plugin's module is fetched (read or pulled), compiled (or taken from the on-disk
//! cache of precompiled modules) and instantiated — VM start and configure included — before
//! the snapshot can serve, so a plugin that does not load rejects the configuration whole.
//! A plugin whose definition and module bytes are the same as in the running snapshot is not
//! rebuilt: the new snapshot shares it, so a reload touches only what changed and a filter's
//! root-context state survives reloads of its neighbours.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use wasmesh_host::{FailurePolicy, Host, HostConfig, LoadError, Plugin, PluginConfig};

use super::source::{Module, SourceError, Sources};
use crate::config::{self, FilterChain};

/// A chain as requests use it.
pub struct Chain {
    pub name: String,
    pub entries: Vec<Entry>,
    /// The plugins requests run through, in order.
    pub plugins: Vec<Arc<Plugin>>,
    /// Why requests through this chain are refused: a `fail_closed` plugin could not be
    /// fetched at start-up. `None` when the chain serves.
    pub blocked: Option<String>,
}

/// One plugin of a chain.
pub enum Entry {
    Loaded(Loaded),
    /// Not fetched at start-up; retried in the background. A `fail_open` plugin is left out of
    /// the chain meanwhile, a `fail_closed` one blocks it.
    Unavailable {
        config: config::Plugin,
        reason: String,
    },
}

impl Entry {
    pub fn config(&self) -> &config::Plugin {
        match self {
            Entry::Loaded(loaded) => &loaded.config,
            Entry::Unavailable { config, .. } => config,
        }
    }
}

/// A running plugin and what it was built from.
#[derive(Clone)]
pub struct Loaded {
    pub config: config::Plugin,
    pub plugin: Arc<Plugin>,
    pub sha256: String,
    pub manifest_digest: Option<String>,
    pub size: usize,
}

/// Why a chain could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("filter chain \"{chain}\", plugin \"{plugin}\": {source}")]
    Fetch {
        chain: String,
        plugin: String,
        #[source]
        source: SourceError,
    },
    #[error("filter chain \"{chain}\": {source}")]
    Load {
        chain: String,
        #[source]
        source: LoadError,
    },
}

/// When chains are loaded, which decides what a module that cannot be fetched means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Nothing serves yet: a plugin that cannot be fetched gets its failure policy, so a
    /// registry outage never keeps the proxy from starting.
    Startup,
    /// A configuration is serving: any new or changed plugin that cannot be fetched rejects
    /// the reload, and the running configuration stays.
    Reload,
}

/// The process's one Wasm host (one engine, one module cache, shared data for every plugin).
pub fn host() -> Result<&'static Arc<Host>, LoadError> {
    static HOST: OnceLock<Result<Arc<Host>, String>> = OnceLock::new();
    let host = HOST.get_or_init(|| {
        Host::new(HostConfig {
            cache_dir: Some(cache_dir().join("compiled")),
            max_instances: None,
        })
        .map_err(|e| e.to_string())
    });
    host.as_ref()
        .map_err(|message| LoadError::Engine(message.clone()))
}

/// Where compiled and pulled modules are kept: `$WASMESH_CACHE_DIR`, else
/// `$TMPDIR/wasmesh-module-cache`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("WASMESH_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("wasmesh-module-cache"))
}

/// Loads every chain of a configuration, sharing unchanged plugins with `previous`.
pub async fn load_chains(
    chains: &[FilterChain],
    sources: &Sources,
    previous: &HashMap<String, Arc<Chain>>,
    mode: LoadMode,
) -> Result<HashMap<String, Arc<Chain>>, ChainError> {
    let mut loaded = HashMap::new();
    for chain in chains {
        let mut entries = Vec::with_capacity(chain.plugins.len());
        for plugin in &chain.plugins {
            entries.push(load_entry(&chain.name, plugin, sources, previous, mode).await?);
        }
        let plugins = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Loaded(l) => Some(l.plugin.clone()),
                Entry::Unavailable { .. } => None,
            })
            .collect();
        let blocked = entries.iter().find_map(|e| match e {
            Entry::Unavailable { config, reason }
                if config.failure_policy == config::FailurePolicy::FailClosed =>
            {
                Some(format!("plugin \"{}\" unavailable: {reason}", config.name))
            }
            _ => None,
        });
        loaded.insert(
            chain.name.clone(),
            Arc::new(Chain {
                name: chain.name.clone(),
                entries,
                plugins,
                blocked,
            }),
        );
    }
    Ok(loaded)
}

/// The entry of the running snapshot built from exactly this definition, if any.
fn previous_entry<'a>(
    previous: &'a HashMap<String, Arc<Chain>>,
    plugin: &config::Plugin,
) -> Option<&'a Entry> {
    previous
        .values()
        .flat_map(|c| c.entries.iter())
        .find(|e| e.config() == plugin)
}

async fn load_entry(
    chain: &str,
    plugin: &config::Plugin,
    sources: &Sources,
    previous: &HashMap<String, Arc<Chain>>,
    mode: LoadMode,
) -> Result<Entry, ChainError> {
    let before = previous_entry(previous, plugin);
    let module = match sources.fetch(plugin).await {
        Ok(module) => module,
        Err(source) => {
            // An unchanged plugin keeps running as it was when its registry cannot be reached
            // (a followed tag, or `always`): a registry outage must not block unrelated reloads.
            match (mode, before) {
                (LoadMode::Reload, Some(Entry::Loaded(l))) => {
                    tracing::warn!(chain, plugin = %plugin.name, error = %source,
                        "cannot fetch the module again; keeping the running one");
                    return Ok(Entry::Loaded(l.clone()));
                }
                (LoadMode::Reload, Some(Entry::Unavailable { .. })) | (LoadMode::Startup, _) => {
                    return Ok(unavailable(chain, plugin, source));
                }
                (LoadMode::Reload, None) => {
                    return Err(ChainError::Fetch {
                        chain: chain.to_string(),
                        plugin: plugin.name.clone(),
                        source,
                    });
                }
            }
        }
    };
    if let Some(Entry::Loaded(l)) = before
        && l.sha256 == module.sha256
    {
        return Ok(Entry::Loaded(l.clone()));
    }
    instantiate(chain, plugin, module).await.map(Entry::Loaded)
}

fn unavailable(chain: &str, plugin: &config::Plugin, error: SourceError) -> Entry {
    metrics::counter!("wasmesh_filter_fetch_failures_total", "plugin" => plugin.name.clone())
        .increment(1);
    tracing::error!(chain, plugin = %plugin.name, error = %error, policy = ?plugin.failure_policy,
        "cannot fetch the plugin's module; applying its failure policy and retrying");
    Entry::Unavailable {
        config: plugin.clone(),
        reason: error.to_string(),
    }
}

/// Compiles (or takes from the cache) and instantiates a plugin's replicas, off the async
/// threads: it runs the filter's VM start and configure and may take milliseconds.
async fn instantiate(
    chain: &str,
    plugin: &config::Plugin,
    module: Module,
) -> Result<Loaded, ChainError> {
    let load_err = |source| ChainError::Load {
        chain: chain.to_string(),
        source,
    };
    let host = host().map_err(load_err)?;
    let cfg = plugin_config(plugin);
    let wasm = module.wasm;
    let size = wasm.len();
    let running = tokio::task::spawn_blocking(move || host.load_plugin(cfg, &wasm))
        .await
        .map_err(|e| load_err(LoadError::Engine(format!("loading task failed: {e}"))))?
        .map_err(load_err)?;
    Ok(Loaded {
        config: plugin.clone(),
        plugin: running,
        sha256: module.sha256,
        manifest_digest: module.manifest_digest,
        size,
    })
}

fn plugin_config(p: &config::Plugin) -> PluginConfig {
    let plugin_config = match &p.config {
        None => Vec::new(),
        Some(serde_json::Value::String(s)) => s.as_bytes().to_vec(),
        Some(other) => serde_json::to_vec(other).unwrap_or_default(),
    };
    let replicas = crate::workers::replicas();
    PluginConfig {
        name: p.name.clone(),
        root_id: p.root_id.clone(),
        vm_id: p.vm_id.clone(),
        vm_config: Vec::new(),
        plugin_config,
        failure_policy: match p.failure_policy {
            config::FailurePolicy::FailOpen => FailurePolicy::FailOpen,
            config::FailurePolicy::FailClosed => FailurePolicy::FailClosed,
        },
        deadline: p.deadline,
        memory_limit: p.memory_limit,
        replicas,
    }
}
