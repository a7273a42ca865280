//! Helpers shared by the integration tests: Wasm modules, raw OCI pushes (for the formats this
//! crate's client does not publish), and images in each format found in the wild.

#![allow(dead_code)]

use std::path::Path;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmesh_registry::format::{self, ArtifactFormat};
use wasmesh_registry::server::{RegistryConfig, RunningRegistry, serve};
use wasmesh_registry::store::Digest;

/// A valid Wasm module: the header and one custom section `pad` of `extra` bytes derived from
/// `seed`, so different seeds give different modules.
pub fn module(extra: usize, seed: u8) -> Vec<u8> {
    let mut payload = vec![3u8, b'p', b'a', b'd'];
    payload.extend((0..extra).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.push(0); // custom section
    let mut len = payload.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            m.push(byte);
            break;
        }
        m.push(byte | 0x80);
    }
    m.extend(payload);
    m
}

/// The crate's registry on a loopback port, without tokens.
pub async fn registry(root: &Path) -> RunningRegistry {
    registry_with(root, None, None).await
}

pub async fn registry_with(root: &Path, push: Option<&str>, pull: Option<&str>) -> RunningRegistry {
    serve(RegistryConfig {
        root: root.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        push_token: push.map(str::to_string),
        pull_token: pull.map(str::to_string),
    })
    .await
    .expect("registry")
}

/// Every file under `dir`.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Flips the last byte of the file `path`.
pub fn tamper(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read for tampering");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(path, &bytes).expect("write tampered");
}

/// A plain-HTTP OCI client speaking the wire protocol directly.
pub struct Raw {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    auth: Option<String>,
}

pub struct RawReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Raw {
    pub fn new(addr: &str, auth: Option<&str>) -> Raw {
        Raw {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
            auth: auth.map(str::to_string),
        }
    }

    pub async fn req(
        &self,
        method: Method,
        path_or_url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawReply {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(a) = &self.auth {
            b = b.header("authorization", a);
        }
        let resp = self
            .client
            .request(
                b.body(Full::new(Bytes::copy_from_slice(body)))
                    .expect("request"),
            )
            .await
            .expect("send");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        RawReply {
            status,
            headers,
            body,
        }
    }

    /// Uploads a blob: POST for a session, PUT with the content (what every registry takes).
    pub async fn put_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        let post = self
            .req(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                b"",
            )
            .await;
        assert_eq!(post.status, StatusCode::ACCEPTED, "POST upload");
        let loc = post.headers["location"].to_str().expect("location");
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = self
            .req(
                Method::PUT,
                &format!("{loc}{sep}digest={d}"),
                &[("content-type", "application/octet-stream")],
                data,
            )
            .await;
        assert_eq!(
            put.status,
            StatusCode::CREATED,
            "PUT blob: {}",
            String::from_utf8_lossy(&put.body)
        );
        d
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Digest {
        let r = self
            .req(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("content-type", media_type)],
                bytes,
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "PUT manifest: {}",
            String::from_utf8_lossy(&r.body)
        );
        Digest::sha256_of(bytes)
    }
}

/// A gzip-compressed tar holding `entries`.
pub fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *data).expect("tar");
    }
    builder.into_inner().expect("tar").finish().expect("gzip")
}

fn descriptor(media_type: &str, d: &Digest, size: usize) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": d.to_string(), "size": size})
}

