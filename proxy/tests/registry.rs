//! The `wasmesh registry serve` and `wasmesh filter push|pull|ls` commands against each other:
//! a real registry process over loopback HTTP, and the pulled filter identical to the pushed one.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

struct Registry(std::process::Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wasmesh(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmesh"))
        .args(args)
        .env_remove("WASMESH_REGISTRY_TOKEN")
        .output()
        .expect("run wasmesh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn push_then_pull_a_filter_through_the_registry() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("registry");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmesh"))
        .args([
            "registry",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--push-token",
            "s3cret",
            "--root",
        ])
        .arg(&root)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start registry");
    let stdout = child.stdout.take().expect("stdout");
    let registry = Registry(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("registry reported its address");
        if let Some(addr) = line.strip_prefix("wasmesh: registry on ") {
            break addr.to_string();
        }
    };
    let wasm = wasmesh_test_programs::HEADERS_WASM;
    let reference = format!("oci://{addr}/filters/headers:v1");

    let (ok, out) = wasmesh(&["filter", "push", wasm, &reference]);
    assert!(!ok, "a push without the token must be refused: {out}");

    let (ok, out) = wasmesh(&["filter", "push", wasm, &reference, "--token", "s3cret"]);
    assert!(ok, "{out}");
    assert!(out.contains("sha256:"), "{out}");

    let pulled = dir.path().join("pulled.wasm");
    let (ok, out) = wasmesh(&[
        "filter",
        "pull",
        &reference,
        "-o",
        pulled.to_str().expect("utf-8 path"),
    ]);
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read(&pulled).expect("pulled file"),
        std::fs::read(wasm).expect("original"),
        "the pulled filter is byte for byte the pushed one"
    );

    let (ok, out) = wasmesh(&["filter", "ls", &format!("{addr}/filters/headers")]);
    assert!(ok, "{out}");
    assert!(out.lines().any(|l| l.trim() == "v1"), "{out}");
    drop(registry);
}
