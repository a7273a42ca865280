//! The OCI distribution conformance tests, by the names of the upstream suite
//! (`opencontainers/distribution-spec` `conformance/`), in its four categories. Written from
//! the spec and the upstream suite's expectations, not from its code.
//!
//! A test passes, fails, or finds the feature unsupported in a way the spec allows (a registry
//! that answers 202 to a single-POST upload or to a mount, so the client falls back to
//! POST+PUT; one that refuses deletes with 400/405), as the upstream suite counts them.

use http::Method;
use serde_json::json;

use crate::error::Error;
use crate::registry::client::{Client, Resp, sha256, sha512, with_query};

/// How one test came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The registry lacks an optional feature and the client's fallback worked.
    Unsupported(String),
    Fail(String),
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Unsupported(_) => "unsupported",
            Outcome::Fail(_) => "fail",
        }
    }
}

/// Why a test did not pass.
enum Problem {
    Fail(String),
    Unsupported(String),
}

impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        Problem::Fail(e.0)
    }
}

type Step = std::result::Result<(), Problem>;

fn fail(message: impl Into<String>) -> Problem {
    Problem::Fail(message.into())
}

fn status(resp: &Resp, wanted: &[u16], what: &str) -> Step {
    if wanted.contains(&resp.status) {
        Ok(())
    } else {
        Err(fail(format!(
            "{what}: expected {wanted:?}, got {}",
            resp.describe()
        )))
    }
}

fn ensure(condition: bool, message: impl FnOnce() -> String) -> Step {
    if condition {
        Ok(())
    } else {
        Err(fail(message()))
    }
}

/// The categories and their tests, in the upstream suite's order.
pub const TESTS: &[(&str, &[&str])] = &[
    (
        "pull",
        &[
            "ping",
            "blob-get",
            "blob-head",
            "manifest-by-tag",
            "manifest-by-digest",
            "manifest-head",
            "range requests",
            "missing-manifest",
            "invalid-digest-format",
            "sha256 blobs",
            "sha512 blobs",
        ],
    ),
    (
        "push",
        &[
            "blob-post-put",
            "blob-post-only",
            "blob-patch-chunked",
            "blob-patch-stream",
            "blob-mount",
            "blob-mount-anonymous",
            "manifest-put",
        ],
    ),
    ("content discovery", &["tag-list", "referrers"]),
    (
        "content management",
        &["tag-delete", "manifest-delete", "blob-delete"],
    ),
];

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";
const ARTIFACT: &str = "application/vnd.wasmesh.conformance.test";
const OCTETS: &[(&str, &str)] = &[("content-type", "application/octet-stream")];

/// Content pushed for a test: bytes and their digest.
#[derive(Clone)]
struct Blob {
    data: Vec<u8>,
    digest: String,
}

impl Blob {
    fn new(seed: &str, len: usize) -> Blob {
        let data: Vec<u8> = seed.bytes().cycle().take(len.max(seed.len())).collect();
        Blob {
            digest: sha256(&data),
            data,
        }
    }

    fn sha512(seed: &str, len: usize) -> Blob {
        let mut blob = Blob::new(seed, len);
        blob.digest = sha512(&blob.data);
        blob
    }
}

/// An image manifest for `config` and `layers` (with `subject`/`artifactType`/annotations for
/// a referrer), as bytes with its digest.
fn manifest(config: &Blob, config_type: &str, layers: &[&Blob], extra: serde_json::Value) -> Blob {
    let mut value = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": { "mediaType": config_type, "digest": config.digest, "size": config.data.len() },
        "layers": layers.iter().map(|l| json!({ "mediaType": LAYER, "digest": l.digest, "size": l.data.len() })).collect::<Vec<_>>(),
    });
    if let (Some(target), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            target.insert(k.clone(), v.clone());
        }
    }
    let data = serde_json::to_vec(&value).unwrap_or_default();
    Blob {
        digest: sha256(&data),
        data,
    }
}

