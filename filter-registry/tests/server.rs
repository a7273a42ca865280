use std::path::Path;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmesh_registry::server::{RegistryConfig, RunningRegistry, serve};
use wasmesh_registry::store::Digest;

struct H {
    reg: RunningRegistry,
    client: Client<HttpConnector, Full<Bytes>>,
}

struct R {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl R {
    fn h(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        v["errors"][0]["code"].as_str().unwrap().to_string()
    }
}

async fn start(root: &Path, push: Option<&str>, pull: Option<&str>) -> H {
    let reg = serve(RegistryConfig {
        root: root.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        push_token: push.map(str::to_string),
        pull_token: pull.map(str::to_string),
    })
    .await
    .unwrap();
    H {
        reg,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl H {
    async fn req(&self, m: Method, path: &str, hdrs: &[(&str, &str)], body: &[u8]) -> R {
        let url = format!("http://{}{}", self.reg.local_addr(), path);
        let mut b = Request::builder().method(m).uri(url);
        for (k, v) in hdrs {
            b = b.header(*k, *v);
        }
        let resp = self
            .client
            .request(b.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        R {
            status,
            headers,
            body,
        }
    }
    async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        let r = self
            .req(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                &[],
                data,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        d
    }
}

fn manifest(
    config: &Digest,
    clen: usize,
    layer: &Digest,
    llen: usize,
    subject: Option<(&Digest, usize)>,
) -> Vec<u8> {
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.wasm.config.v0+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config.to_string(), "size": clen},
        "layers": [{"mediaType": "application/wasm", "digest": layer.to_string(), "size": llen}],
        "annotations": {"k": "v"}
    });
    if let Some((s, n)) = subject {
        m["subject"] = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": s.to_string(), "size": n});
        m["artifactType"] = serde_json::Value::String("application/x-sig".into());
    }
    serde_json::to_vec(&m).unwrap()
}

fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn ping_blobs_ranges_and_monolithic() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), None, None).await;
    let r = h.req(Method::GET, "/v2/", &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);

    // POST + PUT monolithic.
    let data = b"0123456789";
    let d = Digest::sha256_of(data);
    let r = h
        .req(Method::POST, "/v2/a/b/blobs/uploads/", &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(!r.h("docker-upload-uuid").is_empty());
    let loc = r.h("location").to_string();
    let r = h
        .req(Method::PUT, &format!("{loc}?digest={d}"), &[], data)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.h("docker-content-digest"), d.to_string());
    assert_eq!(r.h("location"), format!("/v2/a/b/blobs/{d}"));

    let r = h
        .req(Method::GET, &format!("/v2/a/b/blobs/{d}"), &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], data);
    let r = h
        .req(Method::HEAD, &format!("/v2/a/b/blobs/{d}"), &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.h("content-length"), "10");
    assert_eq!(r.h("docker-content-digest"), d.to_string());
    let r = h
        .req(
            Method::GET,
            &format!("/v2/a/b/blobs/{d}"),
            &[("range", "bytes=2-5")],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.body[..], b"2345");
    assert_eq!(r.h("content-range"), "bytes 2-5/10");
    let r = h
        .req(
            Method::GET,
            &format!("/v2/a/b/blobs/{d}"),
            &[("range", "bytes=20-30")],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);

    // Wrong digest on single POST and on PUT: DIGEST_INVALID, nothing stored.
    let wrong = Digest::sha256_of(b"nope");
    let r = h
        .req(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?digest={wrong}"),
            &[],
            b"xyz",
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let r = h.req(Method::POST, "/v2/a/blobs/uploads/", &[], b"").await;
    let loc = r.h("location").to_string();
    let r = h
        .req(Method::PUT, &format!("{loc}?digest={wrong}"), &[], b"xyz")
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    for dg in [wrong.clone(), Digest::sha256_of(b"xyz")] {
        let r = h
            .req(Method::HEAD, &format!("/v2/a/blobs/{dg}"), &[], b"")
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    let r = h
        .req(Method::GET, &format!("/v2/a/blobs/{wrong}"), &[], b"")
        .await;
    assert_eq!(r.code(), "BLOB_UNKNOWN");

    // Mount: existing blob → 201; missing → 202 upload session.
    let r = h
        .req(
            Method::POST,
            &format!("/v2/c/blobs/uploads/?mount={d}&from=a/b"),
            &[],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.h("location"), format!("/v2/c/blobs/{d}"));
    let r = h
        .req(
            Method::POST,
            &format!("/v2/c/blobs/uploads/?mount={wrong}&from=a/b"),
            &[],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(!r.h("docker-upload-uuid").is_empty());

    // Delete blob.
    let r = h
        .req(Method::DELETE, &format!("/v2/a/b/blobs/{d}"), &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = h
        .req(Method::GET, &format!("/v2/a/b/blobs/{d}"), &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    h.reg.shutdown().await;
}

#[tokio::test]
async fn chunked_and_streamed_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), None, None).await;
    let r = h.req(Method::POST, "/v2/x/blobs/uploads/", &[], b"").await;
    let loc = r.h("location").to_string();
    let r = h
        .req(Method::PATCH, &loc, &[("content-range", "0-4")], b"hello")
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.h("range"), "0-4");
    // Out of order → 416, upload unchanged.
    let r = h
        .req(Method::PATCH, &loc, &[("content-range", "7-9")], b"abc")
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let r = h
        .req(Method::PATCH, &loc, &[("content-range", "5-9")], b"ab")
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let r = h.req(Method::GET, &loc, &[], b"").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.h("range"), "0-4");
    // Streamed PATCH without Content-Range appends.
    let r = h.req(Method::PATCH, &loc, &[], b" wor").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.h("range"), "0-8");
    // The partial upload is never served as a blob.
    let partial = Digest::sha256_of(b"hello wor");
    let full = Digest::sha256_of(b"hello world");
    for dg in [&partial, &full] {
        let r = h
            .req(Method::GET, &format!("/v2/x/blobs/{dg}"), &[], b"")
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    // A closing chunk out of order → 416, and the upload stays open (spec: "MUST respond 416").
    let r = h
        .req(
            Method::PUT,
            &format!("{loc}?digest={full}"),
            &[("content-range", "0-1")],
            b"ld",
        )
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    // A range whose length overflows is refused, not a panic.
    let r = h
        .req(
            Method::PATCH,
            &loc,
            &[("content-range", "0-18446744073709551615")],
            b"x",
        )
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let r = h
        .req(
            Method::PUT,
            &format!("{loc}?digest={full}"),
            &[("content-range", "9-10")],
            b"ld",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h
        .req(Method::GET, &format!("/v2/x/blobs/{full}"), &[], b"")
        .await;
    assert_eq!(&r.body[..], b"hello world");
    // Upload is gone after completion.
    let r = h.req(Method::GET, &loc, &[], b"").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN")
    );
    // DELETE upload.
    let r = h.req(Method::POST, "/v2/x/blobs/uploads/", &[], b"").await;
    let loc = r.h("location").to_string();
    let r = h.req(Method::DELETE, &loc, &[], b"").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h.req(Method::GET, &loc, &[], b"").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // PUT without digest.
    let r = h.req(Method::POST, "/v2/x/blobs/uploads/", &[], b"").await;
    let loc = r.h("location").to_string();
    let r = h.req(Method::PUT, &loc, &[], b"").await;
    assert_eq!(r.code(), "DIGEST_INVALID");
}

