//! Builds the conformance probes: every crate under `probes/` with a `cdylib` target, for
//! `wasm32-wasip1`, with a nested cargo into `target/wasm-conformance` (sharing the outer
//! target directory would deadlock on its lock), as `host-abi/test-programs` does; and the
//! WAT probes under `probes/integration/`, with the `wat` crate. Both tables of paths go into
//! `$OUT_DIR/probes.rs` for `wasmesh_conformance::probes`.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Probe {
    /// The directory under `probes/`: the area's name.
    area: String,
    package: String,
    lib: String,
    /// How it is written: `proxy-wasm <version>` (the published Rust SDK) or `raw ABI`.
    sdk: String,
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest_dir
        .parent()
        .expect("conformance/ sits one level below the workspace")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let probes_dir = manifest_dir.join("probes");

    let packages = workspace_packages(&cargo, &workspace);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&probes_dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", probes_dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    let probes: Vec<Probe> = dirs.iter().filter_map(|d| probe(&packages, d)).collect();

    let target_dir = workspace.join("target").join("wasm-conformance");
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
    for p in &probes {
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
        "building the conformance probes failed; is the target installed? (rustup target add wasm32-wasip1)"
    );

    let mut table = String::from(
        "/// Every Rust probe under `probes/`: (area, `.wasm` path, how it is written).\npub const RUST_PROBES: &[(&str, &str, &str)] = &[\n",
    );
    for p in &probes {
        let wasm = target_dir
            .join("wasm32-wasip1")
            .join("release")
            .join(format!("{}.wasm", p.lib));
        table.push_str(&format!(
            "    ({:?}, {:?}, {:?}),\n",
            p.area,
            wasm.display().to_string(),
            p.sdk
        ));
    }
    table.push_str("];\n");

    // The WAT probes: compiled here, so no .wasm is ever checked in.
    let wat_dir = probes_dir.join("integration");
    let mut wats: Vec<PathBuf> = std::fs::read_dir(&wat_dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", wat_dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "wat"))
        .collect();
    wats.sort();
    table.push_str(
        "/// Every WAT probe under `probes/integration/`: (name, `.wasm` path).\npub const WAT_PROBES: &[(&str, &str)] = &[\n",
    );
    for wat in &wats {
        let name = wat
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = wat::parse_file(wat).unwrap_or_else(|e| panic!("{}: {e}", wat.display()));
        let wasm = out.join(format!("integration-{name}.wasm"));
        std::fs::write(&wasm, bytes).expect("writing a compiled WAT probe");
        table.push_str(&format!(
            "    ({name:?}, {:?}),\n",
            wasm.display().to_string()
        ));
    }
    table.push_str("];\n");
    std::fs::write(out.join("probes.rs"), table).expect("writing the probe table");

    for path in [
        probes_dir,
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

/// The probe whose manifest is `dir/Cargo.toml`, if it has a `cdylib` target (the shared
/// `support` crate has none).
fn probe(packages: &[serde_json::Value], dir: &Path) -> Option<Probe> {
    let manifest = dir.join("Cargo.toml");
    let same = |p: &str| Path::new(p).canonicalize().ok() == manifest.canonicalize().ok();
    let package = packages
        .iter()
        .find(|p| p["manifest_path"].as_str().is_some_and(same))
        .unwrap_or_else(|| {
            panic!(
                "{} is not a workspace member; add it to [workspace] members in the root Cargo.toml",
                dir.display()
            )
        });
    let lib = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .and_then(|t| t["name"].as_str())?;
    let sdk = package["dependencies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["name"] == "proxy-wasm")
        .map(|d| {
            let req = d["req"].as_str().unwrap_or("");
            format!("proxy-wasm {}", req.trim_start_matches('^'))
        })
        .unwrap_or_else(|| "raw ABI".to_string());
    Some(Probe {
        sdk,
        area: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        package: package["name"].as_str().unwrap_or_default().to_string(),
        lib: lib.replace('-', "_"),
    })
}
