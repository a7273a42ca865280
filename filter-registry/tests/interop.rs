//! Interop with real third-party software, on loopback:
//! - CNCF distribution (Debian `docker-registry` 2.8) as a foreign server for this crate's
//!   client: push/resolve/pull/list, every Wasm format, Basic auth (htpasswd) over TLS, and a
//!   blob tampered in its storage;
//! - `skopeo` (containers/image) as a foreign client of this crate's registry: inspect, list,
//!   copies to and from an `oci:` layout and between registries, digests preserved;
//! - `oras` (oras-py, PyPI) pushing and pulling through this crate's registry, token auth;
//! - this crate's client pulling from this crate's registry with a blob tampered on disk.
//!
//! A missing tool skips its test with a loud message, unless `CI` is set: then it fails.
//! `./setup.sh` installs all of them.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use support::{Raw, module, pki, push_format, push_index, registry, registry_with, tamper, tool};
use wasmesh_registry::artifact;
use wasmesh_registry::auth::Credentials;
use wasmesh_registry::cache::{ModuleCache, PullPolicy};
use wasmesh_registry::client::{Client, ClientConfig, ClientError, ImageRef};
use wasmesh_registry::format::ArtifactFormat;
use wasmesh_registry::store::Digest;

const APT_HINT: &str = "apt-get install docker-registry skopeo";

fn client() -> Client {
    Client::new(ClientConfig::default()).unwrap()
}

/// A CNCF distribution registry process on a free loopback port, storing under a temp dir.
struct DockerRegistry {
    child: tokio::process::Child,
    addr: String,
    storage: PathBuf,
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl DockerRegistry {
    /// Starts `docker-registry serve` with `extra` YAML appended to its configuration (auth,
    /// TLS). `None` when the binary is missing outside CI.
    async fn start(dir: &Path, extra: &str) -> Option<DockerRegistry> {
        let bin = tool("docker-registry", APT_HINT)?;
        let storage = dir.join("docker-registry-storage");
        let log = dir.join("docker-registry.log");
        // The port is found by binding it and letting go; should another process take it in
        // between, the registry exits and the next attempt picks another.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: wasmesh-interop-test\n{extra}",
                    storage.display()
                ),
            )
            .unwrap();
            let mut child = tokio::process::Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .kill_on_drop(true)
                .spawn()
                .expect("start docker-registry");
            // Ready when it accepts connections (poll, generously bounded).
            for _ in 0..600 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                    return Some(DockerRegistry {
                        child,
                        addr,
                        storage,
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.start_kill();
        }
        panic!(
            "docker-registry did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Where it stores a blob.
    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&d.hex()[..2])
            .join(d.hex())
            .join("data")
    }
}

