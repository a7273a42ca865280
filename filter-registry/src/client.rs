//! OCI client (plain HTTP) for Wasm filter artifacts in the CNCF layout: push, resolve, pull.
//!
//! Authentication: a static token sent as `Authorization: Bearer <token>`; the token-service
//! flow is not implemented. TLS is not implemented yet.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::artifact::{self, ArtifactError};
use crate::store::{Digest, StoreError, validate_repo_name, validate_tag};

/// Manifests larger than this are refused on pull.
const MAX_MANIFEST: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid reference {0:?}: {1}")]
    Reference(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("HTTP request to {url} failed: {cause}")]
    Http { url: String, cause: String },
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("registry response lacks {0}")]
    MissingHeader(&'static str),
}

/// A parsed reference: `[oci://]HOST[:PORT]/REPO(:TAG|@DIGEST)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub host: String,
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses a reference. A reference with neither tag nor digest means tag `latest`.
    pub fn parse(s: &str) -> Result<ImageRef, ClientError> {
        let bad = |why: &str| ClientError::Reference(s.to_string(), why.to_string());
        let rest = s.strip_prefix("oci://").unwrap_or(s);
        let (host, path) = rest.split_once('/').ok_or_else(|| bad("no repository"))?;
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        {
            return Err(bad("invalid host"));
        }
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => (p, Some(d.parse::<Digest>()?)),
            None => (path, None),
        };
        let (repo, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => {
                validate_tag(t)?;
                (r, Some(t.to_string()))
            }
            _ => (path, None),
        };
        validate_repo_name(repo)?;
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(ImageRef {
            host: host.to_string(),
            repo: repo.to_string(),
            tag,
            digest,
        })
    }

    /// The manifest reference to request: the digest if pinned, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    fn base(&self) -> String {
        format!("http://{}/v2/{}", self.host, self.repo)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    token: Option<String>,
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Http {
    fn new(token: Option<&str>) -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            token: token.map(str::to_string),
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Bytes,
        limit: usize,
    ) -> Result<Reply, ClientError> {
        let http_err = |cause: String| ClientError::Http {
            url: url.to_string(),
            cause,
        };
        let mut b = Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            b = b.header(k, v);
        }
        if let Some(t) = &self.token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = b
            .body(Full::new(body))
            .map_err(|e| http_err(e.to_string()))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| http_err(e.to_string()))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = http_body_util::Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| http_err(e.to_string()))?
            .to_bytes();
        if !status.is_success() && status != StatusCode::NOT_FOUND {
            return Err(ClientError::Status {
                method,
                url: url.to_string(),
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned(),
            });
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

fn expect(r: &Reply, ok: StatusCode, method: Method, url: &str) -> Result<(), ClientError> {
    if r.status == ok {
        Ok(())
    } else {
        Err(ClientError::Status {
            method,
            url: url.to_string(),
            status: r.status,
            body: String::from_utf8_lossy(&r.body[..r.body.len().min(500)]).into_owned(),
        })
    }
}

async fn push_blob(http: &Http, r: &ImageRef, d: &Digest, data: &[u8]) -> Result<(), ClientError> {
    let url = format!("{}/blobs/{d}", r.base());
    let head = http.send(Method::HEAD, &url, &[], Bytes::new(), 0).await?;
    if head.status == StatusCode::OK {
        tracing::debug!(digest = %d, "blob already present");
        return Ok(());
    }
    let url = format!("{}/blobs/uploads/", r.base());
    let post = http
        .send(Method::POST, &url, &[], Bytes::new(), 64 * 1024)
        .await?;
    expect(&post, StatusCode::ACCEPTED, Method::POST, &url)?;
    let loc = post
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ClientError::MissingHeader("Location"))?;
    let loc = if loc.starts_with("http://") || loc.starts_with("https://") {
        loc.to_string()
    } else {
        format!("http://{}{}", r.host, loc)
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let put_url = format!("{loc}{sep}digest={d}");
    let put = http
        .send(
            Method::PUT,
            &put_url,
            &[(header::CONTENT_TYPE, "application/octet-stream".into())],
            Bytes::copy_from_slice(data),
            64 * 1024,
        )
        .await?;
    expect(&put, StatusCode::CREATED, Method::PUT, &put_url)
}

/// Pushes `wasm` as a CNCF Wasm artifact to `reference` (which must carry a tag) and returns the
/// manifest digest.
pub async fn push(
    reference: &str,
    wasm: &[u8],
    annotations: &BTreeMap<String, String>,
    token: Option<&str>,
) -> Result<Digest, ClientError> {
    let r = ImageRef::parse(reference)?;
    let art = artifact::build(wasm, annotations)?;
    let http = Http::new(token);
    push_blob(&http, &r, &art.config_digest, &art.config).await?;
    push_blob(&http, &r, &art.layer_digest, wasm).await?;
    let target = match (&r.tag, &r.digest) {
        (Some(t), _) => t.clone(),
        (None, Some(_)) => art.manifest_digest.to_string(),
        (None, None) => "latest".into(),
    };
    let url = format!("{}/manifests/{target}", r.base());
    let put = http
        .send(
            Method::PUT,
            &url,
            &[(header::CONTENT_TYPE, artifact::MANIFEST_MEDIA_TYPE.into())],
            Bytes::from(art.manifest.clone()),
            64 * 1024,
        )
        .await?;
    expect(&put, StatusCode::CREATED, Method::PUT, &url)?;
    if let Some(d) = put
        .headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
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

/// Resolves a reference to its manifest digest (HEAD on the manifest).
pub async fn resolve(reference: &str, token: Option<&str>) -> Result<Digest, ClientError> {
    let r = ImageRef::parse(reference)?;
    let url = format!("{}/manifests/{}", r.base(), r.reference());
    let http = Http::new(token);
    let head = http
        .send(
            Method::HEAD,
            &url,
            &[(header::ACCEPT, artifact::MANIFEST_MEDIA_TYPE.into())],
            Bytes::new(),
            0,
        )
        .await?;
    expect(&head, StatusCode::OK, Method::HEAD, &url)?;
    let d = head
        .headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .ok_or(ClientError::MissingHeader("Docker-Content-Digest"))?;
    Ok(d.parse()?)
}

/// Fetches the raw manifest bytes, verifying them against the pinned digest when there is one
/// (and against `Docker-Content-Digest` otherwise). Returns (digest, bytes).
pub async fn fetch_manifest(
    reference: &str,
    token: Option<&str>,
) -> Result<(Digest, Bytes), ClientError> {
    let r = ImageRef::parse(reference)?;
    let http = Http::new(token);
    let url = format!("{}/manifests/{}", r.base(), r.reference());
    let m = http
        .send(
            Method::GET,
            &url,
            &[(header::ACCEPT, artifact::MANIFEST_MEDIA_TYPE.into())],
            Bytes::new(),
            MAX_MANIFEST,
        )
        .await?;
    expect(&m, StatusCode::OK, Method::GET, &url)?;
    let expected: Option<Digest> = match &r.digest {
        Some(d) => Some(d.clone()),
        None => m
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok()),
    };
    let actual = match &expected {
        Some(e) => Digest::of(e.algorithm(), &m.body),
        None => Digest::sha256_of(&m.body),
    };
    if let Some(e) = expected
        && e != actual
    {
        return Err(ClientError::DigestMismatch {
            what: format!("manifest of {r}"),
            expected: e.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok((actual, m.body))
}

/// Pulls the Wasm module of a CNCF artifact. Verifies the manifest digest (when pinned, or as
/// announced by the registry), the layer digest, the Wasm magic and the size cap
/// ([`artifact::DEFAULT_MAX_WASM_SIZE`]). Returns (manifest digest, module bytes).
pub async fn pull(reference: &str, token: Option<&str>) -> Result<(Digest, Vec<u8>), ClientError> {
    let r = ImageRef::parse(reference)?;
    let (md, manifest) = fetch_manifest(reference, token).await?;
    let (_, layer) = artifact::wasm_layer(&manifest)?;
    if layer.size > artifact::DEFAULT_MAX_WASM_SIZE {
        return Err(ArtifactError::TooLarge {
            size: layer.size,
            max: artifact::DEFAULT_MAX_WASM_SIZE,
        }
        .into());
    }
    let ld: Digest = layer.digest.parse()?;
    let http = Http::new(token);
    let url = format!("{}/blobs/{ld}", r.base());
    let b = http
        .send(
            Method::GET,
            &url,
            &[],
            Bytes::new(),
            artifact::DEFAULT_MAX_WASM_SIZE as usize,
        )
        .await?;
    expect(&b, StatusCode::OK, Method::GET, &url)?;
    let actual = Digest::of(ld.algorithm(), &b.body);
    if actual != ld {
        return Err(ClientError::DigestMismatch {
            what: format!("wasm layer of {r}"),
            expected: ld.to_string(),
            actual: actual.to_string(),
        });
    }
    artifact::check_wasm(&b.body, artifact::DEFAULT_MAX_WASM_SIZE)?;
    Ok((md, b.body.to_vec()))
}

/// Lists the tags of `HOST[:PORT]/REPO` (follows `Link` pagination).
pub async fn list_tags(host_repo: &str, token: Option<&str>) -> Result<Vec<String>, ClientError> {
    let r = ImageRef::parse(host_repo)?;
    let http = Http::new(token);
    let mut url = format!("{}/tags/list", r.base());
    let mut tags = Vec::new();
    // Bounded so a registry that keeps sending `Link` cannot loop us forever.
    for _ in 0..10_000 {
        let resp = http
            .send(Method::GET, &url, &[], Bytes::new(), 4 * 1024 * 1024)
            .await?;
        expect(&resp, StatusCode::OK, Method::GET, &url)?;
        let v: serde_json::Value =
            serde_json::from_slice(&resp.body).map_err(|e| ClientError::Http {
                url: url.clone(),
                cause: format!("bad tag list JSON: {e}"),
            })?;
        if let Some(arr) = v.get("tags").and_then(|t| t.as_array()) {
            tags.extend(arr.iter().filter_map(|t| t.as_str().map(str::to_string)));
        }
        let next = resp
            .headers
            .get(header::LINK)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.split_once('<'))
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(u, _)| u.to_string());
        match next {
            Some(n) if n.starts_with('/') => url = format!("http://{}{n}", r.host),
            Some(n) => url = n,
            None => return Ok(tags),
        }
    }
    Err(ClientError::Http {
        url,
        cause: "tag list pagination did not end".into(),
    })
}
