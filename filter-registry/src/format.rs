//! The Wasm-in-OCI formats found in the wild, told apart by media type (never by layer count
//! alone), and the extraction of the module from each:
//!
//! | format | how it is recognised | the module |
//! |---|---|---|
//! | [`ArtifactFormat::Cncf`] | an `application/wasm` layer (config `application/vnd.wasm.config.v0+json`, or another config as `oras push f.wasm:application/wasm` makes) | the layer, raw |
//! | [`ArtifactFormat::SoloOci`] | a layer `application/vnd.module.wasm.content.layer.v1+wasm` (`wasme`, WebAssembly Hub) | the layer, raw |
//! | [`ArtifactFormat::WasmToOci`] | a layer `application/vnd.wasm.content.layer.v1+wasm` (wasm-to-oci, krustlet) | the layer, raw |
//! | [`ArtifactFormat::IstioDockerCompat`] | Docker schema 2 manifest whose last layer is `…rootfs.diff.tar.gzip` | `plugin.wasm` in the last layer's tar+gzip |
//! | [`ArtifactFormat::IstioOciCompat`] | last layer `application/vnd.oci.image.layer.v1.tar+gzip` | `plugin.wasm` in the last layer's tar+gzip |
//!
//! An image index (OCI index or Docker manifest list) is followed to its first manifest whose
//! platform is `wasm`/`wasip1`, else to its first manifest.

use std::fmt;
use std::io::Read;

use serde::Deserialize;

use crate::artifact::{ArtifactError, Descriptor, ImageManifest, WASM_CONFIG_MEDIA_TYPE};

pub const CNCF_LAYER: &str = "application/wasm";
pub const SOLO_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
pub const WASM_TO_OCI_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_TAR_GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What a client accepts when it asks for a manifest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// The file Istio's compat images carry the module in.
pub const PLUGIN_FILE: &str = "plugin.wasm";
/// Room allowed, besides the module itself, for the other entries of a compat layer's tar
/// (headers, `runtime-config.json`) while it is decompressed.
const COMPAT_SLACK: u64 = 16 * 1024 * 1024;

/// How a pulled module was packaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArtifactFormat {
    Cncf,
    IstioDockerCompat,
    IstioOciCompat,
    SoloOci,
    WasmToOci,
}

impl ArtifactFormat {
    pub fn name(self) -> &'static str {
        match self {
            ArtifactFormat::Cncf => "cncf",
            ArtifactFormat::IstioDockerCompat => "istio-compat-docker",
            ArtifactFormat::IstioOciCompat => "istio-compat-oci",
            ArtifactFormat::SoloOci => "solo-oci",
            ArtifactFormat::WasmToOci => "wasm-to-oci",
        }
    }

    /// Whether the module sits inside a tar+gzip layer rather than being the layer itself.
    pub fn is_compressed(self) -> bool {
        matches!(
            self,
            ArtifactFormat::IstioDockerCompat | ArtifactFormat::IstioOciCompat
        )
    }
}

impl fmt::Display for ArtifactFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An image index entry: a descriptor with its platform.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

/// A manifest as pulled: an image manifest, or an index to follow.
pub enum Parsed {
    Image(Box<ImageManifest>),
    Index(Vec<IndexEntry>),
}

/// Parses manifest bytes; `content_type` is the registry's `Content-Type` for them (used when
/// the manifest itself carries no `mediaType`).
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, ArtifactError> {
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| ArtifactError::ManifestInvalid(e.to_string()))?;
    let media_type = probe
        .media_type
        .as_deref()
        .or(content_type)
        .map(|m| m.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let is_index = media_type == OCI_INDEX
        || media_type == DOCKER_MANIFEST_LIST
        || (probe.config.is_none() && probe.manifests.is_some());
    if is_index {
        return Ok(Parsed::Index(probe.manifests.unwrap_or_default()));
    }
    let mut m: ImageManifest =
        serde_json::from_slice(bytes).map_err(|e| ArtifactError::ManifestInvalid(e.to_string()))?;
    if m.media_type.is_none() && !media_type.is_empty() {
        m.media_type = Some(media_type);
    }
    Ok(Parsed::Image(Box::new(m)))
}

/// The index entry to follow: the first whose platform is `wasm`/`wasip1`, else the first.
pub fn choose_index_entry(entries: &[IndexEntry]) -> Result<&IndexEntry, ArtifactError> {
    entries
        .iter()
        .find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.architecture == "wasm" && p.os == "wasip1")
        })
        .or_else(|| entries.first())
        .ok_or(ArtifactError::EmptyIndex)
}

