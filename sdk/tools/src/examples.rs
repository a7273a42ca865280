//! Builds this checkout's example filters — AssemblyScript (`sdk/assemblyscript/example/`),
//! C and Zig (`sdk/c/examples/`) — with npm and zig, for the SDK's and the proxy's tests.
//! Each is built once per process, into a directory the caller names (tests use one under
//! `target/`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::toolchain::{self, Progress};
use crate::{ToolError, built_in_sdk_dir, io_error};

/// The example filters, built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Examples {
    pub assemblyscript: PathBuf,
    pub c: PathBuf,
    pub zig: PathBuf,
}

/// `<target>/sdk-examples` for the test binary running this (`<target>/<profile>/deps/…`).
pub fn test_out_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    target.join("sdk-examples")
}

/// Build results so far, by (what, where): the paths built, or the error as text.
type BuildMemo = BTreeMap<(String, PathBuf), Result<Vec<PathBuf>, String>>;

fn once(
    key: &str,
    out: &Path,
    build: impl FnOnce() -> Result<Vec<PathBuf>, String>,
) -> Result<Vec<PathBuf>, String> {
    static BUILT: Mutex<BuildMemo> = Mutex::new(BTreeMap::new());
    // Held through the build: concurrent tests wait for the one build.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let key = (key.to_string(), out.to_path_buf());
    if let Some(result) = built.get(&key) {
        return result.clone();
    }
    let result = build();
    built.insert(key, result.clone());
    result
}

/// Builds the AssemblyScript example into `out/filter_as.wasm`, installing the package's
/// pinned compiler first (`npm ci`) if `./setup.sh` has not.
pub fn assemblyscript(out: &Path) -> Result<PathBuf, ToolError> {
    assemblyscript_module("example/filter.ts", &out.join("filter_as.wasm"))
}

/// Builds the AssemblyScript SDK's API probe (`sdk/assemblyscript/test/probe.ts`, which
/// exercises the API beyond the example) into `out/probe_as.wasm`.
pub fn assemblyscript_probe(out: &Path) -> Result<PathBuf, ToolError> {
    assemblyscript_module("test/probe.ts", &out.join("probe_as.wasm"))
}

/// Compiles `entry` of the AssemblyScript SDK package with its `asconfig.json` into `wasm`.
fn assemblyscript_module(entry: &str, wasm: &Path) -> Result<PathBuf, ToolError> {
    let npm = toolchain::find_npm()?;
    let built = once(entry, wasm, || {
        let dir = built_in_sdk_dir().join("assemblyscript");
        let quiet = Progress::quiet();
        if !dir.join("node_modules/assemblyscript").is_dir() {
            let mut install = Command::new(&npm);
            install
                .current_dir(&dir)
                .args(["ci", "--no-audit", "--no-fund"]);
            toolchain::run(&mut install, "npm ci", &quiet).map_err(|e| e.to_string())?;
        }
        if let Some(parent) = wasm.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e).to_string())?;
        }
        // `npx asc` is the compiler the package pins (the same one `npm run build` runs).
        let mut cmd = Command::new("npx");
        cmd.current_dir(&dir)
            .args(["--no-install", "asc", entry, "--config", "asconfig.json"])
            .args(["--target", "release", "--outFile"])
            .arg(wasm);
        toolchain::run(&mut cmd, "asc", &quiet).map_err(|e| e.to_string())?;
        Ok(vec![wasm.to_path_buf()])
    });
    built
        .map_err(ToolError::Project)?
        .pop()
        .ok_or_else(|| ToolError::Project(format!("{entry} was not built")))
}

/// Builds the C and Zig examples into `out/filter_c.wasm` and `out/filter_zig.wasm` with
/// `sdk/c/build.sh`.
pub fn c_and_zig(out: &Path) -> Result<(PathBuf, PathBuf), ToolError> {
    toolchain::find_zig()?;
    let built = once("c", out, || {
        let script = built_in_sdk_dir().join("c").join("build.sh");
        let mut cmd = Command::new("sh");
        cmd.arg(&script).arg(out);
        toolchain::run(&mut cmd, "build.sh", &Progress::quiet()).map_err(|e| e.to_string())?;
        Ok(vec![out.join("filter_c.wasm"), out.join("filter_zig.wasm")])
    })
    .map_err(ToolError::Project)?;
    match built.as_slice() {
        [c, zig] => Ok((c.clone(), zig.clone())),
        _ => Err(ToolError::Project("no C and Zig examples built".into())),
    }
}

/// Builds all three examples into `out`.
pub fn all(out: &Path) -> Result<Examples, ToolError> {
    let assemblyscript = assemblyscript(out)?;
    let (c, zig) = c_and_zig(out)?;
    Ok(Examples {
        assemblyscript,
        c,
        zig,
    })
}
