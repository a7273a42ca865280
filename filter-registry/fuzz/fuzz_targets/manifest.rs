//! What a registry (or anything pretending to be one) sends a client, and what clients send the
//! registry: manifests and indexes in every format, image references, digests, tags and
//! repository names, `WWW-Authenticate` challenges, Docker credential files, and tar+gzip
//! compat layers (a small one must not expand without bound). Every input is parsed or
//! refused, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmesh_registry::{artifact, auth, format, reference, store};

/// Content types a registry may give a manifest.
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8"),
];

enum Input<'a> {
    Manifest(&'a [u8], Option<&'a str>),
    Text(&'a str),
    Challenges(Vec<&'a str>),
    DockerConfig(&'a [u8]),
    CompatLayer(&'a [u8]),
}

/// The first byte picks what the rest is (so seeds are real manifests, layers, files).
fn input(data: &[u8]) -> Option<Input<'_>> {
    let (&mode, rest) = data.split_first()?;
    Some(match mode % 5 {
        0 => {
            let (&kind, manifest) = rest.split_first()?;
            Input::Manifest(manifest, CONTENT_TYPES[kind as usize % CONTENT_TYPES.len()])
        }
        1 => Input::Text(std::str::from_utf8(rest).ok()?),
        2 => Input::Challenges(std::str::from_utf8(rest).ok()?.split('\n').collect()),
        3 => Input::DockerConfig(rest),
        _ => Input::CompatLayer(rest),
    })
}

fuzz_target!(|data: &[u8]| match input(data) {
    None => {}
    Some(Input::Manifest(bytes, content_type)) => {
        match format::parse(bytes, content_type) {
            Ok(format::Parsed::Image(m)) => {
                let _ = format::select_layer(&m);
            }
            Ok(format::Parsed::Index(entries)) => {
                if let Ok(entry) = format::choose_index_entry(&entries) {
                    assert!(entries.iter().any(|e| e.digest == entry.digest));
                }
            }
            Err(_) => {}
        }
        let _ = artifact::wasm_layer(bytes);
        for digest in store::referenced_digests(bytes) {
            // Whatever a manifest names is a valid digest, safe to build a path from.
            assert!(digest.hex().bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let _ = store::subject_digest(bytes);
    }
    Some(Input::Text(text)) => {
        if let Ok(digest) = text.parse::<store::Digest>() {
            assert_eq!(digest.to_string(), text);
        }
        if store::validate_repo_name(text).is_ok() {
            assert!(!text.contains("..") && !text.starts_with('/'));
        }
        if store::validate_tag(text).is_ok() {
            assert!(!text.contains('/'));
        }
        let _ = text.parse::<store::Reference>();
        let _ = reference::ImageRef::parse(text);
        let _ = reference::is_loopback(text);
        let _ = reference::split_host_port(text);
    }
    Some(Input::Challenges(values)) => {
        let _ = auth::parse_challenges(values);
    }
    Some(Input::DockerConfig(bytes)) => {
        if let Ok(config) = auth::DockerConfig::parse(bytes) {
            let _ = config.entry("registry.example:5000");
        }
    }
    Some(Input::CompatLayer(gz)) => {
        const MAX: u64 = 64 * 1024;
        if let Ok(wasm) = format::extract_plugin_wasm(gz, MAX) {
            assert!(wasm.len() as u64 <= MAX);
        }
    }
});
