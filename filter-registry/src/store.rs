//! Content-addressed filesystem store.
//!
//! Layout under the root directory:
//! - `blobs/sha256/<hex>`, `blobs/sha512/<hex>`: blob and manifest bytes, named by digest;
//! - `repositories/<name>/_manifests/<alg>/<hex>`: a manifest link (file content = media type);
//! - `repositories/<name>/_tags/<tag>`: the digest the tag points at;
//! - `uploads/<uuid>`: in-progress uploads;
//! - `tmp/`: temporary files, renamed into place once complete.
//!
//! Repository data lives in `_manifests`/`_tags` (leading underscore) because a repository
//! name component can never start with `_`, so repository `a/manifests` cannot collide with
//! the data of repository `a`.
//!
//! Every name, tag, digest and upload id is validated before a path is built from it.
//! The store is synchronous (`std::fs`); async callers should use `spawn_blocking`.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// Errors from the store. Each maps onto an OCI distribution error code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    #[error("invalid tag {0:?}")]
    TagInvalid(String),
    #[error("invalid digest {0:?}")]
    DigestInvalid(String),
    #[error("digest mismatch: expected {expected}, content hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {0} unknown")]
    BlobUnknown(String),
    #[error("manifest {0} unknown")]
    ManifestUnknown(String),
    #[error("upload {0:?} unknown")]
    UploadUnknown(String),
    #[error("chunk starts at {got} but the upload holds {expected} bytes")]
    RangeInvalid { expected: u64, got: u64 },
    #[error("a blob may hold at most {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("blob {0} is used by a manifest: delete the manifests using it, then run gc")]
    BlobInUse(String),
    #[error("store I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The most a blob may hold, however many chunks it is uploaded in (Wasm filters are a few
/// MiB; this bounds what an upload session can fill the disk with).
pub const MAX_BLOB_SIZE: u64 = 512 * 1024 * 1024;

/// Digest algorithms the store accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest: `sha256:` + 64 lowercase hex, or `sha512:` + 128.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest {
    alg: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
    pub fn hex(&self) -> &str {
        &self.hex
    }
    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }
    /// The digest of `data` under `alg`.
    pub fn of(alg: Algorithm, data: &[u8]) -> Digest {
        let mut h = Hasher::new(alg);
        h.update(data);
        h.finish()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::DigestInvalid(s.chars().take(200).collect());
        let (alg, hex) = s.split_once(':').ok_or_else(bad)?;
        let alg = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(bad()),
        };
        if hex.len() != alg.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        Ok(Digest {
            alg,
            hex: hex.to_string(),
        })
    }
}

/// An incremental hasher for either algorithm.
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Hasher {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }
    pub fn finish(self) -> Digest {
        let (alg, bytes): (Algorithm, Vec<u8>) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest {
            alg,
            hex: to_hex(&bytes),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Checks a repository name against the OCI grammar
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, capped at 255 bytes.
pub fn validate_repo_name(name: &str) -> Result<(), StoreError> {
    let bad = || StoreError::NameInvalid(name.chars().take(300).collect());
    if name.is_empty() || name.len() > 255 {
        return Err(bad());
    }
    for comp in name.split('/') {
        if !valid_component(comp) {
            return Err(bad());
        }
    }
    Ok(())
}

fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    let mut i = 0;
    // [a-z0-9]+
    let start = i;
    while i < b.len() && alnum(b[i]) {
        i += 1;
    }
    if i == start {
        return false;
    }
    while i < b.len() {
        // separator: '.', '_', '__', or '-'+
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    true
}

/// Checks a tag against `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), StoreError> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::TagInvalid(tag.chars().take(200).collect()))
    }
}

fn validate_upload_id(id: &str) -> Result<uuid::Uuid, StoreError> {
    // Only the hyphenated lowercase form we hand out is accepted.
    match uuid::Uuid::parse_str(id) {
        Ok(u) if u.hyphenated().to_string() == id => Ok(u),
        _ => Err(StoreError::UploadUnknown(id.chars().take(100).collect())),
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            validate_tag(s)?;
            Ok(Reference::Tag(s.to_string()))
        }
    }
}