/// One run of the tests against one registry.
pub struct Suite {
    client: Client,
    /// Repositories unique to this run, so runs against a long-lived registry never collide.
    repo: String,
    repo2: String,
    pulled: Option<(Blob, Blob, Blob)>,
}

impl Suite {
    pub fn new(client: Client, run_id: &str) -> Suite {
        Suite {
            client,
            repo: format!("conformance/{run_id}/one"),
            repo2: format!("conformance/{run_id}/two"),
            pulled: None,
        }
    }

    /// Runs test `name`.
    pub async fn run(&mut self, name: &str) -> Outcome {
        let step = match name {
            "ping" => self.ping().await,
            "blob-get" => self.blob_get().await,
            "blob-head" => self.blob_head().await,
            "manifest-by-tag" => self.manifest_get("pull").await,
            "manifest-by-digest" => self.manifest_by_digest().await,
            "manifest-head" => self.manifest_head().await,
            "range requests" => self.range().await,
            "missing-manifest" => self.missing_manifest().await,
            "invalid-digest-format" => self.invalid_digest().await,
            "sha256 blobs" => self.algorithm(Blob::new("sha256 blob", 300)).await,
            "sha512 blobs" => self.algorithm(Blob::sha512("sha512 blob", 300)).await,
            "blob-post-put" => self.post_put_checked(&Blob::new("post-put", 500)).await,
            "blob-post-only" => self.post_only().await,
            "blob-patch-chunked" => self.patch_chunked().await,
            "blob-patch-stream" => self.patch_stream().await,
            "blob-mount" => self.mount(true).await,
            "blob-mount-anonymous" => self.mount(false).await,
            "manifest-put" => self.manifest_put().await,
            "tag-list" => self.tag_list().await,
            "referrers" => self.referrers().await,
            "tag-delete" => self.tag_delete().await,
            "manifest-delete" => self.manifest_delete().await,
            "blob-delete" => self.blob_delete().await,
            other => Err(fail(format!("no test {other}"))),
        };
        match step {
            Ok(()) => Outcome::Pass,
            Err(Problem::Fail(m)) => Outcome::Fail(m),
            Err(Problem::Unsupported(m)) => Outcome::Unsupported(m),
        }
    }

    fn path(&self, repo: &str, rest: &str) -> String {
        format!("/v2/{repo}/{rest}")
    }

    /// Uploads `blob` to `repo` with POST then PUT (what every registry takes); the PUT's answer.
    async fn post_put(&self, repo: &str, blob: &Blob) -> std::result::Result<Resp, Problem> {
        let post = self
            .client
            .send(Method::POST, &self.path(repo, "blobs/uploads/"), &[], b"")
            .await?;
        status(&post, &[202], "POST blobs/uploads/")?;
        let location = post
            .header("location")
            .ok_or_else(|| fail("POST blobs/uploads/ gave no Location"))?;
        let put = self
            .client
            .send(
                Method::PUT,
                &with_query(&location, "digest", &blob.digest),
                OCTETS,
                &blob.data,
            )
            .await?;
        status(&put, &[201], "PUT <location>?digest=")?;
        Ok(put)
    }

    /// Checks a finished upload: the digest header, if sent, and the blob at its Location.
    async fn verify_upload(&self, resp: &Resp, blob: &Blob) -> Step {
        if let Some(d) = resp.header("docker-content-digest") {
            ensure(d == blob.digest, || {
                format!("Docker-Content-Digest {d}, expected {}", blob.digest)
            })?;
        }
        let location = resp
            .header("location")
            .ok_or_else(|| fail("the upload's answer gave no Location"))?;
        let got = self.client.get(&location, &[]).await?;
        status(&got, &[200], "GET the upload's Location")?;
        ensure(got.body.as_ref() == blob.data.as_slice(), || {
            "the blob at the Location differs from what was pushed".into()
        })
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        m: &Blob,
    ) -> std::result::Result<Resp, Problem> {
        let resp = self
            .client
            .send(
                Method::PUT,
                &self.path(repo, &format!("manifests/{reference}")),
                &[("content-type", MANIFEST)],
                &m.data,
            )
            .await?;
        status(&resp, &[201], &format!("PUT manifests/{reference}"))?;
        Ok(resp)
    }

