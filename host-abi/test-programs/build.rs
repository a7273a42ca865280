//! Builds the test filters for `wasm32-wasip1` with a nested cargo into a target directory of
//! its own (sharing the outer one would deadlock on its lock), as wasmtime's test-programs do,
//! and exports each `.wasm` path as a compile-time environment variable.

use std::path::PathBuf;
use std::process::Command;

const FILTERS: &[(&str, &str)] = &[
    ("wasmesh-probe-filter", "wasmesh_probe_filter"),
    ("wasmesh-filter-headers", "wasmesh_filter_headers"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest_dir
        .parent()
        .and_then(|p| p.parent())
        .expect("host-abi/test-programs sits two levels below the workspace")
        .to_path_buf();
    let target_dir = workspace.join("target").join("wasm-test-programs");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--target-dir",
        ])
        .arg(&target_dir);
    for (package, _) in FILTERS {
        cmd.args(["-p", package]);
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
    for (package, lib) in FILTERS {
        let wasm = target_dir
            .join("wasm32-wasip1")
            .join("release")
            .join(format!("{lib}.wasm"));
        let var = package.to_ascii_uppercase().replace('-', "_");
        println!("cargo:rustc-env={var}_WASM={}", wasm.display());
    }
    // Rebuild when a filter's sources change.
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("probe").display()
    );
    println!("cargo:rerun-if-changed=build.rs");
}