async fn run(program: &Path, args: &[&str], cwd: Option<&Path>) -> (bool, Vec<u8>, String) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish", program.display()))
        .expect("run tool");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn layer_digest(manifest: &[u8]) -> Digest {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    v["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn our_client_against_docker_registry() {
    let dir = tempfile::tempdir().unwrap();
    let Some(dr) = DockerRegistry::start(dir.path(), "").await else {
        return;
    };
    let c = client();
    let host = dr.addr.clone();

    // Push, resolve, pull, list.
    let v1 = module(4000, 1);
    let v2 = module(4000, 2);
    let r1 = ImageRef::parse(&format!("{host}/filters/headers:v1")).unwrap();
    let r2 = ImageRef::parse(&format!("{host}/filters/headers:v2")).unwrap();
    let mut ann = BTreeMap::new();
    ann.insert(
        artifact::ANNOTATION_TITLE.to_string(),
        "headers.wasm".to_string(),
    );
    let d1 = c.push(&r1, &v1, &ann).await.unwrap();
    let d2 = c.push(&r2, &v2, &ann).await.unwrap();
    assert_eq!(c.resolve(&r1).await.unwrap(), d1);
    let p = c.pull(&r2).await.unwrap();
    assert_eq!(
        (p.manifest_digest, p.wasm, p.format),
        (d2.clone(), v2.clone(), ArtifactFormat::Cncf)
    );
    let pinned = ImageRef::parse(&format!("{host}/filters/headers@{d1}")).unwrap();
    assert_eq!(c.pull(&pinned).await.unwrap().wasm, v1);
    assert_eq!(c.list_tags(&r1).await.unwrap(), vec!["v1", "v2"]);
    let m = c.fetch_manifest(&r1).await.unwrap();
    assert_eq!(
        (m.digest, m.media_type.as_str()),
        (d1.clone(), artifact::MANIFEST_MEDIA_TYPE)
    );
    let missing = ImageRef::parse(&format!("{host}/filters/headers:nope")).unwrap();
    assert!(c.pull(&missing).await.unwrap_err().is_not_found());

    // Every format, laid out as its own tools do, pushed with plain HTTP calls.
    let raw = Raw::new(&host, None);
    let mut digests = Vec::new();
    for (i, fmt) in [
        ArtifactFormat::IstioDockerCompat,
        ArtifactFormat::IstioOciCompat,
        ArtifactFormat::SoloOci,
        ArtifactFormat::WasmToOci,
        ArtifactFormat::Cncf,
    ]
    .into_iter()
    .enumerate()
    {
        let wasm = module(1000 + i, 10 + i as u8);
        let d = push_format(&raw, "formats", fmt.name(), fmt, &wasm).await;
        let r = ImageRef::parse(&format!("{host}/formats:{}", fmt.name())).unwrap();
        let p = c.pull(&r).await.unwrap();
        assert_eq!((p.format, &p.wasm), (fmt, &wasm), "{fmt}");
        assert_eq!(p.manifest_digest, d);
        digests.push((d, fmt));
    }
    // An index over two of them, the wasm one second.
    let size_of =
        |d: &Digest| -> usize { std::fs::metadata(dr.blob_path(d)).unwrap().len() as usize };
    let (solo, _) = &digests[2];
    let (compat, _) = &digests[0];
    let idx = push_index(
        &raw,
        "formats",
        "multi",
        &[
            (compat.clone(), size_of(compat), "amd64", "linux"),
            (solo.clone(), size_of(solo), "wasm", "wasip1"),
        ],
    )
    .await;
    let p = c
        .pull(&ImageRef::parse(&format!("{host}/formats:multi")).unwrap())
        .await
        .unwrap();
    assert_eq!(
        (p.manifest_digest, p.format),
        (idx, ArtifactFormat::SoloOci)
    );

    // The module cache over a foreign registry.
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ModuleCache::new(cache_dir.path().to_path_buf());
    let f = cache
        .fetch(&c, &r1, PullPolicy::Always, None)
        .await
        .unwrap();
    assert_eq!((f.from_cache, f.wasm), (false, v1.clone()));
    let f = cache
        .fetch(&c, &r1, PullPolicy::Always, None)
        .await
        .unwrap();
    assert!(f.from_cache);

    // Hostile: a blob tampered in the foreign registry's storage.
    let layer = layer_digest(&c.fetch_manifest(&r2).await.unwrap().bytes);
    tamper(&dr.blob_path(&layer));
    let err = c.pull(&r2).await.unwrap_err();
    assert!(matches!(err, ClientError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn basic_auth_and_tls_on_docker_registry() {
    let dir = tempfile::tempdir().unwrap();
    let Some(python) = tool("python3", "apt-get install python3") else {
        return;
    };
    // An htpasswd file with a bcrypt hash (the only kind distribution takes).
    let (ok, hash, err) = run(
        &python,
        &[
            "-W",
            "ignore",
            "-c",
            "import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
            "s3cret",
        ],
        None,
    )
    .await;
    assert!(ok, "bcrypt hash: {err}");
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("builder:{}", String::from_utf8_lossy(&hash).trim()),
    )
    .unwrap();
    let (ca, cert, key) = pki(dir.path());
    let extra = format!(
        "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: wasmesh-interop\n    path: {}\n",
        cert.display(),
        key.display(),
        htpasswd.display()
    );
    let Some(dr) = DockerRegistry::start(dir.path(), &extra).await else {
        return;
    };
    let config = dir.path().join("docker-config.json");
    std::fs::write(
        &config,
        serde_json::json!({"auths": {&dr.addr: {"auth": BASE64.encode("builder:s3cret")}}})
            .to_string(),
    )
    .unwrap();
    // Loopback: tried over plain HTTP first; Go's "HTTP request to an HTTPS server" answer
    // moves the client to verified HTTPS. Then a Basic challenge, answered from the config.
    let c = Client::new(ClientConfig {
        ca_file: Some(ca.clone()),
        credentials: Credentials::load(Some(&config), None).unwrap(),
        ..ClientConfig::default()
    })
    .unwrap();
    let r = ImageRef::parse(&format!("{}/secure/filter:v1", dr.addr)).unwrap();
    let wasm = module(20_000, 3);
    let d = c.push(&r, &wasm, &BTreeMap::new()).await.unwrap();
    let p = c.pull(&r).await.unwrap();
    assert_eq!((p.manifest_digest, p.wasm), (d, wasm));
    assert_eq!(c.list_tags(&r).await.unwrap(), vec!["v1"]);

    // No credentials: refused with the registry's own words.
    let anonymous = Client::new(ClientConfig {
        ca_file: Some(ca),
        ..ClientConfig::default()
    })
    .unwrap();
    let err = anonymous.pull(&r).await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err}");
    // Not trusting the CA: a certificate error, never a plain-HTTP fallback.
    let err = client().pull(&r).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn skopeo_inspects_lists_and_copies_through_our_registry() {
    let Some(skopeo) = tool("skopeo", APT_HINT) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ours = registry_with(&dir.path().join("ours"), Some("p"), None).await;
    let other = registry_with(&dir.path().join("other"), Some("q"), None).await;
    let (a, b) = (
        ours.local_addr().to_string(),
        other.local_addr().to_string(),
    );
    let pusher = Client::new(ClientConfig {
        credentials: Credentials::Token("p".into()),
        ..ClientConfig::default()
    })
    .unwrap();
    let c = client();
    let wasm = module(300_000, 4);
    let mut ann = BTreeMap::new();
    ann.insert(
        artifact::ANNOTATION_TITLE.to_string(),
        "filter.wasm".to_string(),
    );
    let r = ImageRef::parse(&format!("{a}/filters/sk:v1")).unwrap();
    let d = pusher.push(&r, &wasm, &ann).await.unwrap();
    let manifest = c.fetch_manifest(&r).await.unwrap().bytes;

    let sk = |args: Vec<String>| {
        let skopeo = skopeo.clone();
        async move {
            let mut all = vec!["--insecure-policy".to_string()];
            all.extend(args);
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            let (ok, out, err) = run(&skopeo, &refs, None).await;
            assert!(ok, "skopeo {all:?}: {err}");
            out
        }
    };
    // inspect --raw gives the manifest byte for byte; list-tags lists.
    let raw = sk(vec![
        "inspect".into(),
        "--raw".into(),
        "--tls-verify=false".into(),
        format!("docker://{a}/filters/sk:v1"),
    ])
    .await;
    assert_eq!(raw, manifest.to_vec());
    let tags = sk(vec![
        "list-tags".into(),
        "--tls-verify=false".into(),
        format!("docker://{a}/filters/sk"),
    ])
    .await;
    let tags: serde_json::Value = serde_json::from_slice(&tags).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));

    // Out to an OCI layout, digests preserved.
    let layout = dir.path().join("layout");
    sk(vec![
        "copy".into(),
        "--preserve-digests".into(),
        "--src-tls-verify=false".into(),
        format!("docker://{a}/filters/sk:v1"),
        format!("oci:{}:v1", layout.display()),
    ])
    .await;
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], d.to_string());
    let blob = |d: &Digest| layout.join("blobs/sha256").join(d.hex());
    assert_eq!(std::fs::read(blob(&d)).unwrap(), manifest.to_vec());
    assert_eq!(
        std::fs::read(blob(&Digest::sha256_of(&wasm))).unwrap(),
        wasm
    );

    // Back in, to another registry (so every blob is uploaded: POST, streamed PATCH without
    // Content-Range, PUT), through that registry's token service.
    sk(vec![
        "copy".into(),
        "--preserve-digests".into(),
        "--dest-tls-verify=false".into(),
        "--dest-creds".into(),
        "anyone:q".into(),
        format!("oci:{}:v1", layout.display()),
        format!("docker://{b}/copied/sk:v1"),
    ])
    .await;
    let back = ImageRef::parse(&format!("{b}/copied/sk:v1")).unwrap();
    assert_eq!(c.resolve(&back).await.unwrap(), d);
    let p = c.pull(&back).await.unwrap();
    assert_eq!((p.manifest_digest, p.wasm), (d.clone(), wasm.clone()));
    // And registry to registry, into a new repository of the first one.
    sk(vec![
        "copy".into(),
        "--preserve-digests".into(),
        "--src-tls-verify=false".into(),
        "--dest-tls-verify=false".into(),
        "--dest-creds".into(),
        "anyone:p".into(),
        format!("docker://{b}/copied/sk:v1"),
        format!("docker://{a}/again/sk:v2"),
    ])
    .await;
    let again = ImageRef::parse(&format!("{a}/again/sk:v2")).unwrap();
    assert_eq!(c.pull(&again).await.unwrap().manifest_digest, d);
    // Without credentials skopeo's push is refused.
    let (ok, _, err) = run(
        &skopeo,
        &[
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{b}/denied/sk:v1"),
        ],
        None,
    )
    .await;
    assert!(!ok);
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("401"),
        "{err}"
    );
    ours.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn skopeo_copies_every_format_from_docker_registry_to_ours() {
    let Some(skopeo) = tool("skopeo", APT_HINT) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(dr) = DockerRegistry::start(dir.path(), "").await else {
        return;
    };
    let ours = registry(&dir.path().join("ours")).await;
    let a = ours.local_addr().to_string();
    let raw = Raw::new(&dr.addr, None);
    let c = client();
    for (i, fmt) in [
        ArtifactFormat::IstioDockerCompat,
        ArtifactFormat::IstioOciCompat,
        ArtifactFormat::SoloOci,
        ArtifactFormat::WasmToOci,
        ArtifactFormat::Cncf,
    ]
    .into_iter()
    .enumerate()
    {
        let wasm = module(2000 + i, 20 + i as u8);
        let d = push_format(&raw, "src", fmt.name(), fmt, &wasm).await;
        let (ok, _, err) = run(
            &skopeo,
            &[
                "--insecure-policy",
                "copy",
                "--preserve-digests",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                &format!("docker://{}/src:{}", dr.addr, fmt.name()),
                &format!("docker://{a}/dst:{}", fmt.name()),
            ],
            None,
        )
        .await;
        assert!(ok, "skopeo copy {fmt}: {err}");
        let p = c
            .pull(&ImageRef::parse(&format!("{a}/dst:{}", fmt.name())).unwrap())
            .await
            .unwrap();
        assert_eq!(
            (p.manifest_digest, p.format, p.wasm),
            (d, fmt, wasm),
            "{fmt}"
        );
    }
    ours.shutdown().await;
}

