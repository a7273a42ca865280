//! Builds the Wasm filters the tests run — every crate under `filters/` (found by reading the
//! directory, so a new stock filter needs no change here), `probe/`, `sdk-probe/`,
//! `grpc-probe/` and `tcp-probe/` — for `wasm32-wasip1` with a nested cargo into a target
//! directory of its own (sharing the outer one would deadlock on its lock), as wasmtime's
//! test-programs do. Each `.wasm` path is exported as a compile-time environment variable
//! (`WASMESH_FILTER_HEADERS_WASM`, …) and in a generated table for
//! `wasmesh_test_programs::filter(name)`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A crate to build: its name for `filter()`, its package, and its library's file stem.
struct Program {
    name: String,
    package: String,
    lib: String,
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest_dir
        .parent()
        .and_then(|p| p.parent())
        .expect("host-abi/test-programs sits two levels below the workspace")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let packages = workspace_packages(&cargo, &workspace);

    let mut programs = Vec::new();
    let filters_dir = workspace.join("filters");
    let mut filter_dirs: Vec<PathBuf> = std::fs::read_dir(&filters_dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", filters_dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect();
    filter_dirs.sort();
    for dir in &filter_dirs {
        // A filter being written is not a member yet; say so rather than fail every build.
        match find_package(&packages, dir) {
            Some(_) => programs.push(program(&packages, dir)),
            None => println!(
                "cargo:warning={} is not a workspace member (yet?); its tests will not find it",
                dir.display()
            ),
        }
    }
    let probes = [
        program(&packages, &manifest_dir.join("probe")),
        program(&packages, &manifest_dir.join("sdk-probe")),
        program(&packages, &manifest_dir.join("grpc-probe")),
        program(&packages, &manifest_dir.join("hostile")),
        program(&packages, &manifest_dir.join("tcp-probe")),
    ];

    let target_dir = workspace.join("target").join("wasm-test-programs");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--target-dir",
        ])
        .arg(&target_dir);
    for p in programs.iter().chain(&probes) {
        cmd.args(["-p", &p.package]);
    }
    // Flags meant for the host build must not leak into the wasm build.
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
    let status = cmd.status().expect("running cargo for wasm32-wasip1");
    assert!(
        status.success(),
        "building the test filters failed; is the target installed? (rustup target add wasm32-wasip1)"
    );

    let wasm = |p: &Program| {
        target_dir
            .join("wasm32-wasip1")
            .join("release")
            .join(format!("{}.wasm", p.lib))
    };
    let mut table = String::from(
        "/// Every stock filter under `filters/`: (directory name, `.wasm` path).\npub const FILTERS: &[(&str, &str)] = &[\n",
    );
    for p in &programs {
        table.push_str(&format!(
            "    ({:?}, {:?}),\n",
            p.name,
            wasm(p).display().to_string()
        ));
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("filters.rs"), table).expect("writing the filter table");
    for p in programs.iter().chain(&probes) {
        let var = p.package.to_ascii_uppercase().replace('-', "_");
        println!("cargo:rustc-env={var}_WASM={}", wasm(p).display());
    }

    // Rebuild when a filter, the SDK they are written with, the probe, or the workspace's
    // manifest (profiles, dependency versions) changes; `filters/` as a whole so new filters
    // are found.
    for path in [
        filters_dir,
        workspace.join("sdk").join("src"),
        workspace.join("sdk").join("Cargo.toml"),
        manifest_dir.join("probe"),
        manifest_dir.join("sdk-probe"),
        manifest_dir.join("grpc-probe"),
        manifest_dir.join("hostile"),
        manifest_dir.join("tcp-probe"),
        workspace.join("Cargo.toml"),
        workspace.join("Cargo.lock"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// The workspace's packages as `cargo metadata` describes them.
fn workspace_packages(cargo: &str, workspace: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    match metadata.get_mut("packages").map(serde_json::Value::take) {
        Some(serde_json::Value::Array(packages)) => packages,
        _ => panic!("cargo metadata printed no packages"),
    }
}

fn find_package<'a>(
    packages: &'a [serde_json::Value],
    dir: &Path,
) -> Option<&'a serde_json::Value> {
    let manifest = dir.join("Cargo.toml");
    let same = |p: &str| Path::new(p).canonicalize().ok() == manifest.canonicalize().ok();
    packages
        .iter()
        .find(|p| p["manifest_path"].as_str().is_some_and(same))
}

/// The package whose manifest is `dir/Cargo.toml`, with its `cdylib` target.
fn program(packages: &[serde_json::Value], dir: &Path) -> Program {
    let package = find_package(packages, dir).unwrap_or_else(|| {
        panic!(
            "{} is not a workspace member; add it to [workspace] members in the root Cargo.toml",
            dir.display()
        )
    });
    let name = package["name"].as_str().expect("packages have names");
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
        .unwrap_or_else(|| panic!("{name} has no cdylib target (crate-type = [\"cdylib\"])"));
    Program {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        package: name.to_string(),
        lib: lib.replace('-', "_"),
    }
}
