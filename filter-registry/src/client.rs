//! OCI client for Wasm filter artifacts: [`Client`] pushes the CNCF layout and pulls every
//! layout in [`crate::format`], from any OCI registry, verifying every digest as it streams.
//!
//! - Transport ([`crate::transport`]): HTTPS with rustls (Mozilla roots plus an optional CA
//!   file); plain HTTP for loopback hosts and the `insecure` list; one pooled hyper client,
//!   shared by clones of a [`Client`].
//! - Auth ([`crate::auth`]): a static token as `Bearer`, or Docker `config.json` credentials;
//!   on `401` with a `Bearer realm=…` challenge the client asks the realm for a token (with
//!   Basic credentials, or an identity token as OAuth2 refresh token, or anonymously), retries
//!   once, and caches the token per (registry, scope) until it expires. Realms are checked
//!   first (SSRF guard). On a `Basic` challenge it retries once with Basic credentials.
//! - Verification: the manifest against the pinned digest (else the registry's
//!   `Docker-Content-Digest`), every blob against its descriptor (digest and size) while it
//!   streams, size caps before and during transfer, the Wasm magic number at the end.
//!
//! The free functions ([`push`], [`resolve`], [`fetch_manifest`], [`pull`], [`list_tags`]) are
//! the first API, kept as thin wrappers: each builds a one-off client.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::artifact::{self, ArtifactError};
use crate::auth::{self, Challenge, TokenCache, TokenResponse};
use crate::format::{self, Parsed};
use crate::store::{Digest, Hasher, StoreError};
use crate::tls;
use crate::transport::{Outgoing, Reply, Target, Transport};

pub use crate::auth::Credentials;
pub use crate::format::ArtifactFormat;
pub use crate::reference::ImageRef;
pub use crate::transport::Progress;

/// Manifests larger than this are refused on pull.
const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// Bound on small JSON answers (tag lists, token responses, upload replies).
const MAX_SMALL: usize = 4 * 1024 * 1024;
/// Blob downloads may be redirected (to object storage) this many times.
const MAX_REDIRECTS: usize = 5;
/// Default bound on one HTTP request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid reference {0:?}: {1}")]
    Reference(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("client configuration: {0}")]
    Config(String),
    #[error("HTTP request to {url} failed: {cause}")]
    Http { url: String, cause: String },
    #[error("{url}: no answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: not authorized ({status}): {detail}")]
    Unauthorized {
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error("refusing token realm {realm:?}: {reason}")]
    Realm { realm: String, reason: String },
    #[error("{what} not found at {url}")]
    NotFound { what: String, url: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{reference} has manifest digest {actual}, but {expected} is pinned")]
    PinMismatch {
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("registry response lacks {0}")]
    MissingHeader(&'static str),
    #[error("module cache {path}: {cause}")]
    Cache { path: String, cause: String },
}

impl ClientError {
    /// Whether the registry said the manifest or blob does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::NotFound { .. })
    }
}

/// How a [`Client`] reaches registries.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Registries reached over plain HTTP: "host" or "host:port" entries, "*" for all.
    /// Loopback hosts (localhost, 127.0.0.0/8, [::1]) are plain HTTP by default, as Docker
    /// does (a loopback registry found to speak TLS is then used over verified HTTPS).
    pub insecure: Vec<String>,
    /// Extra PEM trust roots besides the Mozilla (webpki-roots) set.
    pub ca_file: Option<PathBuf>,
    pub credentials: Credentials,
    /// Bound on each HTTP request until its response head (plus a second per MiB of request
    /// body), and on each read of a response body (so a large download is not cut off while it
    /// makes progress).
    pub timeout: Duration,
    /// The largest module (and layer) a pull accepts.
    pub max_module_size: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            insecure: Vec::new(),
            ca_file: None,
            credentials: Credentials::None,
            timeout: DEFAULT_TIMEOUT,
            max_module_size: artifact::DEFAULT_MAX_WASM_SIZE,
        }
    }
}

