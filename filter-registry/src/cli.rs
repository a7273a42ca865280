//! The `wasmesh registry …` and `wasmesh filter …` subcommands: their arguments (clap) and what
//! they do. The `wasmesh` binary only dispatches to [`registry`] and [`filter`].

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::artifact;
use crate::auth::Credentials;
use crate::client::{Client, ClientConfig, ClientError, ImageRef, Progress};
use crate::server::{self, RegistryConfig, ServeError, TlsFiles};
use crate::store::{Digest, GcOptions, Store, StoreError};

/// Transfers at least this large get a progress line (when stderr is a terminal).
const PROGRESS_MIN: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Usage(String),
}

#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Serve an OCI distribution registry from a directory.
    Serve {
        #[arg(long)]
        root: PathBuf,
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: SocketAddr,
        /// Token required to push (Bearer, Basic with it as password, or through the
        /// registry's token service); without one the registry serves only on loopback.
        #[arg(long, env = "WASMESH_REGISTRY_PUSH_TOKEN", hide_env_values = true)]
        push_token: Option<String>,
        /// Token required to pull (default: anonymous pulls).
        #[arg(long, env = "WASMESH_REGISTRY_PULL_TOKEN", hide_env_values = true)]
        pull_token: Option<String>,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key for --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Remove blobs no manifest references (directly, through an index, or as a referrer's
    /// subject), and stale upload sessions.
    Gc {
        #[arg(long)]
        root: PathBuf,
        /// Keep unreferenced blobs and uploads younger than this (spares pushes in flight),
        /// e.g. `0`, `30s`, `10m`, `1h`.
        #[arg(long, default_value = "1h")]
        min_age: String,
        /// Report what would be removed without removing it.
        #[arg(long)]
        dry_run: bool,
    },
}

/// How the filter commands reach a registry.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// Bearer token for the registry (else the Docker config's credentials are used).
    #[arg(long, env = "WASMESH_REGISTRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Docker `config.json` with `auths` (default: `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json` when present).
    #[arg(long)]
    pub auth_file: Option<PathBuf>,
    /// Registry reached over plain HTTP (`host` or `host:port`, `*` for all); repeatable.
    /// Loopback registries always are.
    #[arg(long = "insecure")]
    pub insecure: Vec<String>,
    /// PEM CA certificates to trust besides the Mozilla roots.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

impl ClientArgs {
    pub fn client(&self) -> Result<Client, CliError> {
        let credentials = Credentials::load(self.auth_file.as_deref(), self.token.clone())?;
        Ok(Client::new(ClientConfig {
            insecure: self.insecure.clone(),
            ca_file: self.ca_file.clone(),
            credentials,
            ..ClientConfig::default()
        })?)
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum FilterCommand {
    /// Push FILE.wasm as oci://HOST/REPO:TAG; prints the manifest digest.
    Push {
        file: PathBuf,
        reference: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pull a filter (any Wasm OCI format), verifying every digest, into a file.
    Pull {
        reference: String,
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the tags of HOST/REPO.
    Ls {
        repository: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a filter's manifest digest, media type and manifest.
    Inspect {
        reference: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs a `wasmesh registry` subcommand.
pub async fn registry(command: RegistryCommand) -> Result<(), CliError> {
    match command {
        RegistryCommand::Serve {
            root,
            listen,
            push_token,
            pull_token,
            tls_cert,
            tls_key,
        } => {
            let config = RegistryConfig {
                root,
                listen,
                push_token,
                pull_token,
            };
            let registry = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => {
                    let r = server::serve_tls(
                        config,
                        TlsFiles {
                            cert: cert.clone(),
                            key,
                        },
                    )
                    .await?;
                    println!("wasmesh: registry on {}", r.local_addr());
                    println!("wasmesh: registry serves HTTPS with {}", cert.display());
                    r
                }
                _ => {
                    let r = server::serve(config).await?;
                    println!("wasmesh: registry on {}", r.local_addr());
                    r
                }
            };
            let _ = std::io::stdout().flush();
            shutdown_signal().await;
            registry.shutdown().await;
            Ok(())
        }
        RegistryCommand::Gc {
            root,
            min_age,
            dry_run,
        } => {
            let min_age = parse_age(&min_age)?;
            gc(&root, min_age, dry_run).map(drop)
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `0`, `45s`, `10m`, `1h`, `2d`.
fn parse_age(s: &str) -> Result<Duration, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "--min-age {s:?}: expected e.g. 0, 30s, 10m, 1h, 2d"
        ))
    };
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let n: u64 = s[..unit_at].parse().map_err(|_| bad())?;
    let secs = match &s[unit_at..] {
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(bad)?,
        "h" => n.checked_mul(3600).ok_or_else(bad)?,
        "d" => n.checked_mul(86400).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(secs))
}

/// `wasmesh registry gc`: collects garbage in the store at `root` and prints a summary line.
pub fn gc(root: &Path, min_age: Duration, dry_run: bool) -> Result<String, CliError> {
    if !root.join("blobs").is_dir() {
        return Err(CliError::Usage(format!(
            "{} is not a registry store (no blobs/ directory)",
            root.display()
        )));
    }
    let store = Store::open_shared(root)?;
    let report = store.gc_with(&GcOptions { min_age, dry_run })?;
    let verb = if dry_run { "would remove" } else { "removed" };
    let line = format!(
        "gc: {verb} {} blobs ({}), kept {} referenced and {} unreferenced younger than {:?}; {verb} {} stale uploads",
        report.removed.len(),
        human_bytes(report.removed_bytes),
        report.kept,
        report.kept_young,
        min_age,
        report.uploads_removed
    );
    println!("{line}");
    Ok(line)
}

/// Runs a `wasmesh filter` subcommand.
pub async fn filter(command: FilterCommand) -> Result<(), CliError> {
    match command {
        FilterCommand::Push {
            file,
            reference,
            client,
        } => push(&client.client()?, &file, &reference).await.map(drop),
        FilterCommand::Pull {
            reference,
            output,
            client,
        } => pull(&client.client()?, &reference, &output).await.map(drop),
        FilterCommand::Ls { repository, client } => {
            ls(&client.client()?, &repository).await.map(drop)
        }
        FilterCommand::Inspect { reference, client } => {
            inspect(&client.client()?, &reference).await.map(drop)
        }
    }
}

fn human_bytes(n: u64) -> String {
    if n >= 1024 * 1024 {
        format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
    } else if n >= 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} bytes")
    }
}

fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-6);
    format!(
        "{bytes} bytes in {:.2}s, {:.1} MiB/s",
        secs,
        bytes as f64 / (1024.0 * 1024.0) / secs
    )
}

/// A progress line on stderr, redrawn per percent, for large transfers on a terminal.
fn progress_line(verb: &'static str, what: String) -> Option<Progress> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let last = AtomicU64::new(u64::MAX);
    Some(Arc::new(move |done: u64, total: u64| {
        if total < PROGRESS_MIN {
            return;
        }
        let pct = done.saturating_mul(100) / total.max(1);
        if last.swap(pct, Ordering::Relaxed) == pct {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{verb} {what}: {} of {} ({pct}%)",
            human_bytes(done),
            human_bytes(total)
        );
        if done >= total {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }))
}

/// `wasmesh filter push FILE REFERENCE`: pushes a module, titled with the file name, and prints
/// `pushed <reference> <digest> (<size> bytes in <time>, <rate>)`.
pub async fn push(client: &Client, file: &Path, reference: &str) -> Result<Digest, CliError> {
    let r = ImageRef::parse(reference)?;
    let wasm = std::fs::read(file).map_err(|source| CliError::Read {
        path: file.display().to_string(),
        source,
    })?;
    let mut ann = BTreeMap::new();
    if let Some(name) = file.file_name().and_then(|n| n.to_str()) {
        ann.insert(artifact::ANNOTATION_TITLE.to_string(), name.to_string());
    }
    let started = Instant::now();
    let progress = progress_line("pushing", r.to_string());
    let d = client.push_with_progress(&r, &wasm, &ann, progress).await?;
    println!(
        "pushed {reference} {d} ({})",
        rate(wasm.len() as u64, started.elapsed())
    );
    Ok(d)
}

/// `wasmesh filter pull REFERENCE -o OUT`: pulls and verifies a module, writes it atomically
/// to `out`, and prints `pulled <reference> <digest> (<format>, <size> bytes in …) -> <out>`.
pub async fn pull(client: &Client, reference: &str, out: &Path) -> Result<Digest, CliError> {
    let r = ImageRef::parse(reference)?;
    let started = Instant::now();
    let progress = progress_line("pulling", r.to_string());
    let pulled = client.pull_with_progress(&r, progress).await?;
    let elapsed = started.elapsed();
    let werr = |source| CliError::Write {
        path: out.display().to_string(),
        source,
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&pulled.wasm)?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e));
    }
    println!(
        "pulled {reference} {} ({}, {}) -> {}",
        pulled.manifest_digest,
        pulled.format,
        rate(pulled.wasm.len() as u64, elapsed),
        out.display()
    );
    Ok(pulled.manifest_digest)
}

