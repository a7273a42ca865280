//! The client against this crate's registry on loopback: push/pull round trips, every Wasm
//! format found in the wild, image indexes, caps, tampering, and the CLI functions.

mod support;

use std::collections::BTreeMap;

use support::{Raw, module, push_format, push_index, registry, registry_with, tamper};
use wasmesh_registry::client::{self, Client, ClientConfig, ClientError, ImageRef};
use wasmesh_registry::format::ArtifactFormat;
use wasmesh_registry::{artifact, cli};

fn client() -> Client {
    Client::new(ClientConfig::default()).unwrap()
}

#[test]
fn reference_parsing() {
    let r = ImageRef::parse("oci://localhost:5000/filters/headers:v1").unwrap();
    assert_eq!(
        (r.host.as_str(), r.repo.as_str(), r.tag.as_deref()),
        ("localhost:5000", "filters/headers", Some("v1"))
    );
    assert_eq!(
        r.tag_reference().as_deref(),
        Some("localhost:5000/filters/headers:v1")
    );
    let d = format!("sha256:{}", "a".repeat(64));
    let r = ImageRef::parse(&format!("reg.example/f@{d}")).unwrap();
    assert_eq!(r.digest.clone().unwrap().to_string(), d);
    assert_eq!(r.tag, None);
    assert_eq!(r.tag_reference(), None);
    let r = ImageRef::parse("h/f").unwrap();
    assert_eq!(r.tag.as_deref(), Some("latest"));
    let r = ImageRef::parse(&format!("[::1]:5000/f:v1@{d}")).unwrap();
    assert_eq!(r.host, "[::1]:5000");
    assert_eq!(r.reference(), d);
    for bad in [
        "noslash",
        "h/../x:v1",
        "h/F:v1",
        "h/f:.bad",
        "h/f@sha256:zz",
        "/f:v1",
        "h o/f",
    ] {
        assert!(ImageRef::parse(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn push_pull_round_trip_and_tamper_detection() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry_with(dir.path(), Some("tok"), None).await;
    let host = reg.local_addr().to_string();
    let wasm = module(100, 1);
    let mut ann = BTreeMap::new();
    ann.insert(
        artifact::ANNOTATION_VERSION.to_string(),
        "1.0.0".to_string(),
    );
    ann.insert(
        artifact::ANNOTATION_ABI_VERSION.to_string(),
        "0.2.1".to_string(),
    );
    let reference = format!("oci://{host}/filters/headers:v1");

    // Push without the token: the registry's challenge leads to its token service, which gives
    // an anonymous caller no push right.
    let err = client::push(&reference, &wasm, &ann, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Unauthorized { status, .. } if status == 401),
        "{err}"
    );

    let d = client::push(&reference, &wasm, &ann, Some("tok"))
        .await
        .unwrap();
    // Pushing again skips existing blobs and gives the same digest.
    assert_eq!(
        client::push(&reference, &wasm, &ann, Some("tok"))
            .await
            .unwrap(),
        d
    );
    assert_eq!(client::resolve(&reference, None).await.unwrap(), d);
    let (pd, got) = client::pull(&reference, None).await.unwrap();
    assert_eq!((pd.clone(), got.clone()), (d.clone(), wasm.clone()));
    let c = client();
    let pulled = c.pull(&ImageRef::parse(&reference).unwrap()).await.unwrap();
    assert_eq!(pulled.format, ArtifactFormat::Cncf);
    assert_eq!(pulled.manifest_digest, d);
    // Pinned by digest, without the scheme.
    let pinned = format!("{host}/filters/headers@{d}");
    assert_eq!(client::pull(&pinned, None).await.unwrap().1, wasm);
    // Tag and digest both given: the digest decides.
    let both = ImageRef::parse(&format!("{host}/filters/headers:v1@{d}")).unwrap();
    assert_eq!(c.resolve(&both).await.unwrap(), d);
    // Pinned to a digest the registry lacks → not found.
    let other = format!("{host}/filters/headers@sha256:{}", "0".repeat(64));
    let err = client::pull(&other, None).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");

    // CLI functions.
    let pusher = Client::new(ClientConfig {
        credentials: wasmesh_registry::auth::Credentials::Token("tok".into()),
        ..ClientConfig::default()
    })
    .unwrap();
    let out = dir.path().join("out.wasm");
    cli::pull(&c, &reference, &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), wasm);
    let file = dir.path().join("f.wasm");
    std::fs::write(&file, &wasm).unwrap();
    cli::push(&pusher, &file, &format!("{host}/filters/headers:v2"))
        .await
        .unwrap();
    assert_eq!(
        cli::ls(&c, &format!("{host}/filters/headers"))
            .await
            .unwrap(),
        vec!["v1", "v2"]
    );
    let text = cli::inspect(&c, &reference).await.unwrap();
    assert!(text.contains("application/vnd.wasm.config.v0+json"));
    assert!(text.contains("dev.wasmesh.abi_version"));
    let err = cli::ls(&c, &format!("{host}/filters/none"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");

    // Tamper with the layer on disk: pull must fail loudly.
    let layer = wasmesh_registry::store::Digest::sha256_of(&wasm);
    tamper(&dir.path().join("blobs/sha256").join(layer.hex()));
    let err = client::pull(&reference, None).await.unwrap_err();
    assert!(matches!(err, ClientError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("digest mismatch"));

    // Tamper with the manifest bytes: a pinned pull fails, and so does a tag pull (the
    // registry announces the digest it stored the manifest under).
    tamper(&dir.path().join("blobs/sha256").join(d.hex()));
    let err = client::pull(&pinned, None).await.unwrap_err();
    assert!(matches!(err, ClientError::DigestMismatch { .. }), "{err}");
    let err = client::pull(&reference, None).await.unwrap_err();
    assert!(matches!(err, ClientError::DigestMismatch { .. }), "{err}");
    reg.shutdown().await;
}

#[tokio::test]
async fn pull_refuses_non_wasm_and_oversized_modules() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    let host = reg.local_addr().to_string();
    assert!(
        client::push(&format!("{host}/x:v1"), b"not wasm", &BTreeMap::new(), None)
            .await
            .is_err()
    );
    assert!(client::pull(&format!("{host}/x:v1"), None).await.is_err());

    // A layer that is not Wasm, published in the CNCF layout by hand.
    let raw = Raw::new(&host, None);
    push_format(
        &raw,
        "notwasm",
        "v1",
        ArtifactFormat::Cncf,
        b"plain text, no magic",
    )
    .await;
    let err = client()
        .pull(&ImageRef::parse(&format!("{host}/notwasm:v1")).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");

    // Over the size cap: refused from the descriptor, before any download.
    let big = module(64 * 1024, 2);
    let r = ImageRef::parse(&format!("{host}/big:v1")).unwrap();
    client().push(&r, &big, &BTreeMap::new()).await.unwrap();
    let small = Client::new(ClientConfig {
        max_module_size: 1024,
        ..ClientConfig::default()
    })
    .unwrap();
    let err = small.pull(&r).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Artifact(artifact::ArtifactError::TooLarge { .. })
        ),
        "{err}"
    );
    // The same cap holds inside a compat layer, whose descriptor only gives the gzip size.
    push_format(
        &raw,
        "bigcompat",
        "v1",
        ArtifactFormat::IstioOciCompat,
        &big,
    )
    .await;
    let err = small
        .pull(&ImageRef::parse(&format!("{host}/bigcompat:v1")).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("over the"), "{err}");
    reg.shutdown().await;
}

#[tokio::test]
async fn every_wasm_format_and_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    let host = reg.local_addr().to_string();
    let raw = Raw::new(&host, None);
    let c = client();
    for (i, fmt) in [
        ArtifactFormat::Cncf,
        ArtifactFormat::IstioDockerCompat,
        ArtifactFormat::IstioOciCompat,
        ArtifactFormat::SoloOci,
        ArtifactFormat::WasmToOci,
    ]
    .into_iter()
    .enumerate()
    {
        let wasm = module(2000 + i, i as u8);
        let d = push_format(&raw, "formats", fmt.name(), fmt, &wasm).await;
        let r = ImageRef::parse(&format!("{host}/formats:{}", fmt.name())).unwrap();
        let pulled = c.pull(&r).await.unwrap();
        assert_eq!(pulled.format, fmt);
        assert_eq!(pulled.wasm, wasm, "{fmt}");
        assert_eq!(pulled.manifest_digest, d);
        assert_eq!(c.resolve(&r).await.unwrap(), d);
    }

    // An index whose wasm/wasip1 entry is not the first.
    let linux = module(10, 7);
    let wasi = module(10, 8);
    let ld = push_format(
        &raw,
        "multi",
        "linux",
        ArtifactFormat::IstioOciCompat,
        &linux,
    )
    .await;
    let wd = push_format(&raw, "multi", "wasi", ArtifactFormat::Cncf, &wasi).await;
    let size = |d: &wasmesh_registry::store::Digest| {
        std::fs::metadata(dir.path().join("blobs/sha256").join(d.hex()))
            .unwrap()
            .len() as usize
    };
    let id = push_index(
        &raw,
        "multi",
        "v1",
        &[
            (ld.clone(), size(&ld), "amd64", "linux"),
            (wd.clone(), size(&wd), "wasm", "wasip1"),
        ],
    )
    .await;
    let pulled = c
        .pull(&ImageRef::parse(&format!("{host}/multi:v1")).unwrap())
        .await
        .unwrap();
    assert_eq!(pulled.wasm, wasi);
    assert_eq!(
        pulled.manifest_digest, id,
        "the index digest is what a pin names"
    );
    // Without a wasm platform, the first entry.
    push_index(
        &raw,
        "multi",
        "v2",
        &[(ld.clone(), size(&ld), "amd64", "linux")],
    )
    .await;
    let pulled = c
        .pull(&ImageRef::parse(&format!("{host}/multi:v2")).unwrap())
        .await
        .unwrap();
    assert_eq!(pulled.wasm, linux);
    assert_eq!(pulled.format, ArtifactFormat::IstioOciCompat);
    // An index that lies about an entry's size.
    push_index(
        &raw,
        "multi",
        "v3",
        &[(wd.clone(), size(&wd) + 1, "wasm", "wasip1")],
    )
    .await;
    let err = c
        .pull(&ImageRef::parse(&format!("{host}/multi:v3")).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::SizeMismatch { .. }), "{err}");

    // A compat layer tampered on disk fails on its digest before any decompression.
    let compat = module(50, 9);
    push_format(
        &raw,
        "tampered",
        "v1",
        ArtifactFormat::IstioDockerCompat,
        &compat,
    )
    .await;
    let m = c
        .fetch_manifest(&ImageRef::parse(&format!("{host}/tampered:v1")).unwrap())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
    let layer: wasmesh_registry::store::Digest =
        v["layers"][0]["digest"].as_str().unwrap().parse().unwrap();
    tamper(&dir.path().join("blobs/sha256").join(layer.hex()));
    let err = c
        .pull(&ImageRef::parse(&format!("{host}/tampered:v1")).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::DigestMismatch { .. }), "{err}");
    reg.shutdown().await;
}