#[tokio::test]
async fn hostile_paths_are_rejected_and_nothing_escapes_the_root() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("root");
    let h = start(&root, None, None).await;
    let d = Digest::sha256_of(b"x");
    let cases: Vec<(Method, String, &str)> = vec![
        (
            Method::POST,
            "/v2/../evil/blobs/uploads/".into(),
            "NAME_INVALID",
        ),
        (
            Method::POST,
            "/v2/%2e%2e/evil/blobs/uploads/".into(),
            "NAME_INVALID",
        ),
        (
            Method::POST,
            "/v2/a/%2e%2e/%2e%2e/blobs/uploads/".into(),
            "NAME_INVALID",
        ),
        (
            Method::POST,
            "/v2/UPPER/blobs/uploads/".into(),
            "NAME_INVALID",
        ),
        (
            Method::PUT,
            "/v2/a/manifests/..%2f..%2fx".into(),
            "MANIFEST_INVALID",
        ),
        (
            Method::PUT,
            "/v2/a/manifests/.hidden".into(),
            "MANIFEST_INVALID",
        ),
        (
            Method::GET,
            "/v2/a/blobs/sha256:..%2f..%2f".into(),
            "DIGEST_INVALID",
        ),
        (
            Method::GET,
            format!("/v2/a/blobs/sha256:{}", "A".repeat(64)),
            "DIGEST_INVALID",
        ),
        (Method::GET, "/v2/a/blobs/md5:abc".into(), "DIGEST_INVALID"),
        (
            Method::POST,
            "/v2/a/blobs/uploads/?digest=sha256:zz".into(),
            "DIGEST_INVALID",
        ),
        (
            Method::PATCH,
            "/v2/a/blobs/uploads/..%2f..%2fx".into(),
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            Method::PUT,
            format!("/v2/a/blobs/uploads/..?digest={d}"),
            "BLOB_UPLOAD_UNKNOWN",
        ),
    ];
    for (m, p, code) in cases {
        let r = h.req(m.clone(), &p, &[], b"x").await;
        assert!(r.status.is_client_error(), "{m} {p}: {}", r.status);
        assert_eq!(r.code(), code, "{m} {p}");
    }
    // hyper normalises nothing: literal ../ segments are rejected by name validation.
    let r = h.req(Method::GET, "/v2/a/../../tags/list", &[], b"").await;
    assert!(r.status.is_client_error());
    // Only the root has files; nothing elsewhere in the parent.
    for e in std::fs::read_dir(parent.path()).unwrap().flatten() {
        assert_eq!(e.path(), root);
    }
    assert!(all_files(&root.join("blobs")).is_empty());
    assert!(all_files(&root.join("repositories")).is_empty());
}

