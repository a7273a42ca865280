//! Checking a built filter on wasmesh's host without running it: it compiles, declares a
//! proxy-wasm ABI version, and every import is one the host provides, with the right type.

use std::path::{Path, PathBuf};

use wasmesh_host::{AbiVersion, Host, HostConfig};

use crate::{ToolError, io_error};

/// A `.wasm` that would load on wasmesh.
#[derive(Debug, Clone)]
pub struct Checked {
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
    pub abi: AbiVersion,
    /// Every import (`module.name`), all provided by the host.
    pub imports: Vec<String>,
    /// Whether it exports an allocator the host can hand it data through
    /// (`proxy_on_memory_allocate`, or the legacy `malloc`).
    pub allocator: bool,
}

/// `0.2.1` for [`AbiVersion::V0_2_1`], and so on.
pub fn abi_name(abi: AbiVersion) -> &'static str {
    match abi {
        AbiVersion::V0_1_0 => "0.1.0",
        AbiVersion::V0_2_0 => "0.2.0",
        AbiVersion::V0_2_1 => "0.2.1",
    }
}

/// Checks the module at `path` (see the module docs).
pub fn check(path: &Path) -> Result<Checked, ToolError> {
    let wasm = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "filter".into());
    let failed = |source| ToolError::Check {
        path: path.to_path_buf(),
        source,
    };
    // One instance at most: the check never instantiates, and a small pool reserves little.
    let host = Host::new(HostConfig {
        cache_dir: None,
        max_instances: Some(1),
    })
    .map_err(failed)?;
    let found = host.check_module(&name, &wasm).map_err(failed)?;
    Ok(Checked {
        path: path.to_path_buf(),
        size: wasm.len() as u64,
        abi: found.abi,
        allocator: found
            .exports
            .iter()
            .any(|e| e == "proxy_on_memory_allocate" || e == "malloc"),
        imports: found.imports,
    })
}

/// `296.1 KiB`, `3.0 MiB`, `812 bytes`.
pub fn human_size(bytes: u64) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else if bytes >= 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, wat: &str) -> PathBuf {
        let path = dir.join("m.wasm");
        std::fs::write(&path, wat.as_bytes()).expect("write");
        path
    }

    #[test]
    fn refuses_what_would_not_load() {
        let dir = tempfile::tempdir().expect("dir");
        let err = check(&write(dir.path(), "not wasm")).expect_err("garbage");
        assert!(err.to_string().contains("not a valid Wasm module"), "{err}");

        // The binary encoding of `(module)`: compiles, but declares no ABI version.
        let empty = dir.path().join("empty.wasm");
        std::fs::write(&empty, b"\0asm\x01\0\0\0").expect("write");
        let err = check(&empty).expect_err("no marker");
        assert!(
            err.to_string().contains("no proxy-wasm ABI marker"),
            "{err}"
        );

        let err = check(&dir.path().join("missing.wasm")).expect_err("no file");
        assert!(err.to_string().contains("missing.wasm"), "{err}");
    }

    #[test]
    fn names_imports_the_host_lacks_or_types_it_does_not_match() {
        let dir = tempfile::tempdir().expect("dir");
        let module = |imports: &str| {
            let path = dir.path().join("m.wasm");
            let text = format!(
                "(module {imports} (memory (export \"memory\") 1) (func (export \"proxy_abi_version_0_2_1\")))"
            );
            std::fs::write(&path, wat::parse_str(text).expect("wat")).expect("write");
            path
        };
        let err = check(&module(
            r#"(import "env" "proxy_teleport" (func (param i32) (result i32)))"#,
        ))
        .expect_err("unknown import");
        assert!(err.to_string().contains("env.proxy_teleport"), "{err}");

        let err = check(&module(r#"(import "env" "proxy_log" (func (param i32)))"#))
            .expect_err("wrong type");
        assert!(err.to_string().contains("proxy_log"), "{err}");

        let ok = check(&module(
            r#"(import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))"#,
        ))
        .expect("loads");
        assert_eq!(abi_name(ok.abi), "0.2.1");
        assert_eq!(ok.imports, ["env.proxy_log"]);
        assert!(!ok.allocator, "exports no allocator");
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_size(812), "812 bytes");
        assert_eq!(human_size(303_206), "296.1 KiB");
        assert_eq!(human_size(3 * 1024 * 1024), "3.0 MiB");
    }
}
