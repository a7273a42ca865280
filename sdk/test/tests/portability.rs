//! "Filters run unchanged on Envoy": every stock filter under `filters/` (as
//! `wasmesh-test-programs` builds them) and the SDK's test fixture import only the proxy-wasm
//! functions of the ABI version they declare and the WASI functions Envoy links, with the
//! spec's signatures. And the check itself catches what it should.

use wasmesh_sdk_test::Error;
use wasmesh_sdk_test::portability::unportable_imports;

#[test]
fn every_stock_filter_imports_only_what_envoy_links() {
    let fixture =
        wasmesh_sdk_test::build_wasm(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixture"))
            .expect("the fixture builds");
    let fixture = fixture.to_string_lossy().into_owned();
    let mut checked = Vec::new();
    let mut problems = Vec::new();
    for (name, path) in wasmesh_test_programs::FILTERS
        .iter()
        .copied()
        .chain([("sdk fixture", fixture.as_str())])
    {
        let wasm = std::fs::read(path).expect("read the built filter");
        match unportable_imports(&wasm) {
            Ok(unportable) => {
                problems.extend(unportable.into_iter().map(|p| format!("{name}: {p}")))
            }
            Err(e) => problems.push(format!("{name}: {e}")),
        }
        checked.push(name);
    }
    assert!(checked.contains(&"traffic-split"), "{checked:?}");
    assert!(checked.len() > 5, "{checked:?}");
    assert!(
        problems.is_empty(),
        "not portable:\n{}",
        problems.join("\n")
    );
}

fn module(marker: &str, imports: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
             {imports}
             (memory (export "memory") 1)
             (func (export "{marker}")))"#
    ))
    .expect("valid WAT")
}

#[test]
fn wasmesh_only_imports_and_wrong_signatures_are_caught() {
    let imports = r#"
        (import "env" "proxy_clear_route_cache" (func (result i32)))
        (import "env" "proxy_log" (func (param i32 i32) (result i32)))
        (import "env" "proxy_get_log_level" (func (param i32) (result i32)))
        (import "wasi_snapshot_preview1" "poll_oneoff" (func (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
        (import "other" "thing" (func))
        (import "env" "proxy_done" (global i32))
    "#;
    let found = unportable_imports(&module("proxy_abi_version_0_2_1", imports)).expect("a filter");
    assert_eq!(
        found,
        [
            "env.proxy_clear_route_cache: not in proxy-wasm ABI 0.2.1",
            "env.proxy_log: signature ii>i, expected iii>i",
            "wasi_snapshot_preview1.poll_oneoff: a WASI function Envoy does not link",
            "other.thing: a module no proxy-wasm host provides",
            "env.proxy_done: imported as a global, not a function",
        ]
    );

    // ABI 0.1.0 had `proxy_clear_route_cache`, and not `proxy_get_log_level`.
    let found = unportable_imports(&module("proxy_abi_version_0_1_0", imports)).expect("a filter");
    assert!(
        !found
            .iter()
            .any(|p| p.starts_with("env.proxy_clear_route_cache")),
        "{found:?}"
    );
    assert!(
        found.contains(&"env.proxy_get_log_level: not in proxy-wasm ABI 0.1.0".to_string()),
        "{found:?}"
    );
}

#[test]
fn a_module_without_an_abi_version_or_not_wasm_at_all_is_not_a_filter() {
    let err = unportable_imports(&module("not_a_marker", "")).expect_err("no marker");
    assert!(
        matches!(&err, Error::NotAFilter(m) if m.contains("ABI version marker")),
        "{err}"
    );
    let err = unportable_imports(b"plain text").expect_err("not wasm");
    assert!(matches!(err, Error::NotAFilter(_)), "{err}");
}