/// A stored manifest.
#[derive(Clone, Debug)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// The filesystem store. Cheap to clone; all state is on disk.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Store {
    /// Opens (creating if needed) a store rooted at `root`. Leftover temp files are removed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let store = Store::open_shared(root)?;
        // Leftovers of writes a crash interrupted: the server owns the store.
        let tmp = store.root.join("tmp");
        if let Ok(entries) = fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(store)
    }

    /// Opens the store beside a server that may be running on it (`registry gc`): its
    /// temporary files may be writes under way, so they are left alone.
    pub fn open_shared(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        for sub in [
            "blobs/sha256",
            "blobs/sha512",
            "repositories",
            "uploads",
            "tmp",
        ] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(d.alg.name()).join(&d.hex)
    }

    fn repo_dir(&self, name: &str) -> Result<PathBuf, StoreError> {
        validate_repo_name(name)?;
        Ok(self.root.join("repositories").join(name))
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Writes `data` to a temp file, fsyncs it, renames it to `dest` and fsyncs the directory.
    fn write_atomic(&self, dest: &Path, data: &[u8]) -> Result<(), StoreError> {
        let tmp = self.temp_path();
        let res = (|| {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(data).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            drop(f);
            self.rename_into(&tmp, dest)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    fn rename_into(&self, from: &Path, dest: &Path) -> Result<(), StoreError> {
        let parent = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        fs::rename(from, dest).map_err(io_err(dest))?;
        sync_dir(parent)
    }

    // ---- blobs ----

    /// Whether the blob exists; returns its size.
    pub fn blob_size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(d))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Reads a whole blob.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(d);
        match fs::read(&p) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobUnknown(d.to_string()))
            }
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Reads `len` bytes of a blob from `start`.
    pub fn read_blob_range(&self, d: &Digest, start: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let (mut f, _) = self.open_blob(d)?;
        let p = self.blob_path(d);
        f.seek(io::SeekFrom::Start(start)).map_err(io_err(&p))?;
        let mut data = Vec::new();
        f.take(len).read_to_end(&mut data).map_err(io_err(&p))?;
        Ok(data)
    }

    /// Opens a blob for streaming reads.
    pub fn open_blob(&self, d: &Digest) -> Result<(File, u64), StoreError> {
        let p = self.blob_path(d);
        match File::open(&p) {
            Ok(f) => {
                let len = f.metadata().map_err(io_err(&p))?.len();
                Ok((f, len))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobUnknown(d.to_string()))
            }
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Stores `data` as a blob if it hashes to `expected`; nothing is stored otherwise.
    /// Concurrent puts of the same blob are safe (each writes its own temp file; the renames
    /// replace identical content atomically).
    pub fn put_blob(&self, expected: &Digest, data: &[u8]) -> Result<(), StoreError> {
        let actual = Digest::of(expected.alg, data);
        if &actual != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        if self.blob_size(expected).is_some() {
            return Ok(());
        }
        self.write_atomic(&self.blob_path(expected), data)
    }

    /// Deletes a blob that no manifest uses. Blobs are shared by every repository (manifests
    /// are stored as blobs too), so one in use is refused ([`StoreError::BlobInUse`]): deleting
    /// it through any repository's name would break the manifests of others.
    pub fn delete_blob(&self, d: &Digest) -> Result<(), StoreError> {
        if self.in_use()?.contains(d) {
            return Err(StoreError::BlobInUse(d.to_string()));
        }
        let p = self.blob_path(d);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobUnknown(d.to_string()))
            }
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    // ---- uploads ----

    fn upload_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        validate_upload_id(id)?;
        Ok(self.root.join("uploads").join(id))
    }

    /// Starts an upload session; returns its id.
    pub fn start_upload(&self) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let p = self.root.join("uploads").join(&id);
        File::create(&p).map_err(io_err(&p))?;
        Ok(id)
    }

    /// The number of bytes received so far.
    pub fn upload_size(&self, id: &str) -> Result<u64, StoreError> {
        let p = self.upload_path(id)?;
        fs::metadata(&p)
            .map(|m| m.len())
            .map_err(|_| StoreError::UploadUnknown(id.to_string()))
    }

    /// Appends a chunk. With `offset`, the chunk must start exactly where the upload ends
    /// (else [`StoreError::RangeInvalid`]). Returns the new size.
    pub fn append_upload(
        &self,
        id: &str,
        offset: Option<u64>,
        data: &[u8],
    ) -> Result<u64, StoreError> {
        let p = self.upload_path(id)?;
        let mut f = OpenOptions::new()
            .append(true)
            .open(&p)
            .map_err(|_| StoreError::UploadUnknown(id.to_string()))?;
        let size = f.metadata().map_err(io_err(&p))?.len();
        if let Some(off) = offset
            && off != size
        {
            return Err(StoreError::RangeInvalid {
                expected: size,
                got: off,
            });
        }
        if size + data.len() as u64 > MAX_BLOB_SIZE {
            return Err(StoreError::TooLarge {
                limit: MAX_BLOB_SIZE,
            });
        }
        if let Err(e) = f.write_all(data) {
            // A chunk is all or nothing: cut off what part of it went in (a full disk, say),
            // so the upload stays at the offset a client retries from, and the space is freed.
            let _ = f.set_len(size);
            return Err(io_err(&p)(e));
        }
        Ok(size + data.len() as u64)
    }

    /// Cancels an upload.
    pub fn cancel_upload(&self, id: &str) -> Result<(), StoreError> {
        let p = self.upload_path(id)?;
        fs::remove_file(&p).map_err(|_| StoreError::UploadUnknown(id.to_string()))
    }

    /// Completes an upload: appends `last` (may be empty), verifies the whole content hashes to
    /// `expected`, and only then moves it into `blobs/`. On a mismatch the upload is discarded
    /// and nothing is stored.
    pub fn finish_upload(
        &self,
        id: &str,
        expected: &Digest,
        offset: Option<u64>,
        last: &[u8],
    ) -> Result<u64, StoreError> {
        let p = self.upload_path(id)?;
        if !last.is_empty() {
            self.append_upload(id, offset, last)?;
        }
        // Move the upload out of `uploads/` first so no new request can open it, then copy it
        // while hashing into a fresh temp file: a PATCH that opened the upload just before the
        // rename can only write into the discarded source, never into the verified copy.
        let src = self.temp_path();
        fs::rename(&p, &src).map_err(|_| StoreError::UploadUnknown(id.to_string()))?;
        let dst = self.temp_path();
        let res = (|| {
            let mut f = File::open(&src).map_err(io_err(&src))?;
            let mut out = File::create(&dst).map_err(io_err(&dst))?;
            let mut h = Hasher::new(expected.alg);
            let mut buf = vec![0u8; 64 * 1024];
            let mut len = 0u64;
            loop {
                let n = f.read(&mut buf).map_err(io_err(&src))?;
                if n == 0 {
                    break;
                }
                len += n as u64;
                h.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io_err(&dst))?;
            }
            let actual = h.finish();
            if &actual != expected {
                return Err(StoreError::DigestMismatch {
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
            out.sync_all().map_err(io_err(&dst))?;
            drop(out);
            self.rename_into(&dst, &self.blob_path(expected))?;
            Ok(len)
        })();
        let _ = fs::remove_file(&src);
        if res.is_err() {
            let _ = fs::remove_file(&dst);
        }
        res
    }

    // ---- manifests and tags ----

    fn link_path(&self, repo: &str, d: &Digest) -> Result<PathBuf, StoreError> {
        Ok(self
            .repo_dir(repo)?
            .join("_manifests")
            .join(d.alg.name())
            .join(&d.hex))
    }

    fn tag_path(&self, repo: &str, tag: &str) -> Result<PathBuf, StoreError> {
        validate_tag(tag)?;
        Ok(self.repo_dir(repo)?.join("_tags").join(tag))
    }

    /// Stores manifest bytes exactly as given, links them into `repo`, and points the tag at
    /// them when `reference` is a tag. When `reference` is a digest the bytes must hash to it.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, StoreError> {
        validate_repo_name(repo)?;
        let digest = match reference {
            Reference::Digest(d) => {
                self.put_blob(d, bytes)?;
                d.clone()
            }
            Reference::Tag(_) => {
                let d = Digest::sha256_of(bytes);
                self.put_blob(&d, bytes)?;
                d
            }
        };
        self.write_atomic(&self.link_path(repo, &digest)?, media_type.as_bytes())?;
        if let Reference::Tag(t) = reference {
            self.write_atomic(&self.tag_path(repo, t)?, digest.to_string().as_bytes())?;
        }
        Ok(digest)
    }

    /// Resolves a reference in `repo` to a manifest digest.
    pub fn resolve(&self, repo: &str, reference: &Reference) -> Result<Digest, StoreError> {
        match reference {
            Reference::Digest(d) => {
                let link = self.link_path(repo, d)?;
                if link.is_file() {
                    Ok(d.clone())
                } else {
                    Err(StoreError::ManifestUnknown(d.to_string()))
                }
            }
            Reference::Tag(t) => {
                let p = self.tag_path(repo, t)?;
                let s =
                    fs::read_to_string(&p).map_err(|_| StoreError::ManifestUnknown(t.clone()))?;
                let d: Digest = s.trim().parse()?;
                if self.link_path(repo, &d)?.is_file() {
                    Ok(d)
                } else {
                    Err(StoreError::ManifestUnknown(t.clone()))
                }
            }
        }
    }

    /// Reads a manifest by tag or digest.
    pub fn get_manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<StoredManifest, StoreError> {
        let digest = self.resolve(repo, reference)?;
        let link = self.link_path(repo, &digest)?;
        let media_type = fs::read_to_string(&link).map_err(io_err(&link))?;
        let bytes = self
            .read_blob(&digest)
            .map_err(|_| StoreError::ManifestUnknown(digest.to_string()))?;
        Ok(StoredManifest {
            digest,
            media_type,
            bytes,
        })
    }

    /// Deletes a tag (the manifest stays).
    pub fn delete_tag(&self, repo: &str, tag: &str) -> Result<(), StoreError> {
        let p = self.tag_path(repo, tag)?;
        fs::remove_file(&p).map_err(|_| StoreError::ManifestUnknown(tag.to_string()))?;
        if let Some(parent) = p.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Deletes a manifest from `repo`, with every tag of `repo` pointing at it. The bytes stay in
    /// `blobs/` until [`Store::gc`].
    pub fn delete_manifest(&self, repo: &str, d: &Digest) -> Result<(), StoreError> {
        let link = self.link_path(repo, d)?;
        fs::remove_file(&link).map_err(|_| StoreError::ManifestUnknown(d.to_string()))?;
        let want = d.to_string();
        for tag in self.list_tags(repo)? {
            let p = self.tag_path(repo, &tag)?;
            if fs::read_to_string(&p)
                .map(|s| s.trim() == want)
                .unwrap_or(false)
            {
                let _ = fs::remove_file(&p);
            }
        }
        Ok(())
    }

    /// The tags of `repo`, sorted. An unknown repository has no tags.
    pub fn list_tags(&self, repo: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.repo_dir(repo)?.join("_tags");
        let mut tags = Vec::new();
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                if let Some(n) = e.file_name().to_str()
                    && validate_tag(n).is_ok()
                {
                    tags.push(n.to_string());
                }
            }
        }
        tags.sort();
        Ok(tags)
    }

    /// Whether `repo` has ever had a manifest pushed.
    pub fn repo_exists(&self, repo: &str) -> Result<bool, StoreError> {
        Ok(self.repo_dir(repo)?.join("_manifests").is_dir())
    }

    /// All manifest digests linked into `repo`.
    pub fn list_manifests(&self, repo: &str) -> Result<Vec<Digest>, StoreError> {
        let dir = self.repo_dir(repo)?.join("_manifests");
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            if let Ok(entries) = fs::read_dir(dir.join(alg.name())) {
                for e in entries.flatten() {
                    if let Some(n) = e.file_name().to_str()
                        && let Ok(d) = format!("{}:{n}", alg.name()).parse::<Digest>()
                    {
                        out.push(d);
                    }
                }
            }
        }
        Ok(out)
    }

    /// All repository names in the store.
    pub fn list_repositories(&self) -> Vec<String> {
        let mut out = Vec::new();
        let base = self.root.join("repositories");
        let mut stack = vec![(base.clone(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let Some(n) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if n.starts_with('_') || !e.path().is_dir() {
                    continue;
                }
                let name = if prefix.is_empty() {
                    n
                } else {
                    format!("{prefix}/{n}")
                };
                if validate_repo_name(&name).is_err() {
                    continue;
                }
                if e.path().join("_manifests").is_dir() {
                    out.push(name.clone());
                }
                stack.push((e.path(), name));
            }
        }
        out.sort();
        out
    }

    /// Removes every blob that nothing references, with no age bound (see [`Store::gc_with`]).
    /// Blobs pushed but not yet referenced by a manifest are removed too, so do not run this
    /// while pushes are in flight. Returns the digests removed.
    pub fn gc(&self) -> Result<Vec<Digest>, StoreError> {
        Ok(self.gc_with(&GcOptions::default())?.removed)
    }

    /// Every manifest linked in any repository and, transitively, everything those reference:
    /// config, layers, index entries, referrers' subjects.
    fn in_use(&self) -> Result<HashSet<Digest>, StoreError> {
        let mut keep: HashSet<Digest> = HashSet::new();
        let mut read: HashSet<Digest> = HashSet::new();
        // Only manifests are read (linked ones, an index's entries, subjects); what they
        // reference otherwise (configs, layers) is kept without being read.
        let mut manifests: Vec<Digest> = Vec::new();
        for repo in self.list_repositories() {
            manifests.extend(self.list_manifests(&repo)?);
        }
        while let Some(d) = manifests.pop() {
            if !read.insert(d.clone()) {
                continue;
            }
            keep.insert(d.clone());
            if self.blob_size(&d).is_some_and(|s| s <= GC_SCAN_LIMIT)
                && let Ok(bytes) = self.read_blob(&d)
            {
                keep.extend(referenced_digests(&bytes));
                manifests.extend(child_manifests(&bytes));
                manifests.extend(subject_digest(&bytes));
            }
        }
        Ok(keep)
    }

    /// Points `tag` of `repo` at the manifest `d`, which must be linked in `repo`.
    pub fn set_tag(&self, repo: &str, tag: &str, d: &Digest) -> Result<(), StoreError> {
        if !self.link_path(repo, d)?.is_file() {
            return Err(StoreError::ManifestUnknown(d.to_string()));
        }
        self.write_atomic(&self.tag_path(repo, tag)?, d.to_string().as_bytes())
    }

    /// Garbage collection. Keeps every manifest linked in any repository and, transitively,
    /// everything those reference — config, layers, index entries, and referrers' subjects —
    /// and removes the other blobs older than `min_age`, and upload sessions idle longer than
    /// `min_age`. The age bound spares pushes in flight (blobs uploaded before their
    /// manifest). With `dry_run`, reports without removing.
    pub fn gc_with(&self, opts: &GcOptions) -> Result<GcReport, StoreError> {
        let keep = self.in_use()?;
        let now = std::time::SystemTime::now();
        let old_enough = |meta: &fs::Metadata| {
            meta.modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= opts.min_age)
                || opts.min_age.is_zero()
        };
        let mut report = GcReport::default();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join("blobs").join(alg.name());
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let Some(n) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let Ok(d) = format!("{}:{n}", alg.name()).parse::<Digest>() else {
                    continue;
                };
                if keep.contains(&d) {
                    report.kept += 1;
                    continue;
                }
                let meta = e.metadata().map_err(io_err(&e.path()))?;
                if !old_enough(&meta) {
                    report.kept_young += 1;
                    continue;
                }
                if !opts.dry_run {
                    fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
                    tracing::debug!(digest = %d, "gc removed blob");
                }
                report.removed_bytes += meta.len();
                report.removed.push(d);
            }
        }
        let uploads = self.root.join("uploads");
        if let Ok(entries) = fs::read_dir(&uploads) {
            for e in entries.flatten() {
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_file() && old_enough(&meta) {
                    if !opts.dry_run {
                        fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
                    }
                    report.uploads_removed += 1;
                }
            }
        }
        report.removed.sort_by_key(|d| d.to_string());
        Ok(report)
    }
}

