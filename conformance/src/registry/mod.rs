//! Registry conformance: the OCI distribution-spec conformance categories ([`tests`]) run
//! against registries.
//!
//! - By default against wasmesh's own registry (`wasmesh-registry`), started in process on
//!   loopback; it must pass every test. `WASMESH_CONFORMANCE_REGISTRY=<url>` points the suite
//!   at another registry instead (with `WASMESH_CONFORMANCE_REGISTRY_USER` and `_PASSWORD` for
//!   Basic auth).
//! - As the reference, against Debian's `docker-registry` (CNCF distribution 2.8) started on
//!   loopback with a temporary configuration; its known gaps ([`DOCKER_REGISTRY_GAPS`]) are
//!   recorded, not failures.

pub mod client;
pub mod tests;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Context, Error, Result};
use client::Client;
use tests::{Outcome, Suite, TESTS};

/// The environment variable naming another registry to test.
pub const REGISTRY_VAR: &str = "WASMESH_CONFORMANCE_REGISTRY";

/// A known gap of the reference registry: the outcome it has, and why.
pub struct KnownGap {
    pub test: &'static str,
    /// `unsupported` or `fail`.
    pub outcome: &'static str,
    pub reason: &'static str,
}

/// What Debian's `docker-registry` (CNCF distribution 2.8.2) does not do (oci-notes §3.3).
pub const DOCKER_REGISTRY_GAPS: &[KnownGap] = &[
    KnownGap {
        test: "invalid-digest-format",
        outcome: "fail",
        reason: "a PUT to manifests/sha256:baddigeststring answers 500 UNKNOWN, not 400",
    },
    KnownGap {
        test: "sha512 blobs",
        outcome: "fail",
        reason: "it stores a sha512 blob but answers with its canonical sha256 in Docker-Content-Digest",
    },
    KnownGap {
        test: "blob-post-only",
        outcome: "unsupported",
        reason: "a single POST with ?digest= opens a session (202); the client falls back to PUT",
    },
    KnownGap {
        test: "blob-patch-chunked",
        outcome: "fail",
        reason: "an out-of-order chunk is accepted (202) instead of refused with 416",
    },
    KnownGap {
        test: "blob-mount-anonymous",
        outcome: "unsupported",
        reason: "a mount without from opens a session (202); the client falls back to PUT",
    },
    KnownGap {
        test: "tag-list",
        outcome: "fail",
        reason: "tags are listed in storage order, not lexical order",
    },
    KnownGap {
        test: "referrers",
        outcome: "fail",
        reason: "no referrers API in distribution 2.8: no OCI-Subject, and GET referrers is 404",
    },
    KnownGap {
        test: "tag-delete",
        outcome: "unsupported",
        reason: "deletes by digest only: DELETE of a tag answers 400 DIGEST_INVALID (the spec allows 400/405)",
    },
];

/// One test's outcome on one registry.
#[derive(Debug, Clone)]
pub struct Tested {
    pub category: &'static str,
    pub test: &'static str,
    pub outcome: Outcome,
}

/// What running the tests against one registry gave.
#[derive(Debug, Clone)]
pub enum RegistryRun {
    Ran(Vec<Tested>),
    /// The registry could not be run here, and why.
    NotRun(String),
}

/// Both runs of the registry section.
#[derive(Debug, Clone)]
pub struct RegistryResults {
    /// The registry under test: wasmesh's, or the one `WASMESH_CONFORMANCE_REGISTRY` names.
    pub target: String,
    pub tested: RegistryRun,
    pub reference: RegistryRun,
}

/// A name for this run's repositories, unique enough for a long-lived registry.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("r{nanos:x}")
}

/// Runs every test against the registry at `base`.
pub async fn run_against(base: &str, credentials: Option<(String, String)>) -> Result<Vec<Tested>> {
    let client = Client::new(base, credentials)?;
    let mut suite = Suite::new(client, &run_id());
    let mut out = Vec::new();
    for (category, names) in TESTS {
        for name in *names {
            let outcome = suite.run(name).await;
            out.push(Tested {
                category,
                test: name,
                outcome,
            });
        }
    }
    Ok(out)
}

/// wasmesh's registry on loopback, in process, storing under a temporary directory.
async fn ours() -> Result<Vec<Tested>> {
    let dir = tempfile::tempdir().doing("a directory for the registry")?;
    let registry = wasmesh_registry::server::serve(wasmesh_registry::server::RegistryConfig {
        root: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().doing("a loopback address")?,
        push_token: None,
        pull_token: None,
    })
    .await
    .doing("starting wasmesh's registry")?;
    let base = format!("http://{}", registry.local_addr());
    let result = run_against(&base, None).await;
    registry.shutdown().await;
    result
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// A `docker-registry` process on a free loopback port; killed when dropped.
struct DockerRegistry {
    child: tokio::process::Child,
    addr: String,
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl DockerRegistry {
    async fn start(bin: &Path, dir: &Path) -> Result<DockerRegistry> {
        let storage = dir.join("storage");
        let log = dir.join("docker-registry.log");
        // The port is found by binding it and letting go; should another process take it in
        // between, the registry exits and the next attempt picks another.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .doing("finding a free port")?
                .port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: wasmesh-conformance\n",
                    storage.display()
                ),
            )
            .doing("writing docker-registry's configuration")?;
            let mut child = tokio::process::Command::new(bin)
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).doing("docker-registry's log")?)
                .kill_on_drop(true)
                .spawn()
                .doing("starting docker-registry")?;
            // Ready when it accepts connections (polled, generously bounded).
            for _ in 0..600 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                    return Ok(DockerRegistry { child, addr });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.start_kill();
        }
        Err(Error(format!(
            "docker-registry did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )))
    }
}

/// The reference run on Debian's `docker-registry`, or why it did not run.
async fn reference() -> RegistryRun {
    let Some(bin) = which("docker-registry") else {
        return RegistryRun::NotRun(
            "docker-registry is not installed (apt-get install docker-registry; ./setup.sh does it)".into(),
        );
    };
    let run = async {
        let dir = tempfile::tempdir().doing("a directory for docker-registry")?;
        let registry = DockerRegistry::start(&bin, dir.path()).await?;
        let result = run_against(&format!("http://{}", registry.addr), None).await;
        drop(registry);
        result
    };
    match run.await {
        Ok(tested) => RegistryRun::Ran(tested),
        Err(e) => RegistryRun::NotRun(format!("docker-registry could not be run: {e}")),
    }
}

/// Runs the registry section: the registry under test, and the reference.
pub async fn run() -> RegistryResults {
    let (target, tested) = match std::env::var(REGISTRY_VAR) {
        Ok(url) if !url.trim().is_empty() => {
            let credentials = match (
                std::env::var("WASMESH_CONFORMANCE_REGISTRY_USER"),
                std::env::var("WASMESH_CONFORMANCE_REGISTRY_PASSWORD"),
            ) {
                (Ok(user), Ok(password)) => Some((user, password)),
                _ => None,
            };
            (url.clone(), run_against(url.trim(), credentials).await)
        }
        _ => ("wasmesh-registry (in process)".to_string(), ours().await),
    };
    let tested = match tested {
        Ok(t) => RegistryRun::Ran(t),
        Err(e) => RegistryRun::NotRun(e.to_string()),
    };
    RegistryResults {
        target,
        tested,
        reference: reference().await,
    }
}

/// The reference's known gap for `test`, if any.
pub fn reference_gap(test: &str) -> Option<&'static KnownGap> {
    DOCKER_REGISTRY_GAPS.iter().find(|g| g.test == test)
}
