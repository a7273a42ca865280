//! The store's upload path (`Store`: upload sessions, chunks at offsets, completion against a
//! digest, manifests under tags, deletes), driven by fuzzed sequences of operations on a real
//! directory. A blob exists only if what was uploaded hashes to its digest, reads back exactly,
//! and no name, tag or digest ever makes a path outside the store.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};
use wasmesh_registry::store::{Digest, Reference, Store};

#[derive(Debug, arbitrary::Arbitrary)]
enum Op {
    Start,
    /// Appends to session `n` (modulo the open ones), at `offset` if given.
    Append {
        n: u8,
        offset: Option<u16>,
        data: Vec<u8>,
    },
    /// Completes session `n` with the right digest, or with `wrong` when given.
    Finish {
        n: u8,
        last: Vec<u8>,
        wrong: Option<[u8; 32]>,
    },
    Cancel {
        n: u8,
    },
    PutBlob {
        data: Vec<u8>,
        lie: bool,
    },
    PutManifest {
        repo: String,
        tag: String,
        bytes: Vec<u8>,
    },
    Resolve {
        repo: String,
        reference: String,
    },
    DeleteTag {
        repo: String,
        tag: String,
    },
    /// An upload id the store never made.
    Foreign {
        id: String,
        data: Vec<u8>,
    },
}

fn store() -> &'static (tempfile::TempDir, Store) {
    static STORE: OnceLock<(tempfile::TempDir, Store)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path().join("store")).expect("store");
        (dir, store)
    })
}

fn digest_of(data: &[u8]) -> Digest {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}").parse().expect("a digest")
}

/// Nothing the store holds lies outside its root.
fn contained(root: &Path, path: &Path) -> bool {
    path.canonicalize().is_ok_and(|p| p.starts_with(root))
}

fuzz_target!(|ops: Vec<Op>| {
    let (_dir, store) = store();
    let root = store.root().canonicalize().expect("root");
    // Open sessions: (id, bytes appended so far).
    let mut sessions: Vec<(String, Vec<u8>)> = Vec::new();
    for op in ops.into_iter().take(32) {
        match op {
            Op::Start => {
                if let Ok(id) = store.start_upload() {
                    sessions.push((id, Vec::new()));
                }
            }
            Op::Append { n, offset, data } => {
                if sessions.is_empty() {
                    continue;
                }
                let i = n as usize % sessions.len();
                let (id, held) = &mut sessions[i];
                let offset = offset.map(u64::from);
                match store.append_upload(id, offset, &data) {
                    Ok(size) => {
                        assert!(offset.is_none_or(|o| o == held.len() as u64));
                        held.extend_from_slice(&data);
                        assert_eq!(size, held.len() as u64);
                    }
                    Err(_) => assert!(offset.is_some_and(|o| o != held.len() as u64)),
                }
            }
            Op::Finish { n, last, wrong } => {
                if sessions.is_empty() {
                    continue;
                }
                let i = n as usize % sessions.len();
                let (id, mut held) = sessions.remove(i);
                held.extend_from_slice(&last);
                let right = digest_of(&held);
                let expected = match wrong {
                    Some(bytes) => {
                        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                        format!("sha256:{hex}").parse().expect("a digest")
                    }
                    None => right.clone(),
                };
                match store.finish_upload(&id, &expected, None, &last) {
                    Ok(len) => {
                        assert_eq!(expected, right, "a blob stored under the wrong digest");
                        assert_eq!(len, held.len() as u64);
                        assert_eq!(store.read_blob(&right).expect("stored blob"), held);
                    }
                    Err(_) => assert_ne!(expected, right, "a right digest refused"),
                }
            }
            Op::Cancel { n } => {
                if !sessions.is_empty() {
                    let i = n as usize % sessions.len();
                    let (id, _) = sessions.remove(i);
                    store.cancel_upload(&id).expect("cancel an open session");
                }
            }
            Op::PutBlob { data, lie } => {
                let mut digest = digest_of(&data);
                if lie {
                    digest = digest_of(&[data.as_slice(), b"!"].concat());
                }
                match store.put_blob(&digest, &data) {
                    Ok(()) => {
                        assert!(!lie);
                        assert_eq!(store.read_blob(&digest).expect("blob"), data);
                    }
                    Err(_) => assert!(lie),
                }
            }
            Op::PutManifest { repo, tag, bytes } => {
                if let Ok(reference) = tag.parse::<Reference>()
                    && let Ok(digest) =
                        store.put_manifest(&repo, &reference, "application/json", &bytes)
                {
                    assert_eq!(store.read_blob(&digest).expect("manifest blob"), bytes);
                    let resolved = store.resolve(&repo, &reference).expect("resolves");
                    assert_eq!(resolved, digest);
                    let dir = root.join("repositories").join(&repo);
                    assert!(contained(&root, &dir), "{repo:?} escaped the store");
                }
            }
            Op::Resolve { repo, reference } => {
                if let Ok(reference) = reference.parse::<Reference>() {
                    let _ = store.resolve(&repo, &reference);
                    let _ = store.get_manifest(&repo, &reference);
                }
            }
            Op::DeleteTag { repo, tag } => {
                let _ = store.delete_tag(&repo, &tag);
            }
            Op::Foreign { id, data } => {
                if sessions.iter().all(|(open, _)| *open != id) {
                    assert!(store.append_upload(&id, None, &data).is_err() || id.len() == 36);
                    let _ = store.upload_size(&id);
                }
            }
        }
    }
    for (id, _) in sessions {
        let _ = store.cancel_upload(&id);
    }
});
