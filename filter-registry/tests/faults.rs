//! The registry under faults, as a separate process (`wasmesh registry serve`'s code path,
//! [`wasmesh_registry::cli::registry`]): killed with SIGKILL at arbitrary points while pushes
//! are in flight, then restarted on the same store, every push it acknowledged is intact and
//! verifies, and nothing partial is ever served; a full disk gives a clear error and corrupts
//! nothing; a push without the push token is refused with 401; a blob tampered with on disk
//! makes pulls fail loudly.
//!
//! The child process is this test binary itself, re-run with only [`child_registry`] selected
//! and told what to serve through environment variables: the `wasmesh` binary belongs to
//! another package, so its path is not known here, and the subcommand's code is this crate's.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::Digest as _;
use support::{files_under, module};
use wasmesh_registry::cli::RegistryCommand;
use wasmesh_registry::client;
use wasmesh_registry::store::Digest;

const ROOT_VAR: &str = "WASMESH_FAULTS_REGISTRY_ROOT";
const TOKEN_VAR: &str = "WASMESH_FAULTS_REGISTRY_PUSH_TOKEN";

/// Not a test: the body of the child process the fault tests start and kill. Run alone (by
/// `Registry::start`) with the store's root in `WASMESH_FAULTS_REGISTRY_ROOT`, it serves the
/// registry as `wasmesh registry serve` does until it is killed.
#[test]
#[ignore = "the registry child process of the fault tests; they start it themselves"]
fn child_registry() {
    let Some(root) = std::env::var_os(ROOT_VAR) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let command = RegistryCommand::Serve {
        root: PathBuf::from(root),
        listen: "127.0.0.1:0".parse().expect("addr"),
        push_token: std::env::var(TOKEN_VAR).ok(),
        pull_token: None,
        tls_cert: None,
        tls_key: None,
    };
    if let Err(err) = runtime.block_on(wasmesh_registry::cli::registry(command)) {
        eprintln!("registry child: {err}");
        std::process::exit(1);
    }
}

/// A registry child process; killed (SIGKILL) when dropped.
struct Registry {
    child: Child,
    addr: SocketAddr,
}

impl Registry {
    fn start(root: &Path, push_token: Option<&str>) -> Registry {
        let mut command = Command::new(std::env::current_exe().expect("this test binary"));
        command
            .args(["child_registry", "--exact", "--ignored", "--nocapture"])
            .env(ROOT_VAR, root)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        match push_token {
            Some(token) => command.env(TOKEN_VAR, token),
            None => command.env_remove(TOKEN_VAR),
        };
        let mut child = command.spawn().expect("start the registry child");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("wasmesh: registry on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the registry child reported its address")
            .parse()
            .expect("an address");
        Registry { child, addr }
    }

    /// SIGKILL: no shutdown, no flush, no cleanup.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn reference(&self, repo: &str, tag: &str) -> String {
        format!("oci://{}/{repo}:{tag}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every blob in the store hashes to its name: nothing partial or corrupt is visible.
fn assert_blobs_intact(root: &Path) {
    for path in files_under(&root.join("blobs/sha256")) {
        let bytes = std::fs::read(&path).expect("read blob");
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(
            hex(&sha2::Sha256::digest(&bytes)),
            name,
            "{} does not hash to its name",
            path.display()
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A tiny deterministic generator, so each iteration kills at its own point without a
/// dependency; the assertions hold wherever the kill lands.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_pushes_loses_nothing_acknowledged_and_serves_nothing_partial() {
    const ITERATIONS: usize = 20;
    const PUSHES: usize = 4;
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("store");
    let mut rng = Lcg(0x5eed);
    // (reference path "repo:tag", the module) of every push the registry acknowledged.
    let mut acknowledged: Vec<(String, Vec<u8>, String)> = Vec::new();
    let mut unacknowledged: Vec<String> = Vec::new();
    for iteration in 0..ITERATIONS {
        let registry = Registry::start(&root, None);
        let mut pushes = Vec::new();
        for p in 0..PUSHES {
            // 64 KiB to 2 MiB: big enough that a kill often lands mid-upload.
            let size = 64 * 1024 + rng.next(2 * 1024 * 1024) as usize;
            let wasm = module(size, (iteration * PUSHES + p) as u8);
            let path = format!("faults/m{p}:i{iteration}");
            let reference = format!("oci://{}/{path}", registry.addr);
            pushes.push(tokio::spawn(async move {
                let result = client::push(&reference, &wasm, &BTreeMap::new(), None).await;
                (path, wasm, result)
            }));
        }
        if iteration == 0 {
            // The first round runs to its end, so some pushes are surely acknowledged, and
            // they must survive all the kills that follow (however slow the machine).
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !pushes.iter().all(|p| p.is_finished()) && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(rng.next(40))).await;
        }
        registry.kill();
        for push in pushes {
            let (path, wasm, result) = push.await.expect("push task");
            match result {
                Ok(digest) => acknowledged.push((path, wasm, digest.to_string())),
                Err(_) => unacknowledged.push(path),
            }
        }
        // The store as the kill left it: every visible blob whole.
        assert_blobs_intact(&root);
    }

    // Restarted on the same store: every acknowledged push is there and verifies (the client
    // checks every digest); an unacknowledged one is absent or, if its manifest made it,
    // whole. Nothing half-written is ever served.
    let registry = Registry::start(&root, None);
    for (path, wasm, digest) in &acknowledged {
        let (got_digest, got) = client::pull(&format!("oci://{}/{path}", registry.addr), None)
            .await
            .unwrap_or_else(|e| panic!("acknowledged push {path} lost: {e}"));
        assert_eq!(&got_digest.to_string(), digest, "{path}");
        assert!(&got == wasm, "{path}: different bytes");
    }
    for path in &unacknowledged {
        match client::pull(&format!("oci://{}/{path}", registry.addr), None).await {
            Ok(_) => {}
            Err(e) => assert!(e.is_not_found(), "{path}: {e}"),
        }
    }
    assert!(
        files_under(&root.join("tmp")).is_empty(),
        "temporary files were cleared at start"
    );
    assert_blobs_intact(&root);
    eprintln!(
        "sigkill: {ITERATIONS} kills, {} pushes acknowledged and intact, {} cut off",
        acknowledged.len(),
        unacknowledged.len()
    );
    assert!(
        !acknowledged.is_empty(),
        "no push ever completed; the test proved nothing"
    );
}

/// A small tmpfs, mounted for the test and unmounted after it.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_a_clear_error_and_corrupts_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("small");
    let _tmpfs = match Tmpfs::mount(&root, "3m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!(
                "\n*** SKIPPED a_full_disk_gives_a_clear_error_and_corrupts_nothing: cannot mount a tmpfs here ({why}); run as root to test a full disk ***\n"
            );
            return;
        }
    };
    let registry = Registry::start(&root, None);
    let small = module(64 * 1024, 1);
    let kept = client::push(
        &registry.reference("full/kept", "v1"),
        &small,
        &BTreeMap::new(),
        None,
    )
    .await
    .expect("a small push fits");

