//! [`build_wasm`]: builds a filter crate for `wasm32-wasip1` from its own tests, so a filter
//! author outside this repository can write `Harness::builder(build_wasm(dir)?)`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Why a filter could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error(
        "the wasm32-wasip1 target is not installed for {rustc}: run `rustup target add wasm32-wasip1`"
    )]
    TargetMissing { rustc: String },
    #[error("running `{command}`: {message}")]
    Run { command: String, message: String },
    #[error("{manifest} is not a package cargo knows (is it in a workspace that excludes it?)")]
    UnknownPackage { manifest: String },
    #[error(
        "{package} has no cdylib target: add `[lib] crate-type = [\"cdylib\"]` to its Cargo.toml"
    )]
    NotCdylib { package: String },
    #[error("building {package} for wasm32-wasip1 failed:\n{stderr}")]
    Build { package: String, stderr: String },
}

/// Builds the crate at `manifest_dir` (the directory holding its `Cargo.toml`; in a test,
/// `env!("CARGO_MANIFEST_DIR")`) for `wasm32-wasip1` in release mode and returns the `.wasm`.
///
/// The build runs once per crate per test process, with `cargo` (the one running the tests,
/// from `$CARGO`), into `<target dir>/wasm-harness` — never the target directory the tests
/// are built in, whose lock the running `cargo test` holds. Flags meant for the host build
/// (`RUSTFLAGS`, wrappers, `CARGO_BUILD_TARGET`) are not passed on.
pub fn build_wasm(manifest_dir: impl AsRef<Path>) -> Result<PathBuf, BuildError> {
    static BUILT: Mutex<BTreeMap<PathBuf, Result<PathBuf, BuildError>>> =
        Mutex::new(BTreeMap::new());
    let dir = manifest_dir.as_ref();
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    // Held through the build: concurrent tests wait for the one build.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(result) = built.get(&dir) {
        return result.clone();
    }
    let result = build(&dir);
    built.insert(dir, result.clone());
    result
}

fn run(cmd: &mut Command) -> Result<std::process::Output, BuildError> {
    cmd.output().map_err(|e| BuildError::Run {
        command: format!("{cmd:?}"),
        message: e.to_string(),
    })
}

fn check_target() -> Result<(), BuildError> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = run(Command::new(&rustc).args(["--print", "sysroot"]))?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let target = Path::new(&sysroot).join("lib/rustlib/wasm32-wasip1");
    if out.status.success() && target.is_dir() {
        Ok(())
    } else {
        Err(BuildError::TargetMissing { rustc })
    }
}

/// The package at `dir`: its name, `cdylib` file stem, and the workspace's target directory.
fn locate(cargo: &str, dir: &Path) -> Result<(String, String, PathBuf), BuildError> {
    let manifest = dir.join("Cargo.toml");
    let out = run(Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(&manifest))?;
    if !out.status.success() {
        return Err(BuildError::Run {
            command: format!("cargo metadata --manifest-path {}", manifest.display()),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| BuildError::Run {
            command: "cargo metadata".into(),
            message: format!("unreadable output: {e}"),
        })?;
    let unknown = || BuildError::UnknownPackage {
        manifest: manifest.display().to_string(),
    };
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .and_then(|m| Path::new(m).canonicalize().ok())
                .is_some_and(|m| m == manifest)
        })
        .ok_or_else(unknown)?;
    let name = package["name"].as_str().ok_or_else(unknown)?.to_string();
    let lib = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .and_then(|t| t["name"].as_str())
        .ok_or_else(|| BuildError::NotCdylib {
            package: name.clone(),
        })?
        .replace('-', "_");
    let target_dir = metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(unknown)?;
    Ok((name, lib, target_dir))
}

fn build(dir: &Path) -> Result<PathBuf, BuildError> {
    check_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let (package, lib, target_dir) = locate(&cargo, dir)?;
    let target_dir = target_dir.join("wasm-harness");
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip1", "-p"])
        .arg(&package)
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let out = run(&mut cmd)?;
    if !out.status.success() {
        return Err(BuildError::Build {
            package,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let wasm = target_dir
        .join("wasm32-wasip1")
        .join("release")
        .join(format!("{lib}.wasm"));
    if wasm.is_file() {
        Ok(wasm)
    } else {
        Err(BuildError::Build {
            package,
            stderr: format!("cargo succeeded but {} is missing", wasm.display()),
        })
    }
}
