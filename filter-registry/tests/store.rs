use std::collections::BTreeMap;
use std::path::Path;

use wasmesh_registry::artifact;
use wasmesh_registry::store::{
    Digest, Reference, Store, StoreError, validate_repo_name, validate_tag,
};

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
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

const WASM: &[u8] = b"\0asm\x01\0\0\0";

#[test]
fn names_tags_digests_are_strict() {
    for ok in ["a", "library/nginx", "a.b_c__d---e/f0", "filters/headers"] {
        validate_repo_name(ok).unwrap();
    }
    for bad in [
        "",
        "A",
        "../x",
        "a/../b",
        "a/./b",
        "%2e%2e",
        "a//b",
        "/a",
        "a/",
        "a___b",
        "_a",
        "a-",
        ".",
        "..",
        "a/_manifests",
        "a\0b",
        "a\\b",
    ] {
        assert!(
            matches!(validate_repo_name(bad), Err(StoreError::NameInvalid(_))),
            "{bad:?}"
        );
    }
    validate_tag("v1.0.0-rc_1").unwrap();
    validate_tag(&"a".repeat(128)).unwrap();
    for bad in ["", ".x", "-x", "a/b", "..", "a:b", &"a".repeat(129)] {
        assert!(validate_tag(bad).is_err(), "{bad:?}");
    }
    let good = format!("sha256:{}", "a".repeat(64));
    good.parse::<Digest>().unwrap();
    format!("sha512:{}", "0".repeat(128))
        .parse::<Digest>()
        .unwrap();
    for bad in [
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha256:{}", "a".repeat(65)),
        format!("sha512:{}", "a".repeat(64)),
        format!("md5:{}", "a".repeat(32)),
        format!("sha256:../{}", "a".repeat(61)),
        "sha256:".to_string(),
    ] {
        assert!(bad.parse::<Digest>().is_err(), "{bad:?}");
    }
    assert!("../../etc".parse::<Reference>().is_err());
}

#[test]
fn blob_with_wrong_digest_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let wrong = Digest::sha256_of(b"other");
    assert!(matches!(
        store.put_blob(&wrong, b"data"),
        Err(StoreError::DigestMismatch { .. })
    ));
    assert!(store.blob_size(&wrong).is_none());
    assert!(files_under(&dir.path().join("blobs")).is_empty());
    assert!(files_under(&dir.path().join("tmp")).is_empty());

    let d = Digest::sha256_of(b"data");
    store.put_blob(&d, b"data").unwrap();
    assert_eq!(store.read_blob(&d).unwrap(), b"data");
    let d512 = Digest::of(wasmesh_registry::store::Algorithm::Sha512, b"data");
    store.put_blob(&d512, b"data").unwrap();
    assert_eq!(store.blob_size(&d512), Some(4));
}

#[test]
fn chunked_upload_contiguity_and_verification() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = store.start_upload().unwrap();
    assert_eq!(store.append_upload(&id, Some(0), b"hello ").unwrap(), 6);
    assert!(matches!(
        store.append_upload(&id, Some(3), b"xx"),
        Err(StoreError::RangeInvalid {
            expected: 6,
            got: 3
        })
    ));
    assert_eq!(store.upload_size(&id).unwrap(), 6);
    // Streamed append without an offset.
    assert_eq!(store.append_upload(&id, None, b"wor").unwrap(), 9);
    let full = Digest::sha256_of(b"hello world");
    // An in-progress upload is not a blob.
    assert!(store.blob_size(&full).is_none());
    assert_eq!(store.finish_upload(&id, &full, None, b"ld").unwrap(), 11);
    assert_eq!(store.read_blob(&full).unwrap(), b"hello world");
    assert!(store.upload_size(&id).is_err());

    // Wrong digest on finish: nothing stored, upload gone.
    let id = store.start_upload().unwrap();
    store.append_upload(&id, None, b"abc").unwrap();
    let wrong = Digest::sha256_of(b"abd");
    assert!(matches!(
        store.finish_upload(&id, &wrong, None, b""),
        Err(StoreError::DigestMismatch { .. })
    ));
    assert!(store.blob_size(&wrong).is_none());
    assert!(store.blob_size(&Digest::sha256_of(b"abc")).is_none());
    assert!(files_under(&dir.path().join("tmp")).is_empty());

    // Hostile upload ids.
    for bad in [
        "../blobs",
        "..",
        "x",
        "00000000-0000-0000-0000-00000000000G",
    ] {
        assert!(matches!(
            store.append_upload(bad, None, b"x"),
            Err(StoreError::UploadUnknown(_))
        ));
    }
    let id = store.start_upload().unwrap();
    store.cancel_upload(&id).unwrap();
    assert!(store.upload_size(&id).is_err());
}

