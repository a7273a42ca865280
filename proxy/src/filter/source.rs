//! Where a plugin's module comes from: a file (`file://PATH`) or an OCI registry
//! (`oci://HOST/REPO:TAG`, `oci://HOST/REPO@sha256:…`), pulled with every digest verified.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use wasmesh_registry::cache::{ModuleCache, PullPolicy};
use wasmesh_registry::client::{Client, ClientConfig, Credentials, ImageRef};
use wasmesh_registry::store::Digest;

use crate::config;

/// A module's bytes and what identifies them.
pub struct Module {
    pub wasm: Vec<u8>,
    /// `sha256:<hex>` of the module bytes: two loads with the same digest run the same code.
    pub sha256: String,
    /// For `oci://` sources: the digest of the manifest the module was pulled from.
    pub manifest_digest: Option<String>,
}

impl Module {
    fn new(wasm: Vec<u8>, manifest_digest: Option<String>) -> Module {
        let sha256 = format!("sha256:{:x}", Sha256::digest(&wasm));
        Module {
            wasm,
            sha256,
            manifest_digest,
        }
    }
}

/// Why a module could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pulling {reference}: {message}")]
    Pull { reference: String, message: String },
    #[error("pulling {reference}: no answer within {timeout:?}")]
    Timeout {
        reference: String,
        timeout: Duration,
    },
    #[error("registry settings: {0}")]
    Registry(String),
    #[error("{0:?} is not a plugin source: use file://PATH or oci://HOST/REPO:TAG")]
    Unsupported(String),
}

/// Fetches modules for one configuration's `registry` settings: `file://` from disk,
/// `oci://` through the registry client and the on-disk module cache (so an `if_not_present`
/// plugin starts without its registry once pulled).
pub struct Sources {
    settings: config::Registry,
    registry: Result<(Client, ModuleCache), String>,
}

impl Sources {
    pub fn new(settings: &config::Registry) -> Sources {
        Sources {
            settings: settings.clone(),
            registry: registry_client(settings),
        }
    }

    /// Whether these sources were built from `settings` (so they can be kept across a reload).
    pub fn matches(&self, settings: &config::Registry) -> bool {
        self.settings == *settings
    }

    /// Reads or pulls a plugin's module. A followed tag always asks the registry which digest
    /// it names; otherwise the plugin's pull policy decides.
    pub async fn fetch(&self, plugin: &config::Plugin) -> Result<Module, SourceError> {
        if let Some(path) = plugin.source.strip_prefix("file://") {
            let wasm = tokio::fs::read(path)
                .await
                .map_err(|source| SourceError::Read {
                    path: path.to_string(),
                    source,
                })?;
            return Ok(Module::new(wasm, None));
        }
        let Some(reference) = plugin.source.strip_prefix("oci://") else {
            return Err(SourceError::Unsupported(plugin.source.clone()));
        };
        let (client, cache) = self.registry()?;
        let image = parse(reference)?;
        let pin = match &plugin.sha256 {
            Some(pin) => {
                let digest = if pin.starts_with("sha256:") {
                    pin.clone()
                } else {
                    format!("sha256:{pin}")
                };
                Some(digest.parse::<Digest>().map_err(|e| SourceError::Pull {
                    reference: reference.to_string(),
                    message: e.to_string(),
                })?)
            }
            None => None,
        };
        let policy = if plugin.follow || plugin.pull_policy == config::PullPolicy::Always {
            PullPolicy::Always
        } else {
            PullPolicy::IfNotPresent
        };
        let fetched = self
            .bounded(reference, cache.fetch(client, &image, policy, pin.as_ref()))
            .await?;
        Ok(Module::new(
            fetched.wasm,
            Some(fetched.manifest_digest.to_string()),
        ))
    }

    /// Asks the registry which manifest digest a followed tag names now.
    pub async fn resolve(&self, source: &str) -> Result<String, SourceError> {
        let reference = source
            .strip_prefix("oci://")
            .ok_or_else(|| SourceError::Unsupported(source.to_string()))?;
        let (client, cache) = self.registry()?;
        let image = parse(reference)?;
        let digest = self
            .bounded(reference, cache.resolve_tag(client, &image))
            .await?;
        Ok(digest.to_string())
    }

    fn registry(&self) -> Result<(&Client, &ModuleCache), SourceError> {
        match &self.registry {
            Ok((client, cache)) => Ok((client, cache)),
            Err(message) => Err(SourceError::Registry(message.clone())),
        }
    }

    async fn bounded<T, E: std::fmt::Display>(
        &self,
        reference: &str,
        pull: impl Future<Output = Result<T, E>>,
    ) -> Result<T, SourceError> {
        match tokio::time::timeout(self.settings.pull_timeout, pull).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(SourceError::Pull {
                reference: reference.to_string(),
                message: err.to_string(),
            }),
            Err(_) => Err(SourceError::Timeout {
                reference: reference.to_string(),
                timeout: self.settings.pull_timeout,
            }),
        }
    }
}

fn parse(reference: &str) -> Result<ImageRef, SourceError> {
    ImageRef::parse(reference).map_err(|e| SourceError::Pull {
        reference: reference.to_string(),
        message: e.to_string(),
    })
}

/// The client and cache for these settings; an error (an unreadable credentials file, say)
/// is reported when an `oci://` plugin needs them, naming the setting.
fn registry_client(settings: &config::Registry) -> Result<(Client, ModuleCache), String> {
    let credentials = Credentials::load(
        settings.auth_file.as_deref().map(Path::new),
        std::env::var("WASMESH_REGISTRY_TOKEN").ok(),
    )
    .map_err(|e| format!("registry.auth_file: {e}"))?;
    let client = Client::new(ClientConfig {
        insecure: settings.insecure.clone(),
        ca_file: settings.ca_file.as_ref().map(PathBuf::from),
        credentials,
        ..ClientConfig::default()
    })
    .map_err(|e| format!("registry: {e}"))?;
    let dir = settings
        .cache_dir
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| super::chain::cache_dir().join("oci"));
    Ok((client, ModuleCache::new(dir)))
}

/// Whether `source` names a registry tag (something that can move).
pub fn is_tag(source: &str) -> bool {
    source
        .strip_prefix("oci://")
        .and_then(|r| ImageRef::parse(r).ok())
        .is_some_and(|r| r.digest.is_none())
}
