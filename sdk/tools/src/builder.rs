//! `wasmesh filter build`: builds a filter project with its language's tool and checks the
//! result on wasmesh's host.
//!
//! | language | runs | `.wasm` |
//! |---|---|---|
//! | Rust | `cargo build --release --target wasm32-wasip1` | the package's cdylib, where cargo put it |
//! | AssemblyScript | `npm install` (first time), `npm run build` | `build/filter.wasm` |
//! | C / Zig | `sh build.sh` | `build/filter.wasm` |

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::check::{Checked, check};
use crate::toolchain::{self, Progress};
use crate::{Language, ToolError, io_error};

/// Where AssemblyScript and C projects put their module.
pub const OUTPUT: &str = "build/filter.wasm";

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub progress: Progress,
    /// Rust: cargo's target directory (default: cargo's choice, `CARGO_TARGET_DIR` included).
    pub target_dir: Option<PathBuf>,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions {
            progress: Progress::quiet(),
            target_dir: None,
        }
    }
}

/// A built and checked filter.
#[derive(Debug, Clone)]
pub struct Built {
    /// The project's name (its package name, or its directory's).
    pub name: String,
    pub language: Language,
    pub elapsed: Duration,
    pub checked: Checked,
}

impl Built {
    /// Where the `.wasm` is.
    pub fn wasm(&self) -> &Path {
        &self.checked.path
    }
}

/// Builds the project in `dir` (see the module docs).
pub fn build(dir: &Path, options: &BuildOptions) -> Result<Built, ToolError> {
    let dir = std::path::absolute(dir).map_err(|e| io_error(dir, e))?;
    let language = Language::detect(&dir)?;
    let started = Instant::now();
    let (name, wasm) = match language {
        Language::Rust => build_rust(&dir, options)?,
        Language::Assemblyscript => build_assemblyscript(&dir, &options.progress)?,
        Language::C => build_c(&dir, &options.progress)?,
    };
    let elapsed = started.elapsed();
    let checked = check(&wasm)?;
    Ok(Built {
        name,
        language,
        elapsed,
        checked,
    })
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "filter".into())
}

/// Removes a previous build's output, so a build that writes nothing is not mistaken for one
/// that succeeded.
fn clear_output(dir: &Path) -> Result<PathBuf, ToolError> {
    let wasm = dir.join(OUTPUT);
    match std::fs::remove_file(&wasm) {
        Ok(()) => Ok(wasm),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(wasm),
        Err(e) => Err(io_error(&wasm, e)),
    }
}

fn expect_output(wasm: PathBuf, what: &str) -> Result<PathBuf, ToolError> {
    if wasm.is_file() {
        Ok(wasm)
    } else {
        Err(ToolError::Project(format!(
            "{what} succeeded but wrote no {}",
            wasm.display()
        )))
    }
}

fn build_rust(dir: &Path, options: &BuildOptions) -> Result<(String, PathBuf), ToolError> {
    toolchain::check_wasm_target()?;
    let manifest = dir.join("Cargo.toml");
    let mut cmd = Command::new(toolchain::cargo());
    cmd.current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest);
    if let Some(target_dir) = &options.target_dir {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let ran = toolchain::run(&mut cmd, "cargo", &options.progress)?;
    // The package's cdylib, as cargo reports it: honours CARGO_TARGET_DIR, workspaces and
    // renamed libraries alike.
    let manifest = manifest.canonicalize().unwrap_or(manifest);
    let mut found = None;
    for line in &ran.stdout {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let ours = message["manifest_path"]
            .as_str()
            .and_then(|m| Path::new(m).canonicalize().ok())
            .is_some_and(|m| m == manifest);
        let wasm = message["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let (true, Some(wasm)) = (ours, wasm) {
            let name = message["target"]["name"].as_str().map(String::from);
            found = Some((name.unwrap_or_else(|| dir_name(dir)), PathBuf::from(wasm)));
        }
    }
    found.ok_or_else(|| {
        ToolError::Project(format!(
            "cargo built no .wasm for {}: does it have `[lib] crate-type = [\"cdylib\"]`?",
            manifest.display()
        ))
    })
}

fn package_name(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|p| p["name"].as_str().map(String::from))
        .unwrap_or_else(|| dir_name(dir))
}

fn build_assemblyscript(dir: &Path, progress: &Progress) -> Result<(String, PathBuf), ToolError> {
    let npm = toolchain::find_npm()?;
    if !dir.join("node_modules").is_dir() {
        let mut install = Command::new(&npm);
        install
            .current_dir(dir)
            .args(["install", "--no-audit", "--no-fund"]);
        toolchain::run(&mut install, "npm install", progress)?;
    }
    let wasm = clear_output(dir)?;
    let mut cmd = Command::new(&npm);
    cmd.current_dir(dir).args(["run", "build"]);
    toolchain::run(&mut cmd, "npm run build", progress)?;
    Ok((package_name(dir), expect_output(wasm, "npm run build")?))
}

fn build_c(dir: &Path, progress: &Progress) -> Result<(String, PathBuf), ToolError> {
    // Fail early and clearly without zig (build.sh would say so too, less visibly).
    toolchain::find_zig()?;
    let wasm = clear_output(dir)?;
    let mut cmd = Command::new("sh");
    cmd.current_dir(dir).arg("build.sh");
    toolchain::run(&mut cmd, "build.sh", progress)?;
    Ok((dir_name(dir), expect_output(wasm, "build.sh")?))
}