    /// The image the pull tests read: config, layer, manifest tagged `pull` (pushed once).
    async fn pulled(&mut self) -> std::result::Result<(Blob, Blob, Blob), Problem> {
        if let Some(p) = &self.pulled {
            return Ok(p.clone());
        }
        let config = Blob::new("{\"conformance\":\"pull\"}", 0);
        let layer = Blob::new("pull layer bytes ", 1200);
        let m = manifest(&config, CONFIG, &[&layer], json!({}));
        let repo = self.repo.clone();
        self.post_put(&repo, &config).await?;
        self.post_put(&repo, &layer).await?;
        self.put_manifest(&repo, "pull", &m).await?;
        self.pulled = Some((config.clone(), layer.clone(), m.clone()));
        Ok((config, layer, m))
    }

    async fn ping(&mut self) -> Step {
        let resp = self.client.get("/v2/", &[]).await?;
        status(&resp, &[200], "GET /v2/")
    }

    async fn blob_get(&mut self) -> Step {
        let (_, layer, _) = self.pulled().await?;
        let resp = self
            .client
            .get(
                &self.path(&self.repo, &format!("blobs/{}", layer.digest)),
                &[],
            )
            .await?;
        status(&resp, &[200], "GET blobs/<digest>")?;
        ensure(resp.body.as_ref() == layer.data.as_slice(), || {
            "the blob differs from what was pushed".into()
        })?;
        check_length(&resp, layer.data.len())?;
        check_digest(&resp, &layer.digest)
    }

    async fn blob_head(&mut self) -> Step {
        let (_, layer, _) = self.pulled().await?;
        let resp = self
            .client
            .head(
                &self.path(&self.repo, &format!("blobs/{}", layer.digest)),
                &[],
            )
            .await?;
        status(&resp, &[200], "HEAD blobs/<digest>")?;
        ensure(resp.body.is_empty(), || "HEAD answered a body".into())?;
        check_length(&resp, layer.data.len())?;
        check_digest(&resp, &layer.digest)
    }

    async fn manifest_get(&mut self, reference: &str) -> Step {
        let (_, _, m) = self.pulled().await?;
        let reference = if reference == "digest" {
            m.digest.clone()
        } else {
            reference.to_string()
        };
        let resp = self
            .client
            .get(
                &self.path(&self.repo, &format!("manifests/{reference}")),
                &[("accept", MANIFEST), ("accept", INDEX)],
            )
            .await?;
        status(&resp, &[200], "GET manifests/<reference>")?;
        ensure(resp.body.as_ref() == m.data.as_slice(), || {
            "the manifest differs from what was pushed (bytes must be kept exactly)".into()
        })?;
        ensure(
            resp.header("content-type").as_deref() == Some(MANIFEST),
            || {
                format!(
                    "Content-Type {:?}, expected {MANIFEST}",
                    resp.header("content-type")
                )
            },
        )?;
        check_length(&resp, m.data.len())?;
        check_digest(&resp, &m.digest)
    }

    async fn manifest_by_digest(&mut self) -> Step {
        self.manifest_get("digest").await
    }

    async fn manifest_head(&mut self) -> Step {
        let (_, _, m) = self.pulled().await?;
        for reference in ["pull".to_string(), m.digest.clone()] {
            let resp = self
                .client
                .head(
                    &self.path(&self.repo, &format!("manifests/{reference}")),
                    &[("accept", MANIFEST), ("accept", INDEX)],
                )
                .await?;
            status(&resp, &[200], "HEAD manifests/<reference>")?;
            ensure(resp.body.is_empty(), || "HEAD answered a body".into())?;
            check_length(&resp, m.data.len())?;
            check_digest(&resp, &m.digest)?;
        }
        Ok(())
    }