/// Publishes `wasm` at `repo:tag` in `format`, the way that format's own tools lay it out.
/// Returns the manifest digest.
pub async fn push_format(
    raw: &Raw,
    repo: &str,
    tag: &str,
    fmt: ArtifactFormat,
    wasm: &[u8],
) -> Digest {
    // (manifest media type, config media type, config, layers as (media type, bytes))
    type Layout = (&'static str, &'static str, Vec<u8>, Vec<(String, Vec<u8>)>);
    let (manifest_type, config_type, config, layers): Layout =
        match fmt {
            ArtifactFormat::IstioDockerCompat | ArtifactFormat::IstioOciCompat => {
                let tar_gz = tar_gz(&[("plugin.wasm", wasm)]);
                let config = serde_json::json!({
                    "architecture": "amd64", "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": []}, "config": {}
                })
                .to_string()
                .into_bytes();
                if fmt == ArtifactFormat::IstioDockerCompat {
                    (
                        format::DOCKER_MANIFEST,
                        "application/vnd.docker.container.image.v1+json",
                        config,
                        vec![(format::DOCKER_LAYER.to_string(), tar_gz)],
                    )
                } else {
                    (
                        "application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.oci.image.config.v1+json",
                        config,
                        vec![(format::OCI_TAR_GZIP_LAYER.to_string(), tar_gz)],
                    )
                }
            }
            ArtifactFormat::SoloOci => (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.module.wasm.config.v1+json",
                br#"{"type":"envoy_proxy","abiVersions":["v0-097b7f2e4cc1fb490cc1943d0d633655ac3c522f"],"config":{"rootIds":["root"]}}"#.to_vec(),
                vec![
                    (
                        "application/vnd.module.wasm.runtime.config.v1+json".to_string(),
                        br#"{"type":"envoy_proxy","rootIds":["root"]}"#.to_vec(),
                    ),
                    (format::SOLO_LAYER.to_string(), wasm.to_vec()),
                ],
            ),
            ArtifactFormat::WasmToOci => (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.wasm.config.v1+json",
                b"{}".to_vec(),
                vec![(format::WASM_TO_OCI_LAYER.to_string(), wasm.to_vec())],
            ),
            ArtifactFormat::Cncf => (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.wasm.config.v0+json",
                br#"{"architecture":"wasm","os":"wasip1"}"#.to_vec(),
                vec![(format::CNCF_LAYER.to_string(), wasm.to_vec())],
            ),
        };
    let config_digest = raw.put_blob(repo, &config).await;
    let mut layer_descs = Vec::new();
    for (media_type, data) in &layers {
        let d = raw.put_blob(repo, data).await;
        layer_descs.push(descriptor(media_type, &d, data.len()));
    }
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": descriptor(config_type, &config_digest, config.len()),
        "layers": layer_descs,
    });
    if fmt == ArtifactFormat::IstioOciCompat {
        manifest["annotations"] = serde_json::json!({"module.wasm.image/variant": "compat"});
    }
    let bytes = serde_json::to_vec(&manifest).expect("json");
    raw.put_manifest(repo, tag, manifest_type, &bytes).await
}

/// Publishes an OCI image index at `repo:tag` listing `entries` (digest, size, architecture,
/// os), which must already be in `repo`. Returns the index digest.
pub async fn push_index(
    raw: &Raw,
    repo: &str,
    tag: &str,
    entries: &[(Digest, usize, &str, &str)],
) -> Digest {
    let manifests: Vec<_> = entries
        .iter()
        .map(|(d, size, arch, os)| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": d.to_string(),
                "size": size,
                "platform": {"architecture": arch, "os": os}
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": format::OCI_INDEX,
        "manifests": manifests,
    });
    let bytes = serde_json::to_vec(&index).expect("json");
    raw.put_manifest(repo, tag, format::OCI_INDEX, &bytes).await
}

/// Whether the tests run in CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The path of a third-party tool, or `None` (with a loud message) when it is missing and the
/// tests are not in CI. In CI a missing tool fails the test.
pub fn tool(name: &str, install_hint: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "{name} is not installed, and CI is set: run ./setup.sh ({install_hint})"
        );
        skip_notice(&format!(
            "{name} is not installed ({install_hint}; ./setup.sh does it). This interop test did not run."
        ));
    }
    found
}

/// A test CA and one server certificate for `localhost` and `127.0.0.1`, as PEM files in
/// `dir`: (CA file, certificate file, key file).
pub fn pki(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wasmesh registry test CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).expect("ca cert");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("leaf params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "registry");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, &ca).expect("sign leaf");
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("registry.pem"),
        dir.join("registry.key"),
    );
    std::fs::write(&ca_path, ca.pem()).expect("write ca");
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (ca_path, cert_path, key_path)
}

/// Prints a skip notice straight to stderr, past the test harness's output capture, so it is
/// seen even when the test passes.
pub fn skip_notice(what: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {what} ***\n");
}