    // Larger than the whole file system.
    let big = module(4 * 1024 * 1024, 2);
    let err = client::push(
        &registry.reference("full/big", "v1"),
        &big,
        &BTreeMap::new(),
        None,
    )
    .await
    .expect_err("a push larger than the disk");
    let text = err.to_string();
    assert!(
        text.contains("507") && text.contains("storage is full"),
        "not a clear error: {text}"
    );
    assert_blobs_intact(&root);
    let big_blob = root
        .join("blobs/sha256")
        .join(Digest::sha256_of(&big).hex());
    assert!(!big_blob.exists(), "a partial blob became visible");

    // What was there still pulls, and once the failed push's leftovers are gone there is room
    // for another push.
    let (digest, got) = client::pull(&registry.reference("full/kept", "v1"), None)
        .await
        .expect("the earlier push");
    assert_eq!(digest, kept);
    assert_eq!(got, small);
    let again = module(64 * 1024, 3);
    client::push(
        &registry.reference("full/again", "v1"),
        &again,
        &BTreeMap::new(),
        None,
    )
    .await
    .expect("the failed push left no space behind");
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_without_the_token_is_refused_with_401() {
    let dir = tempfile::tempdir().expect("dir");
    let registry = Registry::start(dir.path(), Some("s3cret"));
    let wasm = module(1024, 7);
    let reference = registry.reference("auth/m", "v1");
    let err = client::push(&reference, &wasm, &BTreeMap::new(), None)
        .await
        .expect_err("anonymous push");
    assert!(err.to_string().contains("401"), "{err}");
    let err = client::push(&reference, &wasm, &BTreeMap::new(), Some("wrong"))
        .await
        .expect_err("wrong token");
    assert!(err.to_string().contains("401"), "{err}");
    assert!(
        files_under(&dir.path().join("blobs")).is_empty(),
        "nothing was stored"
    );
    let digest = client::push(&reference, &wasm, &BTreeMap::new(), Some("s3cret"))
        .await
        .expect("push with the token");
    assert_eq!(
        client::pull(&reference, None)
            .await
            .expect("anonymous pull")
            .0,
        digest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_tampered_on_disk_fails_every_pull_loudly() {
    let dir = tempfile::tempdir().expect("dir");
    let registry = Registry::start(dir.path(), None);
    let wasm = module(32 * 1024, 9);
    let reference = registry.reference("tamper/m", "v1");
    client::push(&reference, &wasm, &BTreeMap::new(), None)
        .await
        .expect("push");
    let blob = dir
        .path()
        .join("blobs/sha256")
        .join(Digest::sha256_of(&wasm).hex());
    let mut bytes = std::fs::read(&blob).expect("blob");
    bytes[100] ^= 0x01;
    std::fs::write(&blob, &bytes).expect("tamper");
    let err = client::pull(&reference, None)
        .await
        .expect_err("a tampered module was pulled");
    assert!(
        err.to_string().contains("digest mismatch"),
        "not a loud, clear error: {err}"
    );
}
