use std::collections::BTreeMap;

use wasmesh_registry::client::{self, ClientError, ImageRef};
use wasmesh_registry::server::{RegistryConfig, serve};
use wasmesh_registry::{artifact, cli};

fn module() -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    // A custom section so the module has some body.
    m.extend_from_slice(&[0, 9, 4, b'n', b'a', b'm', b'e', 1, 2, 3, 4]);
    m
}

#[test]
fn reference_parsing() {
    let r = ImageRef::parse("oci://localhost:5000/filters/headers:v1").unwrap();
    assert_eq!(
        (r.host.as_str(), r.repo.as_str(), r.tag.as_deref()),
        ("localhost:5000", "filters/headers", Some("v1"))
    );
    let d = format!("sha256:{}", "a".repeat(64));
    let r = ImageRef::parse(&format!("reg.example/f@{d}")).unwrap();
    assert_eq!(r.digest.unwrap().to_string(), d);
    assert_eq!(r.tag, None);
    let r = ImageRef::parse("h/f").unwrap();
    assert_eq!(r.tag.as_deref(), Some("latest"));
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
    let reg = serve(RegistryConfig {
        root: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        push_token: Some("tok".into()),
        pull_token: None,
    })
    .await
    .unwrap();
    let host = reg.local_addr().to_string();
    let wasm = module();
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

    // Push without the token → 401.
    let err = client::push(&reference, &wasm, &ann, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Status { status, .. } if status == 401),
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
    // Pinned by digest, without the scheme.
    let pinned = format!("{host}/filters/headers@{d}");
    assert_eq!(client::pull(&pinned, None).await.unwrap().1, wasm);
    // Pinned to a different digest → not found (the registry has no such manifest).
    let other = format!("{host}/filters/headers@sha256:{}", "0".repeat(64));
    assert!(client::pull(&other, None).await.is_err());

    // CLI functions.
    let out = dir.path().join("out.wasm");
    cli::pull(&reference, &out, None).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), wasm);
    let file = dir.path().join("f.wasm");
    std::fs::write(&file, &wasm).unwrap();
    cli::push(&file, &format!("{host}/filters/headers:v2"), Some("tok"))
        .await
        .unwrap();
    assert_eq!(
        cli::ls(&format!("{host}/filters/headers"), None)
            .await
            .unwrap(),
        vec!["v1", "v2"]
    );
    let text = cli::inspect(&reference, None).await.unwrap();
    assert!(text.contains("application/vnd.wasm.config.v0+json"));
    assert!(text.contains("dev.wasmesh.abi_version"));

    // Tamper with the layer on disk: pull must fail loudly.
    let layer = wasmesh_registry::store::Digest::sha256_of(&wasm);
    let path = dir.path().join("blobs/sha256").join(layer.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = client::pull(&reference, None).await.unwrap_err();
    assert!(matches!(err, ClientError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("digest mismatch"));

    // Tamper with the manifest bytes: a pinned pull fails.
    let mpath = dir.path().join("blobs/sha256").join(d.hex());
    let mut m = std::fs::read(&mpath).unwrap();
    m.push(b' ');
    std::fs::write(&mpath, &m).unwrap();
    let err = client::pull(&pinned, None).await.unwrap_err();
    assert!(matches!(err, ClientError::DigestMismatch { .. }), "{err}");
    reg.shutdown().await;
}

#[tokio::test]
async fn pull_refuses_non_wasm() {
    let dir = tempfile::tempdir().unwrap();
    let reg = serve(RegistryConfig {
        root: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        push_token: None,
        pull_token: None,
    })
    .await
    .unwrap();
    let host = reg.local_addr().to_string();
    assert!(
        client::push(&format!("{host}/x:v1"), b"not wasm", &BTreeMap::new(), None)
            .await
            .is_err()
    );
    assert!(client::pull(&format!("{host}/x:v1"), None).await.is_err());
}