fn only_layer<'a>(
    m: &'a ImageManifest,
    media_type: &str,
) -> Result<Option<&'a Descriptor>, ArtifactError> {
    let mut found = m.layers.iter().filter(|l| l.media_type == media_type);
    match (found.next(), found.next()) {
        (None, _) => Ok(None),
        (Some(l), None) => Ok(Some(l)),
        (Some(_), Some(_)) => Err(ArtifactError::Ambiguous(media_type.to_string())),
    }
}

/// Recognises an image manifest's format and returns the layer holding the module.
pub fn select_layer(m: &ImageManifest) -> Result<(ArtifactFormat, Descriptor), ArtifactError> {
    if let Some(l) = only_layer(m, CNCF_LAYER)? {
        // The CNCF layout says a consumer seeing more than one layer should reject it.
        if m.config.media_type == WASM_CONFIG_MEDIA_TYPE && m.layers.len() != 1 {
            return Err(ArtifactError::Ambiguous(format!(
                "{} layers under a {WASM_CONFIG_MEDIA_TYPE} config (the CNCF layout has one)",
                m.layers.len()
            )));
        }
        return Ok((ArtifactFormat::Cncf, l.clone()));
    }
    if let Some(l) = only_layer(m, SOLO_LAYER)? {
        return Ok((ArtifactFormat::SoloOci, l.clone()));
    }
    if let Some(l) = only_layer(m, WASM_TO_OCI_LAYER)? {
        return Ok((ArtifactFormat::WasmToOci, l.clone()));
    }
    if let Some(last) = m.layers.last() {
        if m.media_type.as_deref() == Some(DOCKER_MANIFEST) && last.media_type == DOCKER_LAYER {
            return Ok((ArtifactFormat::IstioDockerCompat, last.clone()));
        }
        if last.media_type == OCI_TAR_GZIP_LAYER {
            return Ok((ArtifactFormat::IstioOciCompat, last.clone()));
        }
    }
    Err(ArtifactError::UnsupportedFormat {
        manifest: m.media_type.clone().unwrap_or_default(),
        config: m.config.media_type.clone(),
        layers: m.layers.iter().map(|l| l.media_type.clone()).collect(),
    })
}

/// Counts what a reader yields and fails once it passes `limit`, so a small gzip stream cannot
/// expand without bound.
struct Bounded<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(std::io::Error::other(format!(
                "decompressed layer exceeds {} bytes",
                self.limit
            )));
        }
        Ok(n)
    }
}

