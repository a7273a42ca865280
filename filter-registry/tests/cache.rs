//! The module cache over this crate's registry on loopback: pull policies, restarts, pins,
//! corruption and concurrency.

mod support;

use std::collections::BTreeMap;

use support::{files_under, module, registry};
use wasmesh_registry::cache::{ModuleCache, PullPolicy};
use wasmesh_registry::client::{Client, ClientConfig, ClientError, ImageRef};
use wasmesh_registry::store::Digest;

fn client() -> Client {
    Client::new(ClientConfig::default()).unwrap()
}

fn cached_module(cache_dir: &std::path::Path, d: &Digest) -> std::path::PathBuf {
    cache_dir
        .join("modules/sha256")
        .join(format!("{}.wasm", d.hex()))
}

#[tokio::test]
async fn if_not_present_serves_from_disk_after_the_registry_is_gone() {
    let reg_dir = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let reg = registry(reg_dir.path()).await;
    let host = reg.local_addr().to_string();
    let c = client();
    let wasm = module(300, 1);
    let tagged = ImageRef::parse(&format!("{host}/filters/a:v1")).unwrap();
    let d = c.push(&tagged, &wasm, &BTreeMap::new()).await.unwrap();

    let cache = ModuleCache::new(cache_dir.path().to_path_buf());
    let f = cache
        .fetch(&c, &tagged, PullPolicy::IfNotPresent, None)
        .await
        .unwrap();
    assert!(!f.from_cache);
    assert_eq!(
        (f.manifest_digest.clone(), f.wasm.clone()),
        (d.clone(), wasm.clone())
    );
    assert_eq!(cache.remembered(&tagged).await.unwrap(), Some(d.clone()));
    reg.shutdown().await;

    // A new cache over the same directory: a process restart, with no registry at all.
    let cache = ModuleCache::new(cache_dir.path().to_path_buf());
    let f = cache
        .fetch(&c, &tagged, PullPolicy::IfNotPresent, None)
        .await
        .unwrap();
    assert!(f.from_cache);
    assert_eq!((f.manifest_digest, f.wasm), (d.clone(), wasm.clone()));
    // By digest, and by tag with the right pin: disk too.
    let by_digest = tagged.with_digest(d.clone());
    let by_digest = ImageRef {
        tag: None,
        ..by_digest
    };
    for policy in [PullPolicy::IfNotPresent, PullPolicy::Always] {
        let f = cache.fetch(&c, &by_digest, policy, None).await.unwrap();
        assert!(f.from_cache);
        assert_eq!(f.wasm, wasm);
    }
    let other_tag = ImageRef::parse(&format!("{host}/filters/a:never-fetched")).unwrap();
    let f = cache
        .fetch(&c, &other_tag, PullPolicy::IfNotPresent, Some(&d))
        .await
        .unwrap();
    assert!(
        f.from_cache,
        "a pin whose module is cached needs no network"
    );
    // Always must ask the registry, which is gone.
    let err = cache
        .fetch(&c, &tagged, PullPolicy::Always, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Http { .. } | ClientError::Timeout { .. }),
        "{err}"
    );
    // A tag never resolved cannot be served without the registry.
    assert!(
        cache
            .fetch(&c, &other_tag, PullPolicy::IfNotPresent, None)
            .await
            .is_err()
    );
    assert!(files_under(&cache_dir.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn always_picks_up_a_moved_tag_and_pulls_only_new_digests() {
    let reg_dir = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let reg = registry(reg_dir.path()).await;
    let host = reg.local_addr().to_string();
    let c = client();
    let cache = ModuleCache::new(cache_dir.path().to_path_buf());
    let tagged = ImageRef::parse(&format!("{host}/filters/b:stable")).unwrap();

    let v1 = module(100, 1);
    let d1 = c.push(&tagged, &v1, &BTreeMap::new()).await.unwrap();
    let f = cache
        .fetch(&c, &tagged, PullPolicy::Always, None)
        .await
        .unwrap();
    assert!(!f.from_cache);
    assert_eq!(f.manifest_digest, d1);

    // The tag moves.
    let v2 = module(100, 2);
    let d2 = c.push(&tagged, &v2, &BTreeMap::new()).await.unwrap();
    assert_ne!(d1, d2);
    assert_eq!(cache.resolve_tag(&c, &tagged).await.unwrap(), d2);
    // IfNotPresent keeps serving what it resolved before…
    let f = cache
        .fetch(&c, &tagged, PullPolicy::IfNotPresent, None)
        .await
        .unwrap();
    assert!(f.from_cache);
    assert_eq!(f.manifest_digest, d1);
    // …Always follows the tag.
    let f = cache
        .fetch(&c, &tagged, PullPolicy::Always, None)
        .await
        .unwrap();
    assert!(!f.from_cache);
    assert_eq!((f.manifest_digest, f.wasm), (d2.clone(), v2.clone()));
    assert_eq!(cache.remembered(&tagged).await.unwrap(), Some(d2.clone()));

    // Always, with the digest already cached: one HEAD, no pull. Proven by removing the
    // registry's copy of the module's layer: a pull would now fail.
    let layer = Digest::sha256_of(&v2);
    std::fs::remove_file(reg_dir.path().join("blobs/sha256").join(layer.hex())).unwrap();
    let f = cache
        .fetch(&c, &tagged, PullPolicy::Always, None)
        .await
        .unwrap();
    assert!(f.from_cache);
    assert_eq!(f.wasm, v2);
    assert!(
        c.pull(&tagged).await.is_err(),
        "the registry really lost the layer"
    );

    // The tag moves back to a digest cached before: served from disk, memory updated.
    let raw = support::Raw::new(&host, None);
    let m1 = std::fs::read(reg_dir.path().join("blobs/sha256").join(d1.hex())).unwrap();
    raw.put_manifest(
        "filters/b",
        "stable",
        "application/vnd.oci.image.manifest.v1+json",
        &m1,
    )
    .await;
    let f = cache
        .fetch(&c, &tagged, PullPolicy::Always, None)
        .await
        .unwrap();
    assert!(f.from_cache);
    assert_eq!(f.manifest_digest, d1);
    assert_eq!(cache.remembered(&tagged).await.unwrap(), Some(d1));
    reg.shutdown().await;
}

#[tokio::test]
async fn pins_are_manifest_digests_and_a_mismatch_is_an_error() {
    let reg_dir = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let reg = registry(reg_dir.path()).await;
    let host = reg.local_addr().to_string();
    let c = client();
    let cache = ModuleCache::new(cache_dir.path().to_path_buf());
    let tagged = ImageRef::parse(&format!("{host}/filters/c:v1")).unwrap();
    let wasm = module(100, 3);
    let d = c.push(&tagged, &wasm, &BTreeMap::new()).await.unwrap();

    // The sha256 of the module bytes is not the pin: Istio's semantics.
    let wasm_digest = Digest::sha256_of(&wasm);
    for policy in [PullPolicy::IfNotPresent, PullPolicy::Always] {
        let err = cache
            .fetch(&c, &tagged, policy, Some(&wasm_digest))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::PinMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&d.to_string()), "{err}");
    }
    // Nothing was stored under the refused pin, nor remembered for the tag.
    assert!(!cached_module(cache_dir.path(), &d).exists());
    assert_eq!(cache.remembered(&tagged).await.unwrap(), None);
    // A digest reference contradicting its pin is refused without asking anyone.
    let both = ImageRef {
        tag: None,
        ..tagged.with_digest(d.clone())
    };
    let err = cache
        .fetch(&c, &both, PullPolicy::IfNotPresent, Some(&wasm_digest))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::PinMismatch { .. }), "{err}");

    let f = cache
        .fetch(&c, &tagged, PullPolicy::IfNotPresent, Some(&d))
        .await
        .unwrap();
    assert_eq!(f.wasm, wasm);
    reg.shutdown().await;
}