#[tokio::test]
async fn auth_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), Some("s3cret"), None).await;
    let data = b"abc";
    let d = Digest::sha256_of(data);
    let path = format!("/v2/a/blobs/uploads/?digest={d}");
    let r = h.req(Method::POST, &path, &[], data).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "UNAUTHORIZED");
    let challenges: Vec<_> = r
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        challenges,
        [format!(
            r#"Bearer realm="http://{}/token",service="wasmesh-registry",scope="repository:a:pull,push""#,
            h.reg.local_addr()
        )]
    );
    let r = h
        .req(
            Method::POST,
            &path,
            &[("authorization", "Bearer wrong")],
            data,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = h
        .req(Method::HEAD, &format!("/v2/a/blobs/{d}"), &[], b"")
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "nothing stored by refused pushes"
    );
    let r = h
        .req(
            Method::POST,
            &path,
            &[("authorization", "Bearer s3cret")],
            data,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Basic with password = token ("u:s3cret").
    let r = h
        .req(
            Method::DELETE,
            &format!("/v2/a/blobs/{d}"),
            &[("authorization", "Basic dTpzM2NyZXQ=")],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    // Pull is anonymous here…
    let r = h
        .req(Method::GET, &format!("/v2/a/blobs/{d}"), &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // …but the version check asks for some credential, so that clients deciding from it
    // whether to log in (containers/image, Docker) learn the realm; an anonymous token from
    // the token service passes it.
    let r = h.req(Method::GET, "/v2/", &[], b"").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = h.req(Method::GET, "/token", &[], b"").await;
    let anon: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let anon = format!("Bearer {}", anon["token"].as_str().unwrap());
    let r = h
        .req(Method::GET, "/v2/", &[("authorization", &anon)], b"")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    drop(h);

    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), Some("p"), Some("q")).await;
    assert_eq!(
        h.req(Method::GET, "/v2/", &[], b"").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.req(Method::GET, "/v2/", &[("authorization", "Bearer q")], b"")
            .await
            .status,
        StatusCode::OK
    );

    // No push token + non-loopback bind is refused.
    let err = serve(RegistryConfig {
        root: dir.path().to_path_buf(),
        listen: "0.0.0.0:0".parse().unwrap(),
        push_token: None,
        pull_token: None,
    })
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("without a push token"));
}