/// `wasmesh filter ls HOST/REPO`: prints one tag per line.
pub async fn ls(client: &Client, host_repo: &str) -> Result<Vec<String>, CliError> {
    let r = ImageRef::parse(host_repo)?;
    let tags = client.list_tags(&r).await?;
    for t in &tags {
        println!("{t}");
    }
    Ok(tags)
}

/// `wasmesh filter inspect REFERENCE`: prints the digest, the media type and the manifest
/// (pretty JSON when it parses).
pub async fn inspect(client: &Client, reference: &str) -> Result<String, CliError> {
    let r = ImageRef::parse(reference)?;
    let m = client.fetch_manifest(&r).await?;
    let text = match serde_json::from_slice::<serde_json::Value>(&m.bytes) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&m.bytes).into_owned(),
    };
    println!("digest: {}\nmedia type: {}\n{text}", m.digest, m.media_type);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("0").ok(), Some(Duration::ZERO));
        assert_eq!(parse_age("45s").ok(), Some(Duration::from_secs(45)));
        assert_eq!(parse_age("10m").ok(), Some(Duration::from_secs(600)));
        assert_eq!(parse_age("1h").ok(), Some(Duration::from_secs(3600)));
        assert_eq!(parse_age("2d").ok(), Some(Duration::from_secs(172800)));
        for bad in ["", "h", "1", "1y", "-1h", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }
}