    async fn range(&mut self) -> Step {
        let (_, layer, _) = self.pulled().await?;
        let resp = self
            .client
            .get(
                &self.path(&self.repo, &format!("blobs/{}", layer.digest)),
                &[("range", "bytes=100-199")],
            )
            .await?;
        if resp.status == 200 {
            return Err(Problem::Unsupported(
                "a Range request is answered with the whole blob (Range is a SHOULD)".into(),
            ));
        }
        status(&resp, &[206], "GET blobs/<digest> with Range")?;
        ensure(resp.body.as_ref() == &layer.data[100..200], || {
            "the range differs from the blob's bytes".into()
        })?;
        let expected = format!("bytes 100-199/{}", layer.data.len());
        ensure(
            resp.header("content-range").as_deref() == Some(expected.as_str()),
            || {
                format!(
                    "Content-Range {:?}, expected {expected}",
                    resp.header("content-range")
                )
            },
        )
    }

    async fn missing_manifest(&mut self) -> Step {
        let by_digest = sha256(b"conformance: no such manifest");
        let resp = self
            .client
            .get(
                &self.path(&self.repo, &format!("manifests/{by_digest}")),
                &[("accept", MANIFEST)],
            )
            .await?;
        status(&resp, &[404], "GET a missing manifest by digest")?;
        let resp = self
            .client
            .get(
                &self.path(&self.repo, "manifests/missing-tag-conformance"),
                &[("accept", MANIFEST)],
            )
            .await?;
        status(&resp, &[404], "GET a missing manifest by tag")
    }

    async fn invalid_digest(&mut self) -> Step {
        let config = Blob::new("{\"conformance\":\"invalid\"}", 0);
        let layer = Blob::new("invalid digest layer ", 300);
        let repo = self.repo.clone();
        self.post_put(&repo, &config).await?;
        self.post_put(&repo, &layer).await?;
        let m = manifest(&config, CONFIG, &[&layer], json!({}));
        let put = self
            .client
            .send(
                Method::PUT,
                &self.path(&repo, "manifests/sha256:baddigeststring"),
                &[("content-type", MANIFEST)],
                &m.data,
            )
            .await?;
        status(&put, &[400], "PUT manifests/sha256:baddigeststring")?;
        let get = self
            .client
            .get(
                &self.path(&repo, "manifests/sha256:baddigeststring"),
                &[("accept", MANIFEST)],
            )
            .await?;
        status(&get, &[400, 404], "GET manifests/sha256:baddigeststring")
    }

    async fn algorithm(&mut self, blob: Blob) -> Step {
        let repo = self.repo.clone();
        let put = self.post_put(&repo, &blob).await?;
        self.verify_upload(&put, &blob).await?;
        let resp = self
            .client
            .get(&self.path(&repo, &format!("blobs/{}", blob.digest)), &[])
            .await?;
        status(&resp, &[200], "GET blobs/<digest>")?;
        ensure(resp.body.as_ref() == blob.data.as_slice(), || {
            "the blob differs from what was pushed".into()
        })
    }

    async fn post_put_checked(&mut self, blob: &Blob) -> Step {
        let repo = self.repo.clone();
        let put = self.post_put(&repo, blob).await?;
        self.verify_upload(&put, blob).await
    }