#[tokio::test]
async fn manifests_tags_referrers_restart() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), None, None).await;
    let config = b"{}";
    let layer = b"\0asm\x01\0\0\0";
    let cd = h.push_blob("f", config).await;
    let ld = h.push_blob("f", layer).await;
    let m = manifest(&cd, 2, &ld, 8, None);
    let md = Digest::sha256_of(&m);

    // Missing blob → MANIFEST_BLOB_UNKNOWN.
    let missing = Digest::sha256_of(b"missing");
    let bad = manifest(&cd, 2, &missing, 7, None);
    let r = h.req(Method::PUT, "/v2/f/manifests/v1", &[], &bad).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
    );
    let r = h
        .req(Method::PUT, "/v2/f/manifests/v1", &[], b"not json")
        .await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    // Over 4 MiB → 413.
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = h.req(Method::PUT, "/v2/f/manifests/big", &[], &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Push by digest with wrong digest.
    let r = h
        .req(Method::PUT, &format!("/v2/f/manifests/{missing}"), &[], &m)
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");

    for tag in ["v1", "v2", "v3", "latest"] {
        let r = h
            .req(Method::PUT, &format!("/v2/f/manifests/{tag}"), &[], &m)
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.h("docker-content-digest"), md.to_string());
        assert_eq!(r.h("location"), format!("/v2/f/manifests/{md}"));
    }
    for reference in ["v1".to_string(), md.to_string()] {
        let r = h
            .req(
                Method::GET,
                &format!("/v2/f/manifests/{reference}"),
                &[],
                b"",
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], &m[..], "exact bytes");
        assert_eq!(
            r.h("content-type"),
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(r.h("docker-content-digest"), md.to_string());
    }
    let r = h.req(Method::HEAD, "/v2/f/manifests/v2", &[], b"").await;
    assert_eq!(r.h("content-length"), m.len().to_string());
    let r = h.req(Method::GET, "/v2/f/manifests/nope", &[], b"").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );

    // Tag list pagination.
    let r = h.req(Method::GET, "/v2/f/tags/list", &[], b"").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["latest", "v1", "v2", "v3"]));
    let r = h.req(Method::GET, "/v2/f/tags/list?n=2", &[], b"").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["latest", "v1"]));
    assert_eq!(r.h("link"), "</v2/f/tags/list?n=2&last=v1>; rel=\"next\"");
    let r = h
        .req(Method::GET, "/v2/f/tags/list?n=2&last=v1", &[], b"")
        .await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["v2", "v3"]));
    assert_eq!(r.h("link"), "");
    let r = h.req(Method::GET, "/v2/f/tags/list?n=0", &[], b"").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!([]));
    let r = h.req(Method::GET, "/v2/nope/tags/list", &[], b"").await;
    assert_eq!(r.code(), "NAME_UNKNOWN");

    // Referrers.
    let sig_layer = h.push_blob("f", b"signature").await;
    let sig = manifest(&cd, 2, &sig_layer, 9, Some((&md, m.len())));
    let sd = Digest::sha256_of(&sig);
    let r = h
        .req(Method::PUT, &format!("/v2/f/manifests/{sd}"), &[], &sig)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.h("oci-subject"), md.to_string());
    let r = h
        .req(Method::GET, &format!("/v2/f/referrers/{md}"), &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.h("content-type"),
        "application/vnd.oci.image.index.v1+json"
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], sd.to_string());
    assert_eq!(v["manifests"][0]["artifactType"], "application/x-sig");
    assert_eq!(v["manifests"][0]["annotations"]["k"], "v");
    let r = h
        .req(
            Method::GET,
            &format!("/v2/f/referrers/{md}?artifactType=application/x-other"),
            &[],
            b"",
        )
        .await;
    assert_eq!(r.h("oci-filters-applied"), "artifactType");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));
    let r = h
        .req(Method::GET, &format!("/v2/f/referrers/{missing}"), &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h
        .req(Method::GET, "/v2/f/referrers/sha256:bad", &[], b"")
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");

    // Restart on the same root keeps everything acknowledged.
    h.reg.shutdown().await;
    let h = start(dir.path(), None, None).await;
    let r = h.req(Method::GET, "/v2/f/manifests/v3", &[], b"").await;
    assert_eq!(&r.body[..], &m[..]);
    let r = h
        .req(Method::GET, &format!("/v2/f/blobs/{ld}"), &[], b"")
        .await;
    assert_eq!(&r.body[..], layer);

    // Delete by tag (untag) and by digest.
    let r = h.req(Method::DELETE, "/v2/f/manifests/v3", &[], b"").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = h.req(Method::GET, "/v2/f/manifests/v3", &[], b"").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h.req(Method::GET, "/v2/f/manifests/v1", &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h
        .req(Method::DELETE, &format!("/v2/f/manifests/{md}"), &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = h.req(Method::GET, "/v2/f/manifests/v1", &[], b"").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// Blobs are shared by every repository, manifests included: a blob some manifest uses is not
/// deleted through any repository's name (that would break the others' manifests); an unused
/// one is.
#[tokio::test]
async fn a_blob_in_use_is_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), None, None).await;
    let config = h.push_blob("a", b"{}").await;
    let layer = h.push_blob("a", b"\0asm\x01\0\0\0").await;
    let m = manifest(&config, 2, &layer, 8, None);
    let r = h.req(Method::PUT, "/v2/a/manifests/v1", &[], &m).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let md = Digest::sha256_of(&m);
    for used in [&config, &layer, &md] {
        let r = h
            .req(Method::DELETE, &format!("/v2/zzz/blobs/{used}"), &[], b"")
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            "{used}"
        );
    }
    let r = h.req(Method::GET, "/v2/a/manifests/v1", &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h
        .req(Method::GET, &format!("/v2/a/blobs/{layer}"), &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let unused = h.push_blob("a", b"unused").await;
    let r = h
        .req(Method::DELETE, &format!("/v2/a/blobs/{unused}"), &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    h.reg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_of_the_same_blob() {
    let dir = tempfile::tempdir().unwrap();
    let h = std::sync::Arc::new(start(dir.path(), None, None).await);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let d = Digest::sha256_of(&data);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (h, data, d) = (h.clone(), data.clone(), d.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                h.push_blob("c", &data).await;
            } else {
                let r = h.req(Method::POST, "/v2/c/blobs/uploads/", &[], b"").await;
                let loc = r.h("location").to_string();
                let mut off = 0;
                for chunk in data.chunks(50_000) {
                    let cr = format!("{}-{}", off, off + chunk.len() - 1);
                    let r = h
                        .req(Method::PATCH, &loc, &[("content-range", &cr)], chunk)
                        .await;
                    assert_eq!(r.status, StatusCode::ACCEPTED);
                    off += chunk.len();
                }
                let r = h
                    .req(Method::PUT, &format!("{loc}?digest={d}"), &[], b"")
                    .await;
                assert_eq!(r.status, StatusCode::CREATED);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = h
        .req(Method::GET, &format!("/v2/c/blobs/{d}"), &[], b"")
        .await;
    assert_eq!(&r.body[..], &data[..]);
    assert_eq!(Digest::sha256_of(&r.body), d);
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn token_of(r: &R) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["token"], v["access_token"]);
    assert_eq!(v["expires_in"], 300);
    v["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn token_service_issues_scoped_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), Some("p"), Some("q")).await;
    let addr = h.reg.local_addr();

    // The ping's challenge names the realm and service, no scope; the Host header is used.
    let r = h.req(Method::GET, "/v2/", &[], b"").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.h("www-authenticate"),
        format!(r#"Bearer realm="http://{addr}/token",service="wasmesh-registry""#)
    );
    let r = h
        .req(
            Method::GET,
            "/v2/a/tags/list",
            &[("host", "reg.example:5000")],
            b"",
        )
        .await;
    assert_eq!(
        r.h("www-authenticate"),
        r#"Bearer realm="http://reg.example:5000/token",service="wasmesh-registry",scope="repository:a:pull""#
    );

    // Pull credentials: a pull token, which cannot push.
    let q = basic("anyone", "q");
    let r = h
        .req(
            Method::GET,
            "/token?service=wasmesh-registry&scope=repository:a:pull,push",
            &[("authorization", &q)],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.h("content-type"), "application/json");
    let pull = format!("Bearer {}", token_of(&r));
    let d = Digest::sha256_of(b"x");
    let r = h
        .req(
            Method::HEAD,
            &format!("/v2/a/blobs/{d}"),
            &[("authorization", &pull)],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "authorized, just absent");
    let r = h
        .req(
            Method::POST,
            "/v2/a/blobs/uploads/",
            &[("authorization", &pull)],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Push credentials, but only pull asked for: only pull granted.
    let r = h
        .req(
            Method::GET,
            "/token?scope=repository%3Aa%3Apull",
            &[("authorization", &basic("u", "p"))],
            b"",
        )
        .await;
    let t = format!("Bearer {}", token_of(&r));
    let r = h
        .req(
            Method::POST,
            "/v2/a/blobs/uploads/",
            &[("authorization", &t)],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Push asked for: granted, and pulls come with it.
    let r = h
        .req(
            Method::GET,
            "/token?scope=repository:a:pull,push",
            &[("authorization", &basic("u", "p"))],
            b"",
        )
        .await;
    let push = format!("Bearer {}", token_of(&r));
    for (m, path, want) in [
        (Method::POST, "/v2/a/blobs/uploads/", StatusCode::ACCEPTED),
        (Method::GET, "/v2/", StatusCode::OK),
    ] {
        let r = h.req(m, path, &[("authorization", &push)], b"").await;
        assert_eq!(r.status, want, "{path}");
    }
    // The push token itself also allows pulls.
    let r = h
        .req(Method::GET, "/v2/", &[("authorization", "Bearer p")], b"")
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // OAuth2 forms: refresh_token (Docker's identity token) and password.
    for form in [
        "grant_type=refresh_token&refresh_token=q&service=wasmesh-registry&scope=repository%3Aa%3Apull&client_id=x",
        "grant_type=password&username=u&password=q",
    ] {
        let r = h
            .req(
                Method::POST,
                "/token",
                &[("content-type", "application/x-www-form-urlencoded")],
                form.as_bytes(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{form}");
        let t = format!("Bearer {}", token_of(&r));
        let r = h
            .req(Method::GET, "/v2/", &[("authorization", &t)], b"")
            .await;
        assert_eq!(r.status, StatusCode::OK, "{form}");
    }

    // Refusals.
    for (method, auth, body) in [
        (Method::GET, Some(basic("u", "wrong")), ""),
        (Method::GET, None, ""),
        (
            Method::POST,
            None,
            "grant_type=refresh_token&refresh_token=wrong",
        ),
    ] {
        let mut hdrs = Vec::new();
        if let Some(a) = &auth {
            hdrs.push(("authorization", a.as_str()));
        }
        let r = h.req(method, "/token", &hdrs, body.as_bytes()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?} {body}");
        assert_eq!(r.h("www-authenticate"), r#"Basic realm="wasmesh-registry""#);
    }
    let r = h
        .req(
            Method::POST,
            "/token",
            &[],
            b"grant_type=client_credentials",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .req(
            Method::GET,
            "/v2/",
            &[("authorization", "Bearer not-issued")],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    drop(h);

    // An open registry answers anonymous token requests with a token granting nothing more.
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), Some("p"), None).await;
    let r = h
        .req(Method::GET, "/token?scope=repository:a:push", &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let anon = format!("Bearer {}", token_of(&r));
    let r = h
        .req(
            Method::POST,
            "/v2/a/blobs/uploads/",
            &[("authorization", &anon)],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn dev_spec_extras_sha512_uploads_cancel_and_tag_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), None, None).await;
    let data = b"sha512 content";
    let d512: Digest = format!("sha512:{}", {
        use sha2::Digest as _;
        sha2::Sha512::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    })
    .parse()
    .unwrap();

    // POST with digest-algorithm: the algorithm rides in the location.
    let r = h
        .req(
            Method::POST,
            "/v2/a/blobs/uploads/?digest-algorithm=sha512",
            &[],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let loc = r.h("location").to_string();
    assert!(loc.ends_with("?digest-algorithm=sha512"), "{loc}");
    let r = h.req(Method::PATCH, &loc, &[], data).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let loc = r.h("location").to_string();
    assert!(loc.ends_with("?digest-algorithm=sha512"), "{loc}");
    // A sha256 digest closing a sha512 upload is refused (and the upload stays open).
    let d256 = Digest::sha256_of(data);
    let r = h
        .req(Method::PUT, &format!("{loc}&digest={d256}"), &[], b"")
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let r = h.req(Method::GET, &loc, &[], b"").await;
    assert_eq!((r.status, r.h("range")), (StatusCode::NO_CONTENT, "0-13"));
    let r = h
        .req(Method::PUT, &format!("{loc}&digest={d512}"), &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h
        .req(Method::GET, &format!("/v2/a/blobs/{d512}"), &[], b"")
        .await;
    assert_eq!(&r.body[..], data);
    let r = h
        .req(
            Method::POST,
            "/v2/a/blobs/uploads/?digest-algorithm=md5",
            &[],
            b"",
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );

    // Cancel an upload: 204, then it is gone.
    let r = h.req(Method::POST, "/v2/a/blobs/uploads/", &[], b"").await;
    let loc = r.h("location").to_string();
    h.req(Method::PATCH, &loc, &[], b"partial").await;
    let r = h.req(Method::DELETE, &loc, &[], b"").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h.req(Method::GET, &loc, &[], b"").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN")
    );
    assert!(all_files(&dir.path().join("uploads")).is_empty());

    // Manifest by digest with tags.
    let cd = h.push_blob("a", b"{}").await;
    let ld = h.push_blob("a", b"\0asm\x01\0\0\0").await;
    let m = manifest(&cd, 2, &ld, 8, None);
    let md = Digest::sha256_of(&m);
    let r = h
        .req(
            Method::PUT,
            &format!("/v2/a/manifests/{md}?tag=1.0&tag=latest"),
            &[],
            &m,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.h("oci-tag"), "1.0, latest");
    let r = h.req(Method::GET, "/v2/a/tags/list", &[], b"").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["1.0", "latest"]));
    let r = h.req(Method::HEAD, "/v2/a/manifests/1.0", &[], b"").await;
    assert_eq!(r.h("docker-content-digest"), md.to_string());
    // Tags with a tag reference, or an invalid tag: refused, nothing tagged.
    for path in [
        "/v2/a/manifests/v9?tag=x".to_string(),
        format!("/v2/a/manifests/{md}?tag=ok&tag=.bad"),
    ] {
        let r = h.req(Method::PUT, &path, &[], &m).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
    }
    let too_many: String = (0..101).map(|i| format!("tag=t{i}&")).collect();
    let r = h
        .req(
            Method::PUT,
            &format!("/v2/a/manifests/{md}?{too_many}"),
            &[],
            &m,
        )
        .await;
    assert_eq!(r.status, StatusCode::URI_TOO_LONG);
    let r = h.req(Method::GET, "/v2/a/tags/list", &[], b"").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["1.0", "latest"]));
}

#[tokio::test]
async fn gc_keeps_everything_referenced_including_subjects_and_index_entries() {
    use std::time::Duration;
    use wasmesh_registry::cli;

    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), None, None).await;
    // An artifact M, a referrer R whose subject is M, then M deleted from the repository:
    // R still names M, so M and its blobs stay.
    let cd = h.push_blob("a", b"{}").await;
    let ld = h.push_blob("a", b"\0asm\x01\0\0\0m").await;
    let m = manifest(&cd, 2, &ld, 9, None);
    let md = Digest::sha256_of(&m);
    h.req(Method::PUT, "/v2/a/manifests/v1", &[], &m).await;
    let sig_layer = h.push_blob("a", b"signature").await;
    let referrer = manifest(&cd, 2, &sig_layer, 9, Some((&md, m.len())));
    let r = h
        .req(Method::PUT, "/v2/a/manifests/sig", &[], &referrer)
        .await;
    assert_eq!(r.h("oci-subject"), md.to_string());
    let r = h
        .req(Method::DELETE, &format!("/v2/a/manifests/{md}"), &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    // An index in repository b naming manifest N, N then deleted: N and its layer stay.
    let nl = h.push_blob("b", b"\0asm\x01\0\0\0n").await;
    let n = manifest(&cd, 2, &nl, 9, None);
    let nd = Digest::sha256_of(&n);
    h.req(Method::PUT, &format!("/v2/b/manifests/{nd}"), &[], &n)
        .await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": nd.to_string(), "size": n.len()}]
    }))
    .unwrap();
    let r = h.req(Method::PUT, "/v2/b/manifests/idx", &[], &index).await;
    assert_eq!(r.status, StatusCode::CREATED);
    h.req(Method::DELETE, &format!("/v2/b/manifests/{nd}"), &[], b"")
        .await;

    // Garbage: an orphan blob and an abandoned upload.
    let orphan = h.push_blob("a", b"orphan").await;
    let r = h.req(Method::POST, "/v2/a/blobs/uploads/", &[], b"").await;
    h.req(Method::PATCH, r.h("location"), &[], b"partial").await;
    let blob = |d: &Digest| dir.path().join("blobs/sha256").join(d.hex());

    // Young garbage is spared; a dry run removes nothing.
    let line = cli::gc(dir.path(), Duration::from_secs(3600), false).unwrap();
    assert!(line.contains("removed 0 blobs"), "{line}");
    assert!(line.contains("1 unreferenced younger"), "{line}");
    let line = cli::gc(dir.path(), Duration::ZERO, true).unwrap();
    assert!(
        line.starts_with("gc: would remove 1 blobs (6 bytes)"),
        "{line}"
    );
    assert!(line.ends_with("would remove 1 stale uploads"), "{line}");
    assert!(blob(&orphan).exists());

    let line = cli::gc(dir.path(), Duration::ZERO, false).unwrap();
    assert!(
        line.starts_with("gc: removed 1 blobs (6 bytes), kept 8 referenced"),
        "{line}"
    );
    assert!(!blob(&orphan).exists());
    assert!(all_files(&dir.path().join("uploads")).is_empty());
    for kept in [&cd, &ld, &md, &sig_layer, &nl, &nd] {
        assert!(blob(kept).exists(), "{kept} must survive gc");
    }
    // Everything kept is still served.
    let r = h
        .req(Method::GET, &format!("/v2/a/blobs/{ld}"), &[], b"")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(cli::gc(&dir.path().join("nothing-here"), Duration::ZERO, false).is_err());
}
