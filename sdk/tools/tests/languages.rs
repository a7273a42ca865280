//! The SDK's AssemblyScript, C and Zig example filters, built with npm and zig at test time
//! (into `target/sdk-examples`), run on wasmesh's host through the harness: each sets the
//! headers its configuration names and refuses a configuration it does not understand.
//!
//! Without npm or zig these tests fail under CI (`CI` set) and are skipped, loudly, elsewhere;
//! `./setup.sh` installs both.

use std::io::Write;
use std::path::PathBuf;

use wasmesh_sdk_test::{Action, Error, Harness, LogLevel};
use wasmesh_sdk_tools::{ToolError, examples};

#[derive(Clone, Copy, Debug)]
enum Example {
    AssemblyScript,
    C,
    Zig,
}

/// The built example, or `None` (after saying so) when its tool is missing outside CI.
fn built(example: Example) -> Option<PathBuf> {
    let out = examples::test_out_dir();
    let result = match example {
        Example::AssemblyScript => examples::assemblyscript(&out),
        Example::C => examples::c_and_zig(&out).map(|(c, _)| c),
        Example::Zig => examples::c_and_zig(&out).map(|(_, zig)| zig),
    };
    match result {
        Ok(wasm) => Some(wasm),
        Err(ToolError::ToolMissing { tool, hint }) if std::env::var_os("CI").is_none() => {
            // Straight to stderr: the test harness captures eprintln! of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {example:?}: {tool} not found ({hint}); run ./setup.sh. Under CI this fails. ***\n"
            );
            None
        }
        Err(err) => panic!("building the {example:?} example: {err}"),
    }
}

fn sets_configured_headers(example: Example) {
    let Some(wasm) = built(example) else { return };
    let harness = Harness::load(
        &wasm,
        r#"{"request": {"x-hello": "world", "X-Upper": "case"}, "response": {"x-served-by": "example"}}"#,
    )
    .expect("the configuration is accepted");
    let mut stream = harness.http_stream().expect("stream");
    let action = stream
        .send_request_headers(
            &[
                (":method", "GET"),
                (":path", "/"),
                (":authority", "test"),
                ("x-hello", "old"),
            ],
            true,
        )
        .expect("request headers");
    assert_eq!(action, Action::Continue);
    assert_eq!(
        stream.request_header_values("x-hello"),
        ["world"],
        "replaced, not added"
    );
    assert_eq!(stream.request_header("x-upper").as_deref(), Some("case"));
    assert_eq!(
        stream.request_header(":path").as_deref(),
        Some("/"),
        "the rest untouched"
    );
    let action = stream
        .send_response_headers(&[(":status", "200")], true)
        .expect("response headers");
    assert_eq!(action, Action::Continue);
    assert_eq!(
        stream.response_header("x-served-by").as_deref(),
        Some("example")
    );

    // Many streams on one VM: each gets the headers (state is per configuration).
    for _ in 0..20 {
        let mut s = harness.http_stream().expect("stream");
        s.send_request_headers(&[(":path", "/again")], true)
            .expect("headers");
        assert_eq!(s.request_header("x-hello").as_deref(), Some("world"));
    }
}

fn passes_through_without_configuration(example: Example) {
    let Some(wasm) = built(example) else { return };
    for config in ["", "  ", "{}"] {
        let harness = Harness::load(&wasm, config).expect("no configuration is fine");
        let mut stream = harness.http_stream().expect("stream");
        stream
            .send_request_headers(&[(":path", "/"), ("x-a", "1")], true)
            .expect("headers");
        stream
            .send_response_headers(&[(":status", "204")], true)
            .expect("headers");
        assert_eq!(stream.request_headers().len(), 2, "{config:?}");
        assert_eq!(stream.response_headers().len(), 1, "{config:?}");
    }
}

fn refuses_bad_configuration(example: Example) {
    let Some(wasm) = built(example) else { return };
    for (config, names) in [
        (r#"{"requets": {"x-a": "1"}}"#, "requets"),
        (r#"{"request": {"x-a": 1}}"#, "request.x-a"),
        (r#"{"response": ["x-a"]}"#, "response"),
        (r#"{"request": {"x-a": "1"}"#, "line 1"),
        (r#"["request"]"#, "object"),
        ("request: {}", "line 1"),
    ] {
        let err = Harness::load(&wasm, config)
            .err()
            .unwrap_or_else(|| panic!("{example:?} accepted {config}"));
        assert!(
            matches!(&err, Error::Load { error, .. } if error.to_string().contains("proxy_on_configure returned false")),
            "{example:?} {config}: {err}"
        );
        assert!(
            err.logs()
                .iter()
                .any(|l| l.level == LogLevel::Error && l.message.contains(names)),
            "{example:?} {config}: the log should name {names:?}: {:?}",
            err.logs()
        );
    }
}

#[test]
fn assemblyscript_sets_configured_headers() {
    sets_configured_headers(Example::AssemblyScript);
}

#[test]
fn assemblyscript_passes_through_without_configuration() {
    passes_through_without_configuration(Example::AssemblyScript);
}

#[test]
fn assemblyscript_refuses_bad_configuration() {
    refuses_bad_configuration(Example::AssemblyScript);
}

#[test]
fn c_sets_configured_headers() {
    sets_configured_headers(Example::C);
}

#[test]
fn c_passes_through_without_configuration() {
    passes_through_without_configuration(Example::C);
}

#[test]
fn c_refuses_bad_configuration() {
    refuses_bad_configuration(Example::C);
}

#[test]
fn zig_sets_configured_headers() {
    sets_configured_headers(Example::Zig);
}

#[test]
fn zig_passes_through_without_configuration() {
    passes_through_without_configuration(Example::Zig);
}

#[test]
fn zig_refuses_bad_configuration() {
    refuses_bad_configuration(Example::Zig);
}

#[test]
fn every_example_passes_the_build_check() {
    for example in [Example::AssemblyScript, Example::C, Example::Zig] {
        let Some(wasm) = built(example) else { continue };
        let checked = wasmesh_sdk_tools::check(&wasm).expect("loads on wasmesh");
        assert_eq!(wasmesh_sdk_tools::check::abi_name(checked.abi), "0.2.1");
        assert!(
            checked.allocator,
            "{example:?} exports proxy_on_memory_allocate"
        );
        assert!(
            checked.imports.iter().all(|i| i.starts_with("env.proxy_")),
            "{example:?} imports only proxy-wasm functions: {:?}",
            checked.imports
        );
    }
}