    async fn post_only(&mut self) -> Step {
        let blob = Blob::new("post-only ", 400);
        let url = with_query(
            &self.path(&self.repo, "blobs/uploads/"),
            "digest",
            &blob.digest,
        );
        let post = self
            .client
            .send(Method::POST, &url, OCTETS, &blob.data)
            .await?;
        status(
            &post,
            &[201, 202],
            "POST blobs/uploads/?digest= with the blob",
        )?;
        if post.status == 202 {
            let location = post
                .header("location")
                .ok_or_else(|| fail("POST gave no Location"))?;
            let put = self
                .client
                .send(
                    Method::PUT,
                    &with_query(&location, "digest", &blob.digest),
                    OCTETS,
                    &blob.data,
                )
                .await?;
            status(&put, &[201], "the fallback PUT")?;
            self.verify_upload(&put, &blob).await?;
            return Err(Problem::Unsupported("a single POST with the blob opens a session instead (202); the fallback PUT worked".into()));
        }
        self.verify_upload(&post, &blob).await
    }

    async fn patch_chunked(&mut self) -> Step {
        let post = self
            .client
            .send(
                Method::POST,
                &self.path(&self.repo, "blobs/uploads/"),
                &[("content-length", "0")],
                b"",
            )
            .await?;
        status(&post, &[202], "POST blobs/uploads/")?;
        let min = post
            .header("oci-chunk-min-length")
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(0);
        let chunk = min.max(1024);
        let blob = Blob::new("patch-chunked ", chunk * 3);
        let mut location = post
            .header("location")
            .ok_or_else(|| fail("POST gave no Location"))?;
        let mut start = 0;
        let mut first = true;
        while start < blob.data.len() {
            let end = (start + chunk).min(blob.data.len());
            let range = format!("{start}-{}", end - 1);
            let resp = self
                .client
                .send(
                    Method::PATCH,
                    &location,
                    &[
                        ("content-type", "application/octet-stream"),
                        ("content-range", &range),
                    ],
                    &blob.data[start..end],
                )
                .await?;
            status(&resp, &[202], &format!("PATCH chunk {range}"))?;
            ensure(
                resp.header("range").as_deref() == Some(&format!("0-{}", end - 1)),
                || format!("Range {:?} after chunk {range}", resp.header("range")),
            )?;
            location = resp
                .header("location")
                .ok_or_else(|| fail("PATCH gave no Location"))?;
            if first {
                // A chunk out of order is refused, and the session can be resumed.
                let skip = format!("{}-{}", end + chunk, end + 2 * chunk - 1);
                let bad = self
                    .client
                    .send(
                        Method::PATCH,
                        &location,
                        &[
                            ("content-type", "application/octet-stream"),
                            ("content-range", &skip),
                        ],
                        &blob.data[..chunk],
                    )
                    .await?;
                status(&bad, &[416], "PATCH an out-of-order chunk")?;
                let state = self.client.get(&location, &[]).await?;
                status(&state, &[204], "GET the upload's status")?;
                ensure(
                    state.header("range").as_deref() == Some(&format!("0-{}", end - 1)),
                    || format!("the upload's Range is {:?}", state.header("range")),
                )?;
                if let Some(l) = state.header("location") {
                    location = l;
                }
                first = false;
            }
            start = end;
        }
        let put = self
            .client
            .send(
                Method::PUT,
                &with_query(&location, "digest", &blob.digest),
                &[("content-length", "0")],
                b"",
            )
            .await?;
        status(&put, &[201], "PUT ?digest= to close the upload")?;
        self.verify_upload(&put, &blob).await
    }

    async fn patch_stream(&mut self) -> Step {
        let blob = Blob::new("patch-stream ", 3000);
        let post = self
            .client
            .send(
                Method::POST,
                &self.path(&self.repo, "blobs/uploads/"),
                &[],
                b"",
            )
            .await?;
        status(&post, &[202], "POST blobs/uploads/")?;
        let location = post
            .header("location")
            .ok_or_else(|| fail("POST gave no Location"))?;
        let patch = self
            .client
            .send(Method::PATCH, &location, OCTETS, &blob.data)
            .await?;
        status(&patch, &[202], "PATCH the whole blob without Content-Range")?;
        let location = patch
            .header("location")
            .ok_or_else(|| fail("PATCH gave no Location"))?;
        let put = self
            .client
            .send(
                Method::PUT,
                &with_query(&location, "digest", &blob.digest),
                &[],
                b"",
            )
            .await?;
        status(&put, &[201], "PUT ?digest=")?;
        self.verify_upload(&put, &blob).await
    }