const ORAS_SCRIPT: &str = r#"
import sys
import oras.provider

host, password, mode, target = sys.argv[1:5]
reg = oras.provider.Registry(hostname=host, insecure=True)
reg.auth.set_basic_auth("oras-user", password)
if mode == "push":
    reg.push(target=target, files=["plugin.wasm:application/wasm"])
    print("pushed")
else:
    for f in reg.pull(target=target, outdir="pulled"):
        print(f)
"#;

#[tokio::test]
async fn oras_pushes_and_pulls_through_our_registry() {
    let Some(python) = tool("python3", "apt-get install python3") else {
        return;
    };
    let (ok, _, _) = run(&python, &["-c", "import oras.provider"], None).await;
    if !ok {
        assert!(
            !support::in_ci(),
            "oras-py is not installed and CI is set: run ./setup.sh (pip install oras)"
        );
        support::skip_notice(
            "the oras Python package is not installed (pip install oras; ./setup.sh does it). This interop test did not run.",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reg = registry_with(&dir.path().join("store"), Some("p"), None).await;
    let host = reg.local_addr().to_string();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let script = dir.path().join("oras_client.py");
    std::fs::write(&script, ORAS_SCRIPT).unwrap();
    let script = script.display().to_string();

    // oras pushes plugin.wasm (through the token service, Basic credentials), we pull it.
    let wasm = module(50_000, 5);
    std::fs::write(work.join("plugin.wasm"), &wasm).unwrap();
    let (ok, out, err) = run(
        &python,
        &[
            &script,
            &host,
            "p",
            "push",
            &format!("{host}/filters/oras:v1"),
        ],
        Some(&work),
    )
    .await;
    assert!(
        ok && String::from_utf8_lossy(&out).contains("pushed"),
        "oras push: {err}"
    );
    let c = client();
    let p = c
        .pull(&ImageRef::parse(&format!("{host}/filters/oras:v1")).unwrap())
        .await
        .unwrap();
    assert_eq!((p.format, p.wasm), (ArtifactFormat::Cncf, wasm.clone()));

    // We push, oras pulls (the layer's title names the file).
    let ours = module(60_000, 6);
    let mut ann = BTreeMap::new();
    ann.insert(
        artifact::ANNOTATION_TITLE.to_string(),
        "filter.wasm".to_string(),
    );
    let pusher = Client::new(ClientConfig {
        credentials: Credentials::Token("p".into()),
        ..ClientConfig::default()
    })
    .unwrap();
    pusher
        .push(
            &ImageRef::parse(&format!("{host}/filters/ours:v1")).unwrap(),
            &ours,
            &ann,
        )
        .await
        .unwrap();
    let (ok, out, err) = run(
        &python,
        &[
            &script,
            &host,
            "p",
            "pull",
            &format!("{host}/filters/ours:v1"),
        ],
        Some(&work),
    )
    .await;
    assert!(ok, "oras pull: {err}");
    assert!(
        String::from_utf8_lossy(&out).contains("filter.wasm"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        std::fs::read(work.join("pulled/filter.wasm")).unwrap(),
        ours
    );

    reg.shutdown().await;
}

#[tokio::test]
async fn a_blob_tampered_in_our_store_fails_the_pull() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    let r = ImageRef::parse(&format!("{}/filters/t:v1", reg.local_addr())).unwrap();
    let c = client();
    let wasm = module(10_000, 7);
    c.push(&r, &wasm, &BTreeMap::new()).await.unwrap();
    assert_eq!(c.pull(&r).await.unwrap().wasm, wasm);
    tamper(
        &dir.path()
            .join("blobs/sha256")
            .join(Digest::sha256_of(&wasm).hex()),
    );
    let err = c.pull(&r).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::DigestMismatch { what, .. } if what.contains("blob")),
        "{err}"
    );
    // The module cache refuses it too, and stores nothing.
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ModuleCache::new(cache_dir.path().to_path_buf());
    assert!(
        cache
            .fetch(&c, &r, PullPolicy::IfNotPresent, None)
            .await
            .is_err()
    );
    assert!(support::files_under(&cache_dir.path().join("modules")).is_empty());
    reg.shutdown().await;
}
