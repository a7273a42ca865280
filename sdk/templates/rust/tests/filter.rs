//! Runs the built {{name}}.wasm on wasmesh's host, in-process: `build_wasm` compiles this
//! crate for wasm32-wasip1 once per test run, and the harness drives requests through it.

use wasmesh_sdk_test::{Action, Harness, LogLevel};

fn wasm() -> std::path::PathBuf {
    wasmesh_sdk_test::build_wasm(env!("CARGO_MANIFEST_DIR")).expect("the filter builds")
}

#[test]
fn sets_the_configured_request_and_response_headers() {
    let harness = Harness::load(
        wasm(),
        r#"{"request": {"x-hello": "world"}, "response": {"x-served-by": "{{name}}"}}"#,
    )
    .expect("the configuration is accepted");
    let mut stream = harness.http_stream().expect("stream");

    let action = stream
        .send_request_headers(&[(":method", "GET"), (":path", "/"), ("x-hello", "old")], true)
        .expect("request headers");
    assert_eq!(action, Action::Continue);
    assert_eq!(stream.request_header_values("x-hello"), ["world"]);

    let action = stream
        .send_response_headers(&[(":status", "200")], true)
        .expect("response headers");
    assert_eq!(action, Action::Continue);
    assert_eq!(stream.response_header("x-served-by").as_deref(), Some("{{name}}"));
}

#[test]
fn refuses_a_configuration_it_does_not_understand() {
    let err = Harness::load(wasm(), r#"{"requets": {}}"#)
        .err()
        .expect("an unknown field is refused");
    assert!(
        err.logs()
            .iter()
            .any(|l| l.level == LogLevel::Error && l.message.contains("requets")),
        "the log names the field: {err}"
    );
}
