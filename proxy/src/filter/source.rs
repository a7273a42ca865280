//! Where a plugin's module comes from: a file (`file://PATH`) or an OCI registry
//! (`oci://HOST/REPO:TAG`, `oci://HOST/REPO@sha256:…`), pulled with every digest verified.

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use wasmesh_registry::client::ImageRef;

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
    #[error("{reference} has manifest digest {actual}, but the plugin pins {expected}")]
    Pin {
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("{0:?} is not a plugin source: use file://PATH or oci://HOST/REPO:TAG")]
    Unsupported(String),
}

/// Fetches modules for one configuration's `registry` settings.
pub struct Sources {
    settings: config::Registry,
    token: Option<String>,
}

impl Sources {
    pub fn new(settings: &config::Registry) -> Sources {
        Sources {
            settings: settings.clone(),
            token: std::env::var("WASMESH_REGISTRY_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        }
    }

    /// Whether these sources were built from `settings` (so they can be kept across a reload).
    pub fn matches(&self, settings: &config::Registry) -> bool {
        self.settings == *settings
    }

    /// Reads or pulls a plugin's module.
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
        let (digest, wasm) = self
            .bounded(
                reference,
                wasmesh_registry::client::pull(reference, self.token.as_deref()),
            )
            .await?;
        let digest = digest.to_string();
        if let Some(pin) = &plugin.sha256 {
            let expected = if pin.starts_with("sha256:") {
                pin.clone()
            } else {
                format!("sha256:{pin}")
            };
            if expected != digest {
                return Err(SourceError::Pin {
                    reference: reference.to_string(),
                    expected,
                    actual: digest,
                });
            }
        }
        Ok(Module::new(wasm, Some(digest)))
    }

    /// Asks the registry which manifest digest a followed tag names now.
    pub async fn resolve(&self, source: &str) -> Result<String, SourceError> {
        let reference = source
            .strip_prefix("oci://")
            .ok_or_else(|| SourceError::Unsupported(source.to_string()))?;
        let digest = self
            .bounded(
                reference,
                wasmesh_registry::client::resolve(reference, self.token.as_deref()),
            )
            .await?;
        Ok(digest.to_string())
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

/// Whether `source` names a registry tag (something that can move).
pub fn is_tag(source: &str) -> bool {
    source
        .strip_prefix("oci://")
        .and_then(|r| ImageRef::parse(r).ok())
        .is_some_and(|r| r.digest.is_none())
}
