//! Functions behind the `wasmesh` registry subcommands (argument parsing lives in the binary).

use std::collections::BTreeMap;
use std::path::Path;

use crate::artifact;
use crate::client::{self, ClientError};
use crate::store::Digest;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// `wasmesh push FILE REFERENCE`: pushes a module, titling it with the file name, and prints
/// `pushed <reference> <digest> (<size> bytes)`.
pub async fn push(file: &Path, reference: &str, token: Option<&str>) -> Result<Digest, CliError> {
    let wasm = std::fs::read(file).map_err(|source| CliError::Read {
        path: file.display().to_string(),
        source,
    })?;
    let mut ann = BTreeMap::new();
    if let Some(name) = file.file_name().and_then(|n| n.to_str()) {
        ann.insert(artifact::ANNOTATION_TITLE.to_string(), name.to_string());
    }
    let d = client::push(reference, &wasm, &ann, token).await?;
    println!("pushed {reference} {d} ({} bytes)", wasm.len());
    Ok(d)
}

/// `wasmesh pull REFERENCE OUT`: pulls and verifies a module, writes it atomically to `out`.
pub async fn pull(reference: &str, out: &Path, token: Option<&str>) -> Result<Digest, CliError> {
    let (d, wasm) = client::pull(reference, token).await?;
    let werr = |source| CliError::Write {
        path: out.display().to_string(),
        source,
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, &wasm).map_err(werr)?;
    if let Err(e) = std::fs::rename(&tmp, out) {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e));
    }
    println!(
        "pulled {reference} {d} ({} bytes) -> {}",
        wasm.len(),
        out.display()
    );
    Ok(d)
}

/// `wasmesh ls HOST/REPO`: prints one tag per line.
pub async fn ls(host_repo: &str, token: Option<&str>) -> Result<Vec<String>, CliError> {
    let tags = client::list_tags(host_repo, token).await?;
    for t in &tags {
        println!("{t}");
    }
    Ok(tags)
}

/// `wasmesh inspect REFERENCE`: prints the digest and the manifest (pretty JSON when it parses).
pub async fn inspect(reference: &str, token: Option<&str>) -> Result<String, CliError> {
    let (d, bytes) = client::fetch_manifest(reference, token).await?;
    let text = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    };
    println!("digest: {d}\n{text}");
    Ok(text)
}