/// Takes `plugin.wasm` (matched by base name, a regular file) out of a tar+gzip layer, reading
/// at most `max` bytes of module and `max` plus some slack of decompressed tar in total.
pub fn extract_plugin_wasm(gz: &[u8], max: u64) -> Result<Vec<u8>, ArtifactError> {
    let bad = |e: std::io::Error| ArtifactError::Compat(e.to_string());
    let limit = max.saturating_add(COMPAT_SLACK);
    let decoder = Bounded {
        inner: flate2::read::GzDecoder::new(gz),
        read: 0,
        limit,
    };
    let mut archive = tar::Archive::new(decoder);
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let is_plugin = entry
            .path()
            .map_err(bad)?
            .file_name()
            .is_some_and(|n| n == PLUGIN_FILE);
        if !is_plugin || !entry.header().entry_type().is_file() {
            continue;
        }
        let size = entry.header().size().map_err(bad)?;
        if size > max {
            return Err(ArtifactError::TooLarge { size, max });
        }
        let mut wasm = Vec::with_capacity(size as usize);
        entry.take(size).read_to_end(&mut wasm).map_err(bad)?;
        if wasm.len() as u64 != size {
            return Err(ArtifactError::Compat(format!(
                "{PLUGIN_FILE} is truncated: {} of {size} bytes",
                wasm.len()
            )));
        }
        return Ok(wasm);
    }
    Err(ArtifactError::NoPluginWasm)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn desc(media_type: &str) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 1,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    fn manifest(media_type: Option<&str>, config: &str, layers: &[&str]) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: media_type.map(str::to_string),
            artifact_type: None,
            config: desc(config),
            layers: layers.iter().map(|l| desc(l)).collect(),
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn formats_are_told_apart_by_media_type() {
        let oci = Some("application/vnd.oci.image.manifest.v1+json");
        // (manifest media type, config media type, layer media types, format, module layer)
        type Case<'a> = (
            Option<&'a str>,
            &'a str,
            &'a [&'a str],
            ArtifactFormat,
            usize,
        );
        let cases: &[Case] = &[
            (
                oci,
                WASM_CONFIG_MEDIA_TYPE,
                &[CNCF_LAYER],
                ArtifactFormat::Cncf,
                0,
            ),
            (
                oci,
                "application/vnd.unknown.config.v1+json",
                &[CNCF_LAYER],
                ArtifactFormat::Cncf,
                0,
            ),
            (
                oci,
                "application/vnd.module.wasm.config.v1+json",
                &[
                    "application/vnd.module.wasm.runtime.config.v1+json",
                    SOLO_LAYER,
                ],
                ArtifactFormat::SoloOci,
                1,
            ),
            // One layer only: the solo format is recognised by media type, not by count.
            (oci, "x", &[SOLO_LAYER], ArtifactFormat::SoloOci, 0),
            (
                oci,
                "application/vnd.wasm.config.v1+json",
                &[WASM_TO_OCI_LAYER],
                ArtifactFormat::WasmToOci,
                0,
            ),
            (
                Some(DOCKER_MANIFEST),
                "application/vnd.docker.container.image.v1+json",
                &[DOCKER_LAYER, DOCKER_LAYER, DOCKER_LAYER],
                ArtifactFormat::IstioDockerCompat,
                2,
            ),
            (
                oci,
                "application/vnd.oci.image.config.v1+json",
                &[OCI_TAR_GZIP_LAYER, OCI_TAR_GZIP_LAYER],
                ArtifactFormat::IstioOciCompat,
                1,
            ),
        ];
        for (mt, config, layers, want, index) in cases {
            let m = manifest(*mt, config, layers);
            let (format, layer) = select_layer(&m).expect("recognised");
            assert_eq!(format, *want, "{layers:?}");
            assert_eq!(layer, m.layers[*index]);
        }
        for (mt, config, layers) in [
            (oci, "application/vnd.oci.image.config.v1+json", vec![]),
            (oci, "x", vec!["application/json"]),
            (oci, WASM_CONFIG_MEDIA_TYPE, vec![CNCF_LAYER, CNCF_LAYER]),
            (oci, WASM_CONFIG_MEDIA_TYPE, vec![CNCF_LAYER, "text/plain"]),
            // A Docker layer type under an OCI manifest is neither compat variant.
            (oci, "x", vec![DOCKER_LAYER]),
        ] {
            let m = manifest(mt, config, &layers);
            assert!(select_layer(&m).is_err(), "{layers:?}");
        }
    }

    #[test]
    fn index_entry_choice() {
        let e = |arch: &str, os: &str| IndexEntry {
            media_type: "m".into(),
            digest: format!("{arch}/{os}"),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
            }),
        };
        let entries = vec![
            e("amd64", "linux"),
            e("wasm", "wasip1"),
            e("wasm", "wasip1"),
        ];
        assert_eq!(
            choose_index_entry(&entries).expect("entry").digest,
            "wasm/wasip1"
        );
        let entries = vec![e("amd64", "linux"), e("arm64", "linux")];
        assert_eq!(
            choose_index_entry(&entries).expect("entry").digest,
            "amd64/linux"
        );
        assert!(choose_index_entry(&[]).is_err());
    }

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).expect("tar");
        }
        builder.into_inner().expect("tar").finish().expect("gzip")
    }

    #[test]
    fn compat_layer_extraction() {
        let wasm = b"\0asm\x01\0\0\0rest";
        let gz = tar_gz(&[("runtime-config.json", b"{}"), ("./plugin.wasm", wasm)]);
        assert_eq!(extract_plugin_wasm(&gz, 1024).expect("found"), wasm);
        let gz = tar_gz(&[("other.wasm", wasm)]);
        assert!(matches!(
            extract_plugin_wasm(&gz, 1024),
            Err(ArtifactError::NoPluginWasm)
        ));
        let gz = tar_gz(&[("plugin.wasm", wasm)]);
        assert!(matches!(
            extract_plugin_wasm(&gz, 4),
            Err(ArtifactError::TooLarge { .. })
        ));
        assert!(extract_plugin_wasm(b"not gzip", 1024).is_err());
        // A gzip bomb: far more zeros than the bound, none of them plugin.wasm.
        let zeros = vec![0u8; 40 * 1024 * 1024];
        let gz = tar_gz(&[("big", &zeros), ("plugin.wasm", wasm)]);
        let err = extract_plugin_wasm(&gz, 1024).expect_err("bounded");
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
