//! The CNCF Wasm OCI artifact layout: an OCI image manifest whose config has media type
//! `application/vnd.wasm.config.v0+json` and whose single layer is `application/wasm`. This is
//! what the client pushes; [`crate::format`] reads the other layouts found in the wild.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::Digest;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
pub const ANNOTATION_VERSION: &str = "org.opencontainers.image.version";
pub const ANNOTATION_ABI_VERSION: &str = "dev.wasmesh.abi_version";
/// Default cap on a pulled module's size.
pub const DEFAULT_MAX_WASM_SIZE: u64 = 64 * 1024 * 1024;
const WASM_MAGIC: &[u8; 4] = b"\0asm";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("not a Wasm module: missing the \\0asm magic number")]
    NotWasm,
    #[error("Wasm module is {size} bytes, over the {max}-byte cap")]
    TooLarge { size: u64, max: u64 },
    #[error("manifest is not valid JSON for an OCI image manifest: {0}")]
    ManifestInvalid(String),
    #[error("manifest has no layer of media type application/wasm")]
    NoWasmLayer,
    #[error("image index lists no manifest")]
    EmptyIndex,
    #[error("ambiguous artifact: {0}")]
    Ambiguous(String),
    #[error(
        "not a Wasm artifact format this client knows (manifest {manifest:?}, config {config:?}, layers {layers:?}): expected an application/wasm, application/vnd.module.wasm.content.layer.v1+wasm or application/vnd.wasm.content.layer.v1+wasm layer, or a tar+gzip last layer holding plugin.wasm"
    )]
    UnsupportedFormat {
        manifest: String,
        config: String,
        layers: Vec<String>,
    },
    #[error("compat layer (tar+gzip) unreadable: {0}")]
    Compat(String),
    #[error("compat layer (tar+gzip) holds no plugin.wasm")]
    NoPluginWasm,
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest (the fields this crate uses; unknown fields are ignored on parse).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Checks the Wasm magic number and the size cap.
pub fn check_wasm(bytes: &[u8], max: u64) -> Result<(), ArtifactError> {
    let size = bytes.len() as u64;
    if size > max {
        return Err(ArtifactError::TooLarge { size, max });
    }
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(ArtifactError::NotWasm);
    }
    Ok(())
}

/// The pieces of a Wasm artifact ready to push: the config blob, the layer (the module) and the
/// manifest bytes, with their digests.
#[derive(Clone, Debug)]
pub struct WasmArtifact {
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layer_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
}

/// Builds the CNCF layout for `wasm`. `annotations` go on the manifest; a title annotation
/// is also put on the layer when given.
pub fn build(
    wasm: &[u8],
    annotations: &BTreeMap<String, String>,
) -> Result<WasmArtifact, ArtifactError> {
    check_wasm(wasm, u64::MAX)?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "wasm",
        "os": "wasip1",
        "layerDigests": [Digest::sha256_of(wasm).to_string()],
    }))
    .map_err(|e| ArtifactError::ManifestInvalid(e.to_string()))?;
    let config_digest = Digest::sha256_of(&config);
    let layer_digest = Digest::sha256_of(wasm);
    let mut layer_ann = BTreeMap::new();
    if let Some(t) = annotations.get(ANNOTATION_TITLE) {
        layer_ann.insert(ANNOTATION_TITLE.to_string(), t.clone());
    }
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_string()),
        artifact_type: Some(WASM_CONFIG_MEDIA_TYPE.to_string()),
        config: Descriptor {
            media_type: WASM_CONFIG_MEDIA_TYPE.to_string(),
            digest: config_digest.to_string(),
            size: config.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        },
        layers: vec![Descriptor {
            media_type: WASM_LAYER_MEDIA_TYPE.to_string(),
            digest: layer_digest.to_string(),
            size: wasm.len() as u64,
            artifact_type: None,
            annotations: layer_ann,
        }],
        subject: None,
        annotations: annotations.clone(),
    };
    let manifest =
        serde_json::to_vec(&manifest).map_err(|e| ArtifactError::ManifestInvalid(e.to_string()))?;
    let manifest_digest = Digest::sha256_of(&manifest);
    Ok(WasmArtifact {
        config,
        config_digest,
        layer_digest,
        manifest,
        manifest_digest,
    })
}

/// Parses a manifest and returns the descriptor of its `application/wasm` layer.
pub fn wasm_layer(manifest: &[u8]) -> Result<(ImageManifest, Descriptor), ArtifactError> {
    let m: ImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| ArtifactError::ManifestInvalid(e.to_string()))?;
    let layer = m
        .layers
        .iter()
        .find(|l| l.media_type == WASM_LAYER_MEDIA_TYPE)
        .cloned()
        .ok_or(ArtifactError::NoWasmLayer)?;
    Ok((m, layer))
}