/// A pulled module.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The digest of the manifest the reference names (an index's, when it names an index):
    /// what a pin is compared with.
    pub manifest_digest: Digest,
    pub wasm: Vec<u8>,
    pub format: ArtifactFormat,
}

/// Manifest bytes as served, verified against their digest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Pull,
    Push,
}

/// The token scope a request on `repo` needs (and the key its token is cached under).
fn scope(repo: &str, access: Access) -> String {
    match access {
        Access::Pull => format!("repository:{repo}:pull"),
        Access::Push => format!("repository:{repo}:pull,push"),
    }
}

struct Inner {
    transport: Transport,
    credentials: Credentials,
    tokens: TokenCache,
    /// Registries that asked for Basic credentials: sent them up front from then on.
    basic_hosts: Mutex<HashSet<String>>,
    max_module_size: u64,
}

/// An OCI registry client. Clones share one connection pool, token cache and settings.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k.clone(), v);
        }
    }
    h
}

async fn status_error(method: Method, reply: &mut Reply) -> ClientError {
    let body = reply.snippet().await;
    ClientError::Status {
        method,
        url: reply.url.clone(),
        status: reply.status,
        body,
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let tls = tls::client_config(config.ca_file.as_deref())
            .map_err(|e| ClientError::Config(e.to_string()))?;
        if config.timeout.is_zero() {
            return Err(ClientError::Config("timeout must be above zero".into()));
        }
        Ok(Client {
            inner: Arc::new(Inner {
                transport: Transport::new(tls, config.insecure, config.timeout),
                credentials: config.credentials,
                tokens: TokenCache::default(),
                basic_hosts: Mutex::new(HashSet::new()),
                max_module_size: config.max_module_size,
            }),
        })
    }

    /// The largest module a pull accepts.
    pub fn max_module_size(&self) -> u64 {
        self.inner.max_module_size
    }

    /// Whether `host` is reached over plain HTTP first (loopback or the `insecure` list).
    pub fn plain_allowed(&self, host: &str) -> bool {
        self.inner.transport.plain_allowed(host)
    }

    // ---- auth ----

    fn docker_entry(&self, host: &str) -> Option<&auth::AuthEntry> {
        match &self.inner.credentials {
            Credentials::DockerConfig(c) => c.entry(host),
            _ => None,
        }
    }

    fn authorization(&self, host: &str, scope: &str) -> Option<String> {
        if let Some(t) = self.inner.tokens.get(host, scope) {
            return Some(format!("Bearer {t}"));
        }
        match &self.inner.credentials {
            Credentials::None => None,
            Credentials::Token(t) => Some(format!("Bearer {t}")),
            Credentials::DockerConfig(_) => {
                let entry = self.docker_entry(host)?;
                let basic_wanted = self
                    .inner
                    .basic_hosts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(host);
                if basic_wanted && let Some(b) = entry.basic() {
                    return Some(format!("Basic {b}"));
                }
                entry.registry_token.as_ref().map(|t| format!("Bearer {t}"))
            }
        }
    }

    /// Sends `out`; on a registry target, with credentials, and through one auth challenge.
    /// A request to an absolute URL on another host (a redirect) carries no credentials.
    async fn send(&self, mut out: Outgoing, scope_key: &str) -> Result<Reply, ClientError> {
        let host = match &out.target {
            Target::Registry { host, .. } => host.clone(),
            Target::Url(_) => return self.inner.transport.send(&out).await,
        };
        let sent_auth = self.authorization(&host, scope_key);
        if let Some(a) = &sent_auth
            && let Ok(v) = HeaderValue::from_str(a)
        {
            out.headers.insert(header::AUTHORIZATION, v);
        }
        let mut reply = self.inner.transport.send(&out).await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return Ok(reply);
        }
        let challenges = auth::parse_challenges(
            reply
                .headers
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let first_detail = reply.snippet().await;
        let retry_auth = if let Some(bearer) = challenges
            .iter()
            .find(|c| c.scheme == "bearer" && c.params.contains_key("realm"))
        {
            self.inner.tokens.forget(&host, scope_key);
            let token = self.fetch_token(&host, bearer, scope_key).await?;
            format!("Bearer {token}")
        } else if challenges.iter().any(|c| c.scheme == "basic")
            && let Some(basic) = self.docker_entry(&host).and_then(|e| e.basic())
            && !sent_auth
                .as_deref()
                .is_some_and(|a| a.starts_with("Basic "))
        {
            self.inner
                .basic_hosts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(host.clone());
            format!("Basic {basic}")
        } else {
            return Err(ClientError::Unauthorized {
                url: reply.url.clone(),
                status: reply.status,
                detail: first_detail,
            });
        };
        let v = HeaderValue::from_str(&retry_auth).map_err(|_| ClientError::Unauthorized {
            url: reply.url.clone(),
            status: reply.status,
            detail: "the token service issued a token that is not a valid header value".into(),
        })?;
        out.headers.insert(header::AUTHORIZATION, v);
        let mut reply = self.inner.transport.send(&out).await?;
        if matches!(
            reply.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            self.inner.tokens.forget(&host, scope_key);
            let detail = reply.snippet().await;
            return Err(ClientError::Unauthorized {
                url: reply.url.clone(),
                status: reply.status,
                detail,
            });
        }
        Ok(reply)
    }

    /// The token-service flow: asks the challenge's realm for a token for its scope.
    async fn fetch_token(
        &self,
        host: &str,
        challenge: &Challenge,
        scope_key: &str,
    ) -> Result<String, ClientError> {
        let transport = &self.inner.transport;
        let realm = challenge
            .params
            .get("realm")
            .map(String::as_str)
            .unwrap_or("");
        let realm = auth::check_realm(realm, host, |a| transport.plain_allowed(a))?;
        let service = challenge.params.get("service").cloned();
        let scope = challenge
            .params
            .get("scope")
            .cloned()
            .or_else(|| (!scope_key.is_empty()).then(|| scope_key.to_string()));
        let entry = self.docker_entry(host);
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &service {
            params.push(("service", s.clone()));
        }
        for s in scope
            .iter()
            .flat_map(|s| s.split(' '))
            .filter(|s| !s.is_empty())
        {
            params.push(("scope", s.to_string()));
        }
        let encoded = |params: &[(&str, String)]| {
            params
                .iter()
                .map(|(k, v)| format!("{k}={}", query_escape(v)))
                .collect::<Vec<_>>()
                .join("&")
        };
        let out = if let Some(refresh) = entry.and_then(|e| e.identity_token.clone()) {
            // Docker's identity token is an OAuth2 refresh token.
            params.push(("grant_type", "refresh_token".into()));
            params.push(("client_id", "wasmesh".into()));
            params.push(("refresh_token", refresh));
            Outgoing {
                method: Method::POST,
                target: Target::Url(realm.clone()),
                headers: headers(&[(header::CONTENT_TYPE, "application/x-www-form-urlencoded")]),
                body: Bytes::from(encoded(&params)),
                progress: None,
            }
        } else {
            let sep = if realm.query().is_some() { '&' } else { '?' };
            let url = if params.is_empty() {
                realm.to_string()
            } else {
                format!("{realm}{sep}{}", encoded(&params))
            };
            let uri: http::Uri = url.parse().map_err(|_| ClientError::Realm {
                realm: realm.to_string(),
                reason: "cannot add the query".into(),
            })?;
            let mut h = headers(&[(header::ACCEPT, "application/json")]);
            if let Some(b) = entry.and_then(|e| e.basic())
                && let Ok(v) = HeaderValue::from_str(&format!("Basic {b}"))
            {
                h.insert(header::AUTHORIZATION, v);
            }
            Outgoing {
                method: Method::GET,
                target: Target::Url(uri),
                headers: h,
                body: Bytes::new(),
                progress: None,
            }
        };
        let method = out.method.clone();
        let mut reply = transport.send(&out).await?;
        if matches!(
            reply.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            let detail = reply.snippet().await;
            return Err(ClientError::Unauthorized {
                url: reply.url.clone(),
                status: reply.status,
                detail: format!("token service refused: {detail}"),
            });
        }
        if reply.status != StatusCode::OK {
            return Err(status_error(method, &mut reply).await);
        }
        let body = reply.read(MAX_SMALL).await?;
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| ClientError::Http {
            url: reply.url.clone(),
            cause: format!("token service answer is not JSON: {e}"),
        })?;
        let token = t
            .token
            .filter(|t| !t.is_empty())
            .or(t.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| ClientError::Http {
                url: reply.url.clone(),
                cause: "token service answer has no token".into(),
            })?;
        self.inner
            .tokens
            .put(host, scope_key, token.clone(), t.expires_in);
        Ok(token)
    }

    /// Turns a `Location` (absolute or relative) into a target. An absolute URL on the
    /// registry's own host stays a registry target (credentials, scheme per host); one on
    /// another host must be HTTPS unless that host is allowed plain HTTP.
    fn location(&self, host: &str, loc: &str) -> Result<Target, ClientError> {
        if loc.starts_with('/') {
            return Ok(Target::Registry {
                host: host.to_string(),
                path: loc.to_string(),
            });
        }
        let bad = |why: &str| ClientError::Http {
            url: loc.chars().take(300).collect(),
            cause: why.to_string(),
        };
        let uri: http::Uri = loc.parse().map_err(|_| bad("Location is not a URL"))?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| bad("Location has no host"))?;
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        if authority.eq_ignore_ascii_case(host) {
            return Ok(Target::Registry {
                host: host.to_string(),
                path,
            });
        }
        match uri.scheme_str() {
            Some("https") => Ok(Target::Url(uri)),
            Some("http") if self.plain_allowed(&authority) => Ok(Target::Url(uri)),
            _ => Err(bad("redirect to a plain-HTTP or non-HTTP URL refused")),
        }
    }

    fn registry(r: &ImageRef, path: String) -> Target {
        Target::Registry {
            host: r.host.clone(),
            path,
        }
    }

    // ---- pull ----

    /// The manifest digest `r` names now: HEAD on the manifest, falling back to GET (and
    /// hashing the bytes) when the registry gives no `Docker-Content-Digest` on HEAD.
    pub async fn resolve(&self, r: &ImageRef) -> Result<Digest, ClientError> {
        let path = format!("/v2/{}/manifests/{}", r.repo, r.reference());
        let out = Outgoing {
            method: Method::HEAD,
            target: Client::registry(r, path),
            headers: headers(&[(header::ACCEPT, format::MANIFEST_ACCEPT)]),
            body: Bytes::new(),
            progress: None,
        };
        let mut reply = self.send(out, &scope(&r.repo, Access::Pull)).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(ClientError::NotFound {
                what: format!("manifest {r}"),
                url: reply.url.clone(),
            });
        }
        if reply.status == StatusCode::OK
            && let Some(d) = reply
                .header("docker-content-digest")
                .and_then(|d| d.parse::<Digest>().ok())
        {
            if let Some(pinned) = &r.digest
                && *pinned != d
            {
                return Err(ClientError::DigestMismatch {
                    what: format!("manifest of {r}"),
                    expected: pinned.to_string(),
                    actual: d.to_string(),
                });
            }
            return Ok(d);
        }
        if reply.status != StatusCode::OK && reply.status != StatusCode::METHOD_NOT_ALLOWED {
            return Err(status_error(Method::HEAD, &mut reply).await);
        }
        Ok(self.fetch_manifest(r).await?.digest)
    }

    /// Fetches the manifest `r` names, verified against the pinned digest (else against
    /// `Docker-Content-Digest`, when the registry sends one).
    pub async fn fetch_manifest(&self, r: &ImageRef) -> Result<Manifest, ClientError> {
        self.get_manifest(r, &r.reference(), r.digest.as_ref())
            .await
    }

    async fn get_manifest(
        &self,
        r: &ImageRef,
        reference: &str,
        pinned: Option<&Digest>,
    ) -> Result<Manifest, ClientError> {
        let out = Outgoing {
            method: Method::GET,
            target: Client::registry(r, format!("/v2/{}/manifests/{reference}", r.repo)),
            headers: headers(&[(header::ACCEPT, format::MANIFEST_ACCEPT)]),
            body: Bytes::new(),
            progress: None,
        };
        let mut reply = self.send(out, &scope(&r.repo, Access::Pull)).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(ClientError::NotFound {
                what: format!("manifest {}/{}:{reference}", r.host, r.repo),
                url: reply.url.clone(),
            });
        }
        if reply.status != StatusCode::OK {
            return Err(status_error(Method::GET, &mut reply).await);
        }
        let announced: Option<Digest> = reply
            .header("docker-content-digest")
            .and_then(|d| d.parse().ok());
        let media_type = reply
            .header("content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let bytes = reply.read(MAX_MANIFEST).await?;
        let expected = pinned.cloned().or(announced);
        let actual = match &expected {
            Some(e) => Digest::of(e.algorithm(), &bytes),
            None => Digest::sha256_of(&bytes),
        };
        if let Some(e) = expected
            && e != actual
        {
            return Err(ClientError::DigestMismatch {
                what: format!("manifest {}/{}:{reference}", r.host, r.repo),
                expected: e.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(Manifest {
            digest: actual,
            media_type,
            bytes,
        })
    }

    /// Downloads a blob, following redirects, checking its size and digest as it streams.
    async fn fetch_blob(
        &self,
        r: &ImageRef,
        digest: &Digest,
        size: u64,
        progress: Option<&Progress>,
    ) -> Result<Vec<u8>, ClientError> {
        let what = format!("blob {digest} of {r}");
        let mut target = Client::registry(r, format!("/v2/{}/blobs/{digest}", r.repo));
        for _ in 0..=MAX_REDIRECTS {
            let out = Outgoing {
                method: Method::GET,
                target: target.clone(),
                headers: HeaderMap::new(),
                body: Bytes::new(),
                progress: None,
            };
            let mut reply = self.send(out, &scope(&r.repo, Access::Pull)).await?;
            if reply.status.is_redirection() {
                let loc = reply
                    .header("location")
                    .ok_or(ClientError::MissingHeader("Location on a redirect"))?
                    .to_string();
                target = self.location(&r.host, &loc)?;
                continue;
            }
            if reply.status == StatusCode::NOT_FOUND {
                return Err(ClientError::NotFound {
                    what,
                    url: reply.url.clone(),
                });
            }
            if reply.status != StatusCode::OK {
                return Err(status_error(Method::GET, &mut reply).await);
            }
            if let Some(announced) = reply
                .header("content-length")
                .and_then(|l| l.parse::<u64>().ok())
                && announced != size
            {
                return Err(ClientError::SizeMismatch {
                    what,
                    expected: size,
                    actual: announced,
                });
            }
            let mut hasher = Hasher::new(digest.algorithm());
            let mut data = Vec::with_capacity(size.min(self.inner.max_module_size) as usize);
            while let Some(chunk) = reply.chunk().await? {
                if (data.len() + chunk.len()) as u64 > size {
                    return Err(ClientError::SizeMismatch {
                        what,
                        expected: size,
                        actual: (data.len() + chunk.len()) as u64,
                    });
                }
                hasher.update(&chunk);
                data.extend_from_slice(&chunk);
                if let Some(p) = progress {
                    p(data.len() as u64, size);
                }
            }
            if data.len() as u64 != size {
                return Err(ClientError::SizeMismatch {
                    what,
                    expected: size,
                    actual: data.len() as u64,
                });
            }
            let actual = hasher.finish();
            if actual != *digest {
                return Err(ClientError::DigestMismatch {
                    what,
                    expected: digest.to_string(),
                    actual: actual.to_string(),
                });
            }
            return Ok(data);
        }
        Err(ClientError::Http {
            url: format!("{}/v2/{}/blobs/{digest}", r.host, r.repo),
            cause: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Pulls the module `r` names, in whichever format it was published.
    pub async fn pull(&self, r: &ImageRef) -> Result<Pulled, ClientError> {
        self.pull_with_progress(r, None).await
    }

    /// [`Client::pull`], telling `progress` how the module's layer download goes.
    pub async fn pull_with_progress(
        &self,
        r: &ImageRef,
        progress: Option<Progress>,
    ) -> Result<Pulled, ClientError> {
        let top = self.fetch_manifest(r).await?;
        let manifest = match format::parse(&top.bytes, Some(&top.media_type))? {
            Parsed::Image(m) => m,
            Parsed::Index(entries) => {
                let entry = format::choose_index_entry(&entries)?;
                let d: Digest = entry.digest.parse()?;
                if entry.size > MAX_MANIFEST as u64 {
                    return Err(ArtifactError::ManifestInvalid(format!(
                        "index entry {d} is {} bytes, over the {MAX_MANIFEST}-byte manifest cap",
                        entry.size
                    ))
                    .into());
                }
                let child = self.get_manifest(r, &d.to_string(), Some(&d)).await?;
                if child.bytes.len() as u64 != entry.size {
                    return Err(ClientError::SizeMismatch {
                        what: format!("manifest {d} listed in the index of {r}"),
                        expected: entry.size,
                        actual: child.bytes.len() as u64,
                    });
                }
                match format::parse(&child.bytes, Some(&child.media_type))? {
                    Parsed::Image(m) => m,
                    Parsed::Index(_) => {
                        return Err(ArtifactError::ManifestInvalid(format!(
                            "index entry {d} is itself an index"
                        ))
                        .into());
                    }
                }
            }
        };
        let (format, layer) = format::select_layer(&manifest)?;
        let max = self.inner.max_module_size;
        if layer.size > max {
            return Err(ArtifactError::TooLarge {
                size: layer.size,
                max,
            }
            .into());
        }
        let layer_digest: Digest = layer.digest.parse()?;
        let blob = self
            .fetch_blob(r, &layer_digest, layer.size, progress.as_ref())
            .await?;
        let wasm = if format.is_compressed() {
            tokio::task::spawn_blocking(move || format::extract_plugin_wasm(&blob, max))
                .await
                .map_err(|e| ArtifactError::Compat(format!("extraction task failed: {e}")))??
        } else {
            blob
        };
        artifact::check_wasm(&wasm, max)?;
        Ok(Pulled {
            manifest_digest: top.digest,
            wasm,
            format,
        })
    }

    /// Lists the tags of `r`'s repository (following `Link` pagination).
    pub async fn list_tags(&self, r: &ImageRef) -> Result<Vec<String>, ClientError> {
        let mut target = Client::registry(r, format!("/v2/{}/tags/list", r.repo));
        let mut tags = Vec::new();
        // Bounded so a registry that keeps sending `Link` cannot loop us forever.
        for _ in 0..10_000 {
            let out = Outgoing {
                method: Method::GET,
                target: target.clone(),
                headers: headers(&[(header::ACCEPT, "application/json")]),
                body: Bytes::new(),
                progress: None,
            };
            let mut reply = self.send(out, &scope(&r.repo, Access::Pull)).await?;
            if reply.status == StatusCode::NOT_FOUND {
                return Err(ClientError::NotFound {
                    what: format!("repository {}/{}", r.host, r.repo),
                    url: reply.url.clone(),
                });
            }
            if reply.status != StatusCode::OK {
                return Err(status_error(Method::GET, &mut reply).await);
            }
            let next = reply
                .header("link")
                .and_then(|l| l.split_once('<'))
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(u, _)| u.to_string());
            let body = reply.read(MAX_SMALL).await?;
            let v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| ClientError::Http {
                    url: reply.url.clone(),
                    cause: format!("bad tag list JSON: {e}"),
                })?;
            if let Some(arr) = v.get("tags").and_then(|t| t.as_array()) {
                tags.extend(arr.iter().filter_map(|t| t.as_str().map(str::to_string)));
            }
            match next {
                Some(n) => target = self.location(&r.host, &n)?,
                None => return Ok(tags),
            }
        }
        Err(ClientError::Http {
            url: format!("{}/v2/{}/tags/list", r.host, r.repo),
            cause: "tag list pagination did not end".into(),
        })
    }

    // ---- push ----

    /// Pushes `wasm` as a CNCF Wasm artifact to `r` (its tag, or by digest when it has none)
    /// and returns the manifest digest.
    pub async fn push(
        &self,
        r: &ImageRef,
        wasm: &[u8],
        annotations: &BTreeMap<String, String>,
    ) -> Result<Digest, ClientError> {
        self.push_with_progress(r, wasm, annotations, None).await
    }

    /// [`Client::push`], telling `progress` how the module's upload goes.
    pub async fn push_with_progress(
        &self,
        r: &ImageRef,
        wasm: &[u8],
        annotations: &BTreeMap<String, String>,
        progress: Option<Progress>,
    ) -> Result<Digest, ClientError> {
        let art = artifact::build(wasm, annotations)?;
        let scope_key = scope(&r.repo, Access::Push);
        self.push_blob(
            r,
            &art.config_digest,
            Bytes::from(art.config),
            None,
            &scope_key,
        )
        .await?;
        self.push_blob(
            r,
            &art.layer_digest,
            Bytes::copy_from_slice(wasm),
            progress,
            &scope_key,
        )
        .await?;
        let target = match (&r.tag, &r.digest) {
            (Some(t), _) => t.clone(),
            (None, _) => art.manifest_digest.to_string(),
        };
        if let Some(d) = &r.digest
            && *d != art.manifest_digest
        {
            return Err(ClientError::DigestMismatch {
                what: format!("manifest to push to {r}"),
                expected: d.to_string(),
                actual: art.manifest_digest.to_string(),
            });
        }
        let out = Outgoing {
            method: Method::PUT,
            target: Client::registry(r, format!("/v2/{}/manifests/{target}", r.repo)),
            headers: headers(&[(header::CONTENT_TYPE, artifact::MANIFEST_MEDIA_TYPE)]),
            body: Bytes::from(art.manifest),
            progress: None,
        };
        let mut reply = self.send(out, &scope_key).await?;
        if reply.status != StatusCode::CREATED {
            return Err(status_error(Method::PUT, &mut reply).await);
        }
        if let Some(d) = reply.header("docker-content-digest")
            && d != art.manifest_digest.to_string()
        {
            return Err(ClientError::DigestMismatch {
                what: "pushed manifest".into(),
                expected: art.manifest_digest.to_string(),
                actual: d.to_string(),
            });
        }
        Ok(art.manifest_digest)
    }

    /// Uploads one blob unless the registry has it: POST for a session, then one PUT with the
    /// whole content and its digest.
    async fn push_blob(
        &self,
        r: &ImageRef,
        d: &Digest,
        data: Bytes,
        progress: Option<Progress>,
        scope_key: &str,
    ) -> Result<(), ClientError> {
        let total = data.len() as u64;
        let head = Outgoing {
            method: Method::HEAD,
            target: Client::registry(r, format!("/v2/{}/blobs/{d}", r.repo)),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            progress: None,
        };
        let reply = self.send(head, scope_key).await?;
        if reply.status == StatusCode::OK {
            tracing::debug!(digest = %d, "blob already present");
            if let Some(p) = &progress {
                p(total, total);
            }
            return Ok(());
        }
        let post = Outgoing {
            method: Method::POST,
            target: Client::registry(r, format!("/v2/{}/blobs/uploads/", r.repo)),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            progress: None,
        };
        let mut reply = self.send(post, scope_key).await?;
        if reply.status != StatusCode::ACCEPTED {
            return Err(status_error(Method::POST, &mut reply).await);
        }
        let loc = reply
            .header("location")
            .ok_or(ClientError::MissingHeader("Location"))?
            .to_string();
        let target = match self.location(&r.host, &loc)? {
            Target::Registry { host, path } => {
                let sep = if path.contains('?') { '&' } else { '?' };
                Target::Registry {
                    host,
                    path: format!("{path}{sep}digest={d}"),
                }
            }
            Target::Url(uri) => {
                let sep = if uri.query().is_some() { '&' } else { '?' };
                Target::Url(format!("{uri}{sep}digest={d}").parse().map_err(|_| {
                    ClientError::Http {
                        url: uri.to_string(),
                        cause: "upload location cannot take the digest".into(),
                    }
                })?)
            }
        };
        let put = Outgoing {
            method: Method::PUT,
            target,
            headers: headers(&[(header::CONTENT_TYPE, "application/octet-stream")]),
            body: data,
            progress,
        };
        let mut reply = self.send(put, scope_key).await?;
        if reply.status != StatusCode::CREATED {
            return Err(status_error(Method::PUT, &mut reply).await);
        }
        Ok(())
    }
}

// ---- the first API: free functions over a one-off client ----

fn one_off(token: Option<&str>) -> Result<Client, ClientError> {
    Client::new(ClientConfig {
        credentials: match token {
            Some(t) if !t.is_empty() => Credentials::Token(t.to_string()),
            _ => Credentials::None,
        },
        ..ClientConfig::default()
    })
}

/// Pushes `wasm` as a CNCF Wasm artifact to `reference` and returns the manifest digest.
pub async fn push(
    reference: &str,
    wasm: &[u8],
    annotations: &BTreeMap<String, String>,
    token: Option<&str>,
) -> Result<Digest, ClientError> {
    let r = ImageRef::parse(reference)?;
    one_off(token)?.push(&r, wasm, annotations).await
}

/// Resolves a reference to its manifest digest.
pub async fn resolve(reference: &str, token: Option<&str>) -> Result<Digest, ClientError> {
    let r = ImageRef::parse(reference)?;
    one_off(token)?.resolve(&r).await
}

/// Fetches the raw manifest bytes, verified. Returns (digest, bytes).
pub async fn fetch_manifest(
    reference: &str,
    token: Option<&str>,
) -> Result<(Digest, Bytes), ClientError> {
    let r = ImageRef::parse(reference)?;
    let m = one_off(token)?.fetch_manifest(&r).await?;
    Ok((m.digest, m.bytes))
}

/// Pulls a module, every digest verified. Returns (manifest digest, module bytes).
pub async fn pull(reference: &str, token: Option<&str>) -> Result<(Digest, Vec<u8>), ClientError> {
    let r = ImageRef::parse(reference)?;
    let p = one_off(token)?.pull(&r).await?;
    Ok((p.manifest_digest, p.wasm))
}

/// Lists the tags of `HOST[:PORT]/REPO`.
pub async fn list_tags(host_repo: &str, token: Option<&str>) -> Result<Vec<String>, ClientError> {
    let r = ImageRef::parse(host_repo)?;
    one_off(token)?.list_tags(&r).await
}