    async fn mount(&mut self, from: bool) -> Step {
        let blob = Blob::new(if from { "mount " } else { "mount anonymous " }, 700);
        let (repo, repo2) = (self.repo.clone(), self.repo2.clone());
        self.post_put(&repo, &blob).await?;
        let mut url = with_query(&self.path(&repo2, "blobs/uploads/"), "mount", &blob.digest);
        if from {
            url = with_query(&url, "from", &repo);
        }
        let post = self.client.send(Method::POST, &url, &[], b"").await?;
        status(&post, &[201, 202], "POST ?mount=")?;
        if post.status == 202 {
            let location = post
                .header("location")
                .ok_or_else(|| fail("POST gave no Location"))?;
            let put = self
                .client
                .send(
                    Method::PUT,
                    &with_query(&location, "digest", &blob.digest),
                    OCTETS,
                    &blob.data,
                )
                .await?;
            status(&put, &[201], "the fallback PUT")?;
            return Err(Problem::Unsupported(
                "the mount opened an upload session instead (202); the fallback PUT worked".into(),
            ));
        }
        self.verify_upload(&post, &blob).await
    }

    async fn manifest_put(&mut self) -> Step {
        let config = Blob::new("{\"conformance\":\"put\"}", 0);
        let layer = Blob::new("manifest put layer ", 200);
        let repo = self.repo.clone();
        self.post_put(&repo, &config).await?;
        self.post_put(&repo, &layer).await?;
        let m = manifest(&config, CONFIG, &[&layer], json!({}));
        let resp = self.put_manifest(&repo, "put", &m).await?;
        check_digest(&resp, &m.digest)?;
        let location = resp
            .header("location")
            .ok_or_else(|| fail("PUT manifests gave no Location"))?;
        let got = self.client.get(&location, &[("accept", MANIFEST)]).await?;
        status(&got, &[200], "GET the manifest's Location")?;
        ensure(got.body.as_ref() == m.data.as_slice(), || {
            "the manifest at the Location differs".into()
        })
    }

    /// Pushes a small image to `repo` and tags it with each of `tags`; its manifest.
    async fn tagged(
        &mut self,
        repo: &str,
        seed: &str,
        tags: &[&str],
    ) -> std::result::Result<Blob, Problem> {
        let config = Blob::new(&format!("{{\"conformance\":\"{seed}\"}}"), 0);
        let layer = Blob::new(&format!("{seed} layer "), 200);
        self.post_put(repo, &config).await?;
        self.post_put(repo, &layer).await?;
        let m = manifest(&config, CONFIG, &[&layer], json!({}));
        for tag in tags {
            self.put_manifest(repo, tag, &m).await?;
        }
        Ok(m)
    }

