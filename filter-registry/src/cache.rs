//! The module cache the proxy pulls through: modules on disk keyed by manifest digest, and the
//! digest each tag reference last resolved to, both surviving restarts.
//!
//! Layout under the cache directory:
//! - `modules/<alg>/<hex>.wasm`: a module, named by the digest of the manifest it came from;
//! - `modules/<alg>/<hex>.json`: its record: the sha256 of the module bytes taken at pull time,
//!   the format and the reference it was pulled from. A module is used only if its bytes still
//!   hash to the record; otherwise the entry is discarded and pulled again;
//! - `tags/<sha256 of HOST/REPO:TAG>.json`: the digest that tag resolved to last (only ever a
//!   digest whose module is stored);
//! - `tmp/`: files being written (temp file, fsync, rename, fsync of the directory).
//!
//! Pins follow Istio: a pin is the sha256 **of the manifest**, not of the module bytes.
//! Concurrent fetches of one reference in a process wait for each other (one pull); across
//! processes, identical content is renamed into place, so readers never see a partial file.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::artifact;
use crate::client::{Client, ClientError, ImageRef};
use crate::store::Digest;

/// When to ask the registry (the names and meaning of Istio's `imagePullPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// A digest reference, or a tag resolved before, is served from disk with no network.
    IfNotPresent,
    /// A tag is resolved (one HEAD); the module is pulled only if that digest is not cached.
    /// A digest reference needs no resolution and is served from disk when present.
    Always,
}

/// A module handed out by the cache.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub manifest_digest: Digest,
    pub wasm: Vec<u8>,
    /// Whether the bytes came from disk (no pull).
    pub from_cache: bool,
}

#[derive(Serialize, Deserialize)]
struct ModuleRecord {
    wasm_sha256: String,
    size: u64,
    format: String,
    reference: String,
}

#[derive(Serialize, Deserialize)]
struct TagRecord {
    reference: String,
    digest: String,
}

/// Modules on disk. Cheap to clone; clones share the in-process pull locks.
#[derive(Clone)]
pub struct ModuleCache {
    dir: PathBuf,
    /// One lock per reference, so concurrent fetches of it make one pull.
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

fn cache_err(path: &Path, cause: impl std::fmt::Display) -> ClientError {
    ClientError::Cache {
        path: path.display().to_string(),
        cause: cause.to_string(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Cache {
            path: String::new(),
            cause: format!("cache task failed: {e}"),
        })?
}

impl ModuleCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: PathBuf) -> ModuleCache {
        ModuleCache {
            dir,
            locks: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The module `r` names, per `policy`; `pin` is the expected manifest digest.
    pub async fn fetch(
        &self,
        client: &Client,
        r: &ImageRef,
        policy: PullPolicy,
        pin: Option<&Digest>,
    ) -> Result<Fetched, ClientError> {
        if let (Some(d), Some(p)) = (&r.digest, pin)
            && d != p
        {
            return Err(ClientError::PinMismatch {
                reference: r.to_string(),
                expected: p.to_string(),
                actual: d.to_string(),
            });
        }
        let lock = self.lock_for(&r.to_string());
        let _held = lock.lock().await;

        // A digest known without asking anyone: the reference's own, or the pin.
        let known = r.digest.clone().or_else(|| pin.cloned());
        if let Some(d) = &known
            && let Some(wasm) = self.load(d).await?
        {
            return Ok(Fetched {
                manifest_digest: d.clone(),
                wasm,
                from_cache: true,
            });
        }
        let tag_key = if r.digest.is_none() {
            r.tag_reference()
        } else {
            None
        };
        match (policy, &tag_key) {
            (PullPolicy::IfNotPresent, Some(key)) => {
                if let Some(d) = self.remembered_key(key).await?
                    && pin.is_none_or(|p| *p == d)
                    && let Some(wasm) = self.load(&d).await?
                {
                    return Ok(Fetched {
                        manifest_digest: d,
                        wasm,
                        from_cache: true,
                    });
                }
                self.pull_and_store(client, r, pin, tag_key.as_deref())
                    .await
            }
            (PullPolicy::Always, Some(key)) => {
                let d = client.resolve(r).await?;
                check_pin(r, pin, &d)?;
                if let Some(wasm) = self.load(&d).await? {
                    self.remember(key, &d).await?;
                    return Ok(Fetched {
                        manifest_digest: d,
                        wasm,
                        from_cache: true,
                    });
                }
                // Pull what the tag named at resolution, even if it moves meanwhile.
                self.pull_and_store(client, &r.with_digest(d), pin, Some(key))
                    .await
            }
            (_, None) => self.pull_and_store(client, r, pin, None).await,
        }
    }

    /// What a tag names now: always asks the registry (for tag following). The answer is not
    /// remembered until a module for it is fetched.
    pub async fn resolve_tag(&self, client: &Client, r: &ImageRef) -> Result<Digest, ClientError> {
        client.resolve(r).await
    }

    /// The digest `r`'s tag resolved to when last fetched, if any (no network).
    pub async fn remembered(&self, r: &ImageRef) -> Result<Option<Digest>, ClientError> {
        match r.tag_reference() {
            Some(key) => self.remembered_key(&key).await,
            None => Ok(None),
        }
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Drop locks nobody holds, so the map does not grow with every reference ever seen.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key.to_string()).or_default().clone()
    }

