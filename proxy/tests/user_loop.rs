//! The whole loop a filter author goes through, with the real `wasmesh` binary at every step
//! and the commands of the SDK tutorial (`sdk/README.md`), on ephemeral ports:
//!
//! 1. `wasmesh filter new demo --lang rust`, in an empty directory;
//! 2. `wasmesh filter build`, in the new project;
//! 3. `wasmesh registry serve --root … --listen 127.0.0.1:0`, and `wasmesh filter push`;
//! 4. `wasmesh upstream` and `wasmesh run --config sdk/tutorial/wasmesh.yaml`, whose chain
//!    `edge` starts empty;
//! 5. `wasmesh chain set edge --plugin oci://… --config …`;
//! 6. a request through the proxy carries the filter's headers both ways.
//!
//! The Rust build goes to `target/sdk-user-filters` (shared with the SDK tools' tests), so
//! proxy-wasm and serde compile for wasm32 once, not on every run.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::*;

/// `wasmesh ARGS` in `dir`; (success, stdout + stderr).
fn wasmesh(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmesh"));
    cmd.current_dir(dir)
        .args(args)
        .env_remove("WASMESH_ADMIN")
        .env_remove("WASMESH_REGISTRY_TOKEN");
    // Flags meant for this test's own build must not reach the filter's.
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("run wasmesh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A long-running `wasmesh` subcommand, killed when dropped.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `wasmesh ARGS` and returns it with the rest of the first stdout line that starts
/// with `prefix` (an address it bound).
fn start(args: &[&str], prefix: &str) -> (Background, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmesh"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start wasmesh");
    let stdout = child.stdout.take().expect("stdout");
    let running = Background(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("`wasmesh {}` printed no {prefix:?} line", args.join(" ")));
        if let Some(rest) = line.strip_prefix(prefix) {
            return (running, rest.trim().to_string());
        }
    }
}

#[tokio::test]
async fn new_build_push_and_roll_out_a_filter() {
    let work = tempfile::tempdir().expect("dir");
    let target = wasmesh_sdk_tools::examples::test_out_dir()
        .parent()
        .map(|t| t.join("sdk-user-filters"))
        .expect("target dir");

    // 1. A new Rust filter project.
    let (ok, out) = wasmesh(
        work.path(),
        &["filter", "new", "demo", "--lang", "rust"],
        &[],
    );
    assert!(ok, "{out}");
    let project = work.path().join("demo");
    assert!(project.join("Cargo.toml").is_file(), "{out}");

    // 2. Built and checked against the host.
    let (ok, out) = wasmesh(
        &project,
        &["filter", "build"],
        &[("CARGO_TARGET_DIR", &target)],
    );
    assert!(ok, "{out}");
    assert!(out.contains("built demo (rust)"), "{out}");
    assert!(out.contains("proxy-wasm ABI 0.2.1"), "{out}");
    let wasm = out
        .lines()
        .find_map(|l| l.strip_prefix("wasm: "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no `wasm:` line: {out}"));
    assert!(Path::new(&wasm).is_file(), "{wasm}");

    // 3. Pushed to a registry.
    let root = work.path().join("registry");
    let root_arg = root.to_str().expect("utf-8 path");
    let (_registry, registry) = start(
        &[
            "registry",
            "serve",
            "--root",
            root_arg,
            "--listen",
            "127.0.0.1:0",
        ],
        "wasmesh: registry on ",
    );
    let reference = format!("oci://{registry}/filters/demo:v1");
    let (ok, out) = wasmesh(&project, &["filter", "push", &wasm, &reference], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("sha256:"), "{out}");

    // 4. An upstream, and the tutorial's proxy in front of it with an empty chain.
    let (_upstream, upstream) = start(
        &["upstream", "--listen", "127.0.0.1:0", "--name", "backend"],
        "upstream backend listening on ",
    );
    let tutorial = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/tutorial/wasmesh.yaml"),
    )
    .expect("the tutorial's config");
    let config = tutorial
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("127.0.0.1:8081", &upstream);
    assert_ne!(
        config, tutorial,
        "the tutorial's addresses moved; update this test"
    );
    let proxy = Proxy::start(&config);
    let before = get(proxy.addr("main"), "/hello").await;
    assert_eq!(before.status, 200, "{}", before.text());
    assert_eq!(before.header("x-served-by"), None, "no filter yet");

    // 5. The filter rolled out to the running proxy from the registry.
    let admin = proxy.admin.expect("admin").to_string();
    let (ok, out) = wasmesh(
        &project,
        &[
            "chain",
            "set",
            "edge",
            "--plugin",
            &reference,
            "--config",
            r#"{"request": {"x-hello": "world"}, "response": {"x-served-by": "demo"}}"#,
            "--admin",
            &admin,
        ],
        &[],
    );
    assert!(ok, "{out}");

    // 6. Its effect on the wire, both ways.
    let after = get(proxy.addr("main"), "/hello").await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(after.header("x-served-by"), Some("demo"));
    let described: serde_json::Value =
        serde_json::from_slice(&after.body).expect("the demo upstream answers JSON");
    assert_eq!(
        described["headers"]["x-hello"], "world",
        "the upstream saw the request header: {described}"
    );
    let (status, body) = admin_call(proxy.admin.expect("admin"), "GET", "/chains/edge", "");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("{registry}/filters/demo:v1")),
        "{body}"
    );
}