/// Blobs larger than this are never manifests (the server refuses manifests over 4 MiB).
const GC_SCAN_LIMIT: u64 = 4 * 1024 * 1024;

/// Options for [`Store::gc_with`].
#[derive(Clone, Debug, Default)]
pub struct GcOptions {
    /// Unreferenced blobs (and upload sessions) younger than this are kept.
    pub min_age: std::time::Duration,
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
}

/// What a garbage collection did (or, dry, would do).
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    pub removed: Vec<Digest>,
    pub removed_bytes: u64,
    /// Blobs kept because something references them.
    pub kept: usize,
    /// Unreferenced blobs kept because they are younger than the age bound.
    pub kept_young: usize,
    pub uploads_removed: usize,
}

/// The digest of a manifest's `subject`, if it has one.
pub fn subject_digest(manifest: &[u8]) -> Option<Digest> {
    serde_json::from_slice::<serde_json::Value>(manifest)
        .ok()?
        .get("subject")?
        .get("digest")?
        .as_str()?
        .parse()
        .ok()
}

/// The manifests an index lists (`manifests[]`): garbage collection reads them in turn.
fn child_manifests(manifest: &[u8]) -> Vec<Digest> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(manifest) else {
        return Vec::new();
    };
    v.get("manifests")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter_map(|desc| desc.get("digest")?.as_str()?.parse().ok())
        .collect()
}

/// The digests a manifest or index references: `config`, `layers[]`, `manifests[]`, `blobs[]`.
/// (`subject` is not included: a manifest may name a subject the registry does not hold yet;
/// garbage collection keeps subjects through [`subject_digest`].)
pub fn referenced_digests(manifest: &[u8]) -> Vec<Digest> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(manifest) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut take = |desc: &serde_json::Value| {
        if let Some(d) = desc.get("digest").and_then(|d| d.as_str())
            && let Ok(d) = d.parse()
        {
            out.push(d);
        }
    };
    if let Some(c) = v.get("config") {
        take(c);
    }
    for key in ["layers", "manifests", "blobs"] {
        if let Some(arr) = v.get(key).and_then(|a| a.as_array()) {
            arr.iter().for_each(&mut take);
        }
    }
    out
}