    async fn tag_list(&mut self) -> Step {
        let repo = format!("{}-tags", self.repo);
        self.tagged(&repo, "tags", &["t1", "t2", "t3", "t4"])
            .await?;
        let list = |resp: &Resp| -> std::result::Result<Vec<String>, Problem> {
            let v: serde_json::Value = serde_json::from_slice(&resp.body)
                .map_err(|e| fail(format!("the tag list is not JSON: {e}")))?;
            Ok(v["tags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default())
        };
        let all = self.client.get(&self.path(&repo, "tags/list"), &[]).await?;
        status(&all, &[200], "GET tags/list")?;
        let tags = list(&all)?;
        ensure(tags == ["t1", "t2", "t3", "t4"], || {
            format!("tags/list gave {tags:?}")
        })?;
        let first = self
            .client
            .get(&self.path(&repo, "tags/list?n=2"), &[])
            .await?;
        status(&first, &[200], "GET tags/list?n=2")?;
        let tags = list(&first)?;
        ensure(tags == ["t1", "t2"], || {
            format!("tags/list?n=2 gave {tags:?}")
        })?;
        ensure(
            first
                .header("link")
                .is_some_and(|l| l.contains("rel=\"next\"")),
            || "a truncated tag list has no Link rel=\"next\"".into(),
        )?;
        let rest = self
            .client
            .get(&self.path(&repo, "tags/list?last=t2"), &[])
            .await?;
        status(&rest, &[200], "GET tags/list?last=t2")?;
        let tags = list(&rest)?;
        ensure(tags == ["t3", "t4"], || {
            format!("tags/list?last=t2 gave {tags:?}")
        })
    }

    async fn referrers(&mut self) -> Step {
        let repo = format!("{}-referrers", self.repo);
        let subject = self.tagged(&repo, "subject", &["subject"]).await?;
        let empty = Blob::new("{}", 0);
        let layer = Blob::new("referrer layer ", 100);
        self.post_put(&repo, &empty).await?;
        self.post_put(&repo, &layer).await?;
        let referrer = manifest(
            &empty,
            EMPTY,
            &[&layer],
            json!({
                "artifactType": ARTIFACT,
                "subject": { "mediaType": MANIFEST, "digest": subject.digest, "size": subject.data.len() },
                "annotations": { "org.wasmesh.conformance": "referrer" },
            }),
        );
        let put = self
            .put_manifest(&repo, &referrer.digest, &referrer)
            .await?;
        ensure(
            put.header("oci-subject").as_deref() == Some(subject.digest.as_str()),
            || {
                format!(
                    "PUT of a manifest with a subject answered OCI-Subject {:?}",
                    put.header("oci-subject")
                )
            },
        )?;
        let index = |resp: &Resp| -> std::result::Result<Vec<serde_json::Value>, Problem> {
            let v: serde_json::Value = serde_json::from_slice(&resp.body)
                .map_err(|e| fail(format!("the referrers answer is not JSON: {e}")))?;
            ensure(v["mediaType"] == INDEX && v["schemaVersion"] == 2, || {
                "the referrers answer is not an OCI index".into()
            })?;
            Ok(v["manifests"].as_array().cloned().unwrap_or_default())
        };
        let listed = self
            .client
            .get(
                &self.path(&repo, &format!("referrers/{}", subject.digest)),
                &[],
            )
            .await?;
        status(&listed, &[200], "GET referrers/<subject>")?;
        ensure(
            listed.header("content-type").as_deref() == Some(INDEX),
            || format!("referrers Content-Type {:?}", listed.header("content-type")),
        )?;
        let found = index(&listed)?;
        let matches = |d: &serde_json::Value| {
            d["digest"] == referrer.digest
                && d["mediaType"] == MANIFEST
                && d["size"] == referrer.data.len()
                && d["artifactType"] == ARTIFACT
                && d["annotations"]["org.wasmesh.conformance"] == "referrer"
        };
        ensure(found.iter().any(matches), || {
            format!("the referrer is not listed as pushed: {found:?}")
        })?;
        let filtered = self
            .client
            .get(
                &self.path(
                    &repo,
                    &format!("referrers/{}?artifactType={ARTIFACT}", subject.digest),
                ),
                &[],
            )
            .await?;
        status(&filtered, &[200], "GET referrers/<subject>?artifactType=")?;
        let applied = filtered.header("oci-filters-applied").unwrap_or_default();
        ensure(
            applied.split(',').any(|f| f.trim() == "artifactType"),
            || "a filtered referrers answer lacks OCI-Filters-Applied: artifactType".into(),
        )?;
        let found = index(&filtered)?;
        ensure(
            found.iter().any(matches) && found.iter().all(|d| d["artifactType"] == ARTIFACT),
            || format!("the filtered referrers are wrong: {found:?}"),
        )?;
        let nothing = sha256(b"conformance: no such subject");
        let missing = self
            .client
            .get(&self.path(&repo, &format!("referrers/{nothing}")), &[])
            .await?;
        status(&missing, &[200], "GET referrers/<missing subject>")?;
        let found = index(&missing)?;
        ensure(found.is_empty(), || {
            format!("a missing subject has referrers: {found:?}")
        })
    }

    async fn deleted(&self, resp: &Resp, what: &str) -> Step {
        match resp.status {
            202 => Ok(()),
            400 | 405 => Err(Problem::Unsupported(format!(
                "{what} is refused ({}): deleting is disabled or unsupported",
                resp.describe()
            ))),
            _ => Err(fail(format!(
                "{what}: expected 202, got {}",
                resp.describe()
            ))),
        }
    }

    async fn tag_delete(&mut self) -> Step {
        let repo = format!("{}-delete-tag", self.repo);
        self.tagged(&repo, "delete tag", &["doomed", "kept"])
            .await?;
        let resp = self
            .client
            .send(
                Method::DELETE,
                &self.path(&repo, "manifests/doomed"),
                &[],
                b"",
            )
            .await?;
        self.deleted(&resp, "DELETE manifests/<tag>").await?;
        let head = self
            .client
            .head(
                &self.path(&repo, "manifests/doomed"),
                &[("accept", MANIFEST)],
            )
            .await?;
        status(&head, &[404], "HEAD the deleted tag")?;
        let kept = self
            .client
            .head(&self.path(&repo, "manifests/kept"), &[("accept", MANIFEST)])
            .await?;
        status(&kept, &[200], "HEAD the other tag of the same manifest")
    }

    async fn manifest_delete(&mut self) -> Step {
        let repo = format!("{}-delete-manifest", self.repo);
        let m = self.tagged(&repo, "delete manifest", &["gone"]).await?;
        let resp = self
            .client
            .send(
                Method::DELETE,
                &self.path(&repo, &format!("manifests/{}", m.digest)),
                &[],
                b"",
            )
            .await?;
        self.deleted(&resp, "DELETE manifests/<digest>").await?;
        let head = self
            .client
            .head(
                &self.path(&repo, &format!("manifests/{}", m.digest)),
                &[("accept", MANIFEST)],
            )
            .await?;
        status(&head, &[404], "HEAD the deleted manifest")?;
        let list = self.client.get(&self.path(&repo, "tags/list"), &[]).await?;
        let listed = list.status == 200 && String::from_utf8_lossy(&list.body).contains("\"gone\"");
        ensure(!listed, || {
            "the deleted manifest's tag is still listed".into()
        })
    }

    async fn blob_delete(&mut self) -> Step {
        let blob = Blob::new("delete blob ", 300);
        let repo = format!("{}-delete-blob", self.repo);
        self.post_put(&repo, &blob).await?;
        let resp = self
            .client
            .send(
                Method::DELETE,
                &self.path(&repo, &format!("blobs/{}", blob.digest)),
                &[],
                b"",
            )
            .await?;
        self.deleted(&resp, "DELETE blobs/<digest>").await?;
        let head = self
            .client
            .head(&self.path(&repo, &format!("blobs/{}", blob.digest)), &[])
            .await?;
        status(&head, &[404], "HEAD the deleted blob")
    }
}

fn check_length(resp: &Resp, len: usize) -> Step {
    ensure(
        resp.header("content-length").as_deref() == Some(len.to_string().as_str()),
        || {
            format!(
                "Content-Length {:?}, expected {len}",
                resp.header("content-length")
            )
        },
    )
}

fn check_digest(resp: &Resp, digest: &str) -> Step {
    match resp.header("docker-content-digest") {
        Some(d) if d != digest => Err(fail(format!(
            "Docker-Content-Digest {d}, expected {digest}"
        ))),
        _ => Ok(()),
    }
}