#[tokio::test]
async fn a_corrupted_entry_is_discarded_and_pulled_again() {
    let reg_dir = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let reg = registry(reg_dir.path()).await;
    let host = reg.local_addr().to_string();
    let c = client();
    let cache = ModuleCache::new(cache_dir.path().to_path_buf());
    let tagged = ImageRef::parse(&format!("{host}/filters/d:v1")).unwrap();
    let wasm = module(500, 4);
    let d = c.push(&tagged, &wasm, &BTreeMap::new()).await.unwrap();
    cache
        .fetch(&c, &tagged, PullPolicy::IfNotPresent, None)
        .await
        .unwrap();

    let path = cached_module(cache_dir.path(), &d);
    support::tamper(&path);
    let f = cache
        .fetch(&c, &tagged, PullPolicy::IfNotPresent, None)
        .await
        .unwrap();
    assert!(!f.from_cache, "a corrupt entry is never served");
    assert_eq!(f.wasm, wasm);
    assert_eq!(std::fs::read(&path).unwrap(), wasm, "the entry is repaired");

    // Truncated to nothing, and the record gone: pulled again too.
    std::fs::write(&path, b"").unwrap();
    assert!(
        !cache
            .fetch(&c, &tagged, PullPolicy::IfNotPresent, None)
            .await
            .unwrap()
            .from_cache
    );
    std::fs::remove_file(path.with_extension("json")).unwrap();
    assert!(
        !cache
            .fetch(&c, &tagged, PullPolicy::IfNotPresent, None)
            .await
            .unwrap()
            .from_cache
    );
    // A damaged tag memory is as good as none: the tag is resolved again.
    for e in std::fs::read_dir(cache_dir.path().join("tags")).unwrap() {
        std::fs::write(e.unwrap().path(), b"{not json").unwrap();
    }
    let f = cache
        .fetch(&c, &tagged, PullPolicy::IfNotPresent, None)
        .await
        .unwrap();
    assert_eq!(f.manifest_digest, d);
    reg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_of_one_module() {
    let reg_dir = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let reg = registry(reg_dir.path()).await;
    let host = reg.local_addr().to_string();
    let c = client();
    let tagged = ImageRef::parse(&format!("{host}/filters/e:v1")).unwrap();
    let wasm = module(256 * 1024, 5);
    let d = c.push(&tagged, &wasm, &BTreeMap::new()).await.unwrap();

    // Two caches over one directory (two processes, say), eight fetches each at once.
    let caches = [
        ModuleCache::new(cache_dir.path().to_path_buf()),
        ModuleCache::new(cache_dir.path().to_path_buf()),
    ];
    let mut tasks = Vec::new();
    for i in 0..16 {
        let cache = caches[i % 2].clone();
        let c = c.clone();
        let r = tagged.clone();
        tasks.push(tokio::spawn(async move {
            cache.fetch(&c, &r, PullPolicy::IfNotPresent, None).await
        }));
    }
    let mut pulls = 0;
    for t in tasks {
        let f = t.await.unwrap().unwrap();
        assert_eq!((f.manifest_digest, f.wasm.len()), (d.clone(), wasm.len()));
        assert_eq!(f.wasm, wasm);
        pulls += usize::from(!f.from_cache);
    }
    // Within one cache the fetches wait for each other: at most one pull per cache.
    assert!((1..=2).contains(&pulls), "{pulls} pulls");
    let files: Vec<_> = files_under(&cache_dir.path().join("modules"));
    assert_eq!(files.len(), 2, "one module and its record: {files:?}");
    assert!(files_under(&cache_dir.path().join("tmp")).is_empty());
    reg.shutdown().await;
}
