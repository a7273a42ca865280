//! Hand-written modules doing what SDKs never do: no ABI marker, imports the host lacks, and
//! out-of-range pointers — each answered with an error or a status code, never a host panic.

use std::sync::Arc;

use wasmesh_host::{Action, Host, HostConfig, LoadError, PluginConfig, StreamEnv};

struct Env;
impl StreamEnv for Env {
    fn property(&self, _: &[&str]) -> Option<Vec<u8>> {
        None
    }
}

fn load(wat: &str) -> Result<Arc<wasmesh_host::Plugin>, LoadError> {
    let host = Host::new(HostConfig::default()).expect("host");
    let wasm = wat::parse_str(wat).expect("valid wat");
    host.load_plugin(PluginConfig::new("hostile"), &wasm)
}

#[test]
fn module_without_abi_marker_is_refused() {
    let err = load(r#"(module (memory (export "memory") 1))"#)
        .err()
        .expect("refused");
    assert!(matches!(err, LoadError::NoAbiVersion { .. }), "{err}");
}

#[test]
fn missing_imports_are_named_at_load() {
    let err = load(
        r#"(module
            (import "env" "proxy_bogus" (func (param i32) (result i32)))
            (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "proxy_abi_version_0_2_1")))"#,
    )
    .err()
    .expect("refused");
    let text = err.to_string();
    assert!(text.contains("env.proxy_bogus"), "{text}");
    assert!(
        text.contains("wasi_snapshot_preview1.sock_accept"),
        "{text}"
    );
}

#[test]
fn bad_pointers_and_arguments_get_status_codes() {
    // Each probe stores the status it got into one byte and exposes it as a request header.
    let plugin = load(
        r#"(module
            (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
            (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
            (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
            (import "env" "proxy_get_buffer_bytes" (func $buf (param i32 i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 200) "loggetmapbuf")
            (func (export "proxy_abi_version_0_2_1"))
            (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
            (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
              (i32.store8 (i32.const 100) (call $log (i32.const 2) (i32.const 0xFFFFFF00) (i32.const 1000)))
              (drop (call $add (i32.const 0) (i32.const 200) (i32.const 3) (i32.const 100) (i32.const 1)))
              (i32.store8 (i32.const 101) (call $get (i32.const 0) (i32.const 200) (i32.const 3) (i32.const 0xFFFFFFF0) (i32.const 0)))
              (drop (call $add (i32.const 0) (i32.const 203) (i32.const 3) (i32.const 101) (i32.const 1)))
              (i32.store8 (i32.const 102) (call $add (i32.const 99) (i32.const 200) (i32.const 3) (i32.const 100) (i32.const 1)))
              (drop (call $add (i32.const 0) (i32.const 206) (i32.const 3) (i32.const 102) (i32.const 1)))
              (i32.store8 (i32.const 103) (call $buf (i32.const 42) (i32.const 0) (i32.const 10) (i32.const 300) (i32.const 304)))
              (drop (call $add (i32.const 0) (i32.const 209) (i32.const 3) (i32.const 103) (i32.const 1)))
              (i32.const 0)))"#,
    )
    .expect("loads");
    let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
    s.data.request_headers = vec![("log".into(), b"present".to_vec())];
    assert_eq!(s.on_request_headers(true), Ok(Action::Continue));
    let got = |name: &str| {
        s.data
            .request_headers
            .iter()
            .rfind(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        got("log"),
        Some(vec![6]),
        "out-of-range message: INVALID_MEMORY_ACCESS"
    );
    assert_eq!(
        got("get"),
        Some(vec![6]),
        "out-of-range out-pointer: INVALID_MEMORY_ACCESS"
    );
    assert_eq!(got("map"), Some(vec![2]), "unknown map type: BAD_ARGUMENT");
    assert_eq!(
        got("buf"),
        Some(vec![2]),
        "unknown buffer type: BAD_ARGUMENT"
    );
}