#[test]
fn concurrent_puts_of_the_same_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::sha256_of(&data);
    std::thread::scope(|s| {
        for _ in 0..8 {
            let (store, data, d) = (store.clone(), &data, &d);
            s.spawn(move || {
                let id = store.start_upload().unwrap();
                for chunk in data.chunks(7_000) {
                    store.append_upload(&id, None, chunk).unwrap();
                }
                store.finish_upload(&id, d, None, b"").unwrap();
                store.put_blob(d, data).unwrap();
            });
        }
    });
    assert_eq!(store.read_blob(&d).unwrap(), data);
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert!(files_under(&dir.path().join("uploads")).is_empty());
}

#[test]
fn manifests_tags_restart_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let mut ann = BTreeMap::new();
    ann.insert(artifact::ANNOTATION_TITLE.to_string(), "f.wasm".to_string());
    let art = artifact::build(WASM, &ann).unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_blob(&art.config_digest, &art.config).unwrap();
        store.put_blob(&art.layer_digest, WASM).unwrap();
        let tag: Reference = "v1".parse().unwrap();
        let d = store
            .put_manifest(
                "filters/headers",
                &tag,
                artifact::MANIFEST_MEDIA_TYPE,
                &art.manifest,
            )
            .unwrap();
        assert_eq!(d, art.manifest_digest);
        // Push by digest with wrong bytes is refused.
        assert!(
            store
                .put_manifest("filters/headers", &Reference::Digest(d.clone()), "x", b"{}")
                .is_err()
        );
        // An orphan blob and an in-progress upload.
        store
            .put_blob(&Digest::sha256_of(b"orphan"), b"orphan")
            .unwrap();
        let id = store.start_upload().unwrap();
        store.append_upload(&id, None, b"partial").unwrap();
        for t in ["v2", "latest", "a"] {
            store
                .put_manifest(
                    "filters/headers",
                    &t.parse().unwrap(),
                    artifact::MANIFEST_MEDIA_TYPE,
                    &art.manifest,
                )
                .unwrap();
        }
    }
    // Restart: everything acknowledged is still there.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.list_tags("filters/headers").unwrap(),
        vec!["a", "latest", "v1", "v2"]
    );
    let m = store
        .get_manifest("filters/headers", &"v1".parse().unwrap())
        .unwrap();
    assert_eq!(m.bytes, art.manifest);
    assert_eq!(m.digest, art.manifest_digest);
    assert_eq!(m.media_type, artifact::MANIFEST_MEDIA_TYPE);
    let (parsed, layer) = artifact::wasm_layer(&m.bytes).unwrap();
    assert_eq!(
        parsed.artifact_type.as_deref(),
        Some(artifact::WASM_CONFIG_MEDIA_TYPE)
    );
    let wasm = store.read_blob(&layer.digest.parse().unwrap()).unwrap();
    artifact::check_wasm(&wasm, 1024).unwrap();
    assert!(store.list_tags("other").unwrap().is_empty());
    assert!(store.get_manifest("other", &"v1".parse().unwrap()).is_err());

    // gc keeps referenced blobs, removes the orphan.
    let removed = store.gc().unwrap();
    assert_eq!(removed, vec![Digest::sha256_of(b"orphan")]);
    assert!(store.blob_size(&art.layer_digest).is_some());

    // Untag, then delete the manifest (removes remaining tags), then gc removes everything.
    store.delete_tag("filters/headers", "v2").unwrap();
    assert!(store.delete_tag("filters/headers", "v2").is_err());
    store
        .delete_manifest("filters/headers", &art.manifest_digest)
        .unwrap();
    assert!(store.list_tags("filters/headers").unwrap().is_empty());
    assert!(
        store
            .get_manifest(
                "filters/headers",
                &Reference::Digest(art.manifest_digest.clone())
            )
            .is_err()
    );
    assert_eq!(store.gc().unwrap().len(), 3);
}

#[test]
fn wasm_checks() {
    assert!(artifact::check_wasm(b"\0asm", 100).is_err());
    assert!(artifact::check_wasm(b"notwasm!", 100).is_err());
    assert!(matches!(
        artifact::check_wasm(WASM, 4),
        Err(artifact::ArtifactError::TooLarge { .. })
    ));
    assert!(artifact::build(b"hello world", &BTreeMap::new()).is_err());
    assert!(matches!(
        artifact::wasm_layer(br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:00","size":1},"layers":[]}"#),
        Err(artifact::ArtifactError::NoWasmLayer)
    ));
}