    async fn pull_and_store(
        &self,
        client: &Client,
        r: &ImageRef,
        pin: Option<&Digest>,
        tag_key: Option<&str>,
    ) -> Result<Fetched, ClientError> {
        let pulled = client.pull(r).await?;
        check_pin(r, pin, &pulled.manifest_digest)?;
        let record = ModuleRecord {
            wasm_sha256: Digest::sha256_of(&pulled.wasm).to_string(),
            size: pulled.wasm.len() as u64,
            format: pulled.format.name().to_string(),
            reference: r.to_string(),
        };
        let (wasm_path, record_path) = self.entry_paths(&pulled.manifest_digest);
        let tmp = self.dir.join("tmp");
        let wasm = pulled.wasm;
        let wasm = blocking(move || {
            let record =
                serde_json::to_vec_pretty(&record).map_err(|e| cache_err(&record_path, e))?;
            write_atomic(&tmp, &wasm_path, &wasm)?;
            write_atomic(&tmp, &record_path, &record)?;
            Ok(wasm)
        })
        .await?;
        if let Some(key) = tag_key {
            self.remember(key, &pulled.manifest_digest).await?;
        }
        Ok(Fetched {
            manifest_digest: pulled.manifest_digest,
            wasm,
            from_cache: false,
        })
    }

    fn entry_paths(&self, d: &Digest) -> (PathBuf, PathBuf) {
        let base = self.dir.join("modules").join(d.algorithm().name());
        (
            base.join(format!("{}.wasm", d.hex())),
            base.join(format!("{}.json", d.hex())),
        )
    }

    fn tag_path(&self, key: &str) -> PathBuf {
        self.dir
            .join("tags")
            .join(format!("{}.json", Digest::sha256_of(key.as_bytes()).hex()))
    }

    /// A stored module, verified against its record; a corrupt entry is removed.
    async fn load(&self, d: &Digest) -> Result<Option<Vec<u8>>, ClientError> {
        let (wasm_path, record_path) = self.entry_paths(d);
        let digest = d.clone();
        blocking(move || {
            let record = match fs::read(&record_path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(cache_err(&record_path, e)),
            };
            let wasm = match fs::read(&wasm_path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(%digest, "cached module missing its bytes; pulling again");
                    let _ = fs::remove_file(&record_path);
                    return Ok(None);
                }
                Err(e) => return Err(cache_err(&wasm_path, e)),
            };
            let sound = serde_json::from_slice::<ModuleRecord>(&record).is_ok_and(|rec| {
                rec.size == wasm.len() as u64
                    && rec.wasm_sha256 == Digest::sha256_of(&wasm).to_string()
            }) && artifact::check_wasm(&wasm, u64::MAX).is_ok();
            if !sound {
                tracing::warn!(%digest, path = %wasm_path.display(), "cached module is corrupt; discarding it and pulling again");
                let _ = fs::remove_file(&record_path);
                let _ = fs::remove_file(&wasm_path);
                return Ok(None);
            }
            Ok(Some(wasm))
        })
        .await
    }

    async fn remembered_key(&self, key: &str) -> Result<Option<Digest>, ClientError> {
        let path = self.tag_path(key);
        let key = key.to_string();
        blocking(move || {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(cache_err(&path, e)),
            };
            // A damaged or foreign record is as good as none.
            Ok(serde_json::from_slice::<TagRecord>(&bytes)
                .ok()
                .filter(|t| t.reference == key)
                .and_then(|t| t.digest.parse().ok()))
        })
        .await
    }

    async fn remember(&self, key: &str, d: &Digest) -> Result<(), ClientError> {
        let path = self.tag_path(key);
        let tmp = self.dir.join("tmp");
        let record = TagRecord {
            reference: key.to_string(),
            digest: d.to_string(),
        };
        blocking(move || {
            let bytes = serde_json::to_vec_pretty(&record).map_err(|e| cache_err(&path, e))?;
            write_atomic(&tmp, &path, &bytes)
        })
        .await
    }
}

fn check_pin(r: &ImageRef, pin: Option<&Digest>, actual: &Digest) -> Result<(), ClientError> {
    match pin {
        Some(p) if p != actual => Err(ClientError::PinMismatch {
            reference: r.to_string(),
            expected: p.to_string(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Writes `data` to a fresh file in `tmp`, fsyncs it, renames it to `dest` and fsyncs the
/// directory, so `dest` is either absent, the old content, or all of the new.
fn write_atomic(tmp: &Path, dest: &Path, data: &[u8]) -> Result<(), ClientError> {
    fs::create_dir_all(tmp).map_err(|e| cache_err(tmp, e))?;
    let parent = dest.parent().unwrap_or(tmp);
    fs::create_dir_all(parent).map_err(|e| cache_err(parent, e))?;
    let t = tmp.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    let res = (|| {
        let mut f = File::create(&t).map_err(|e| cache_err(&t, e))?;
        f.write_all(data).map_err(|e| cache_err(&t, e))?;
        f.sync_all().map_err(|e| cache_err(&t, e))?;
        drop(f);
        fs::rename(&t, dest).map_err(|e| cache_err(dest, e))?;
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| cache_err(parent, e))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&t);
    }
    res
}
