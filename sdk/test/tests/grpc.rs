//! gRPC calls and streams from a filter written with the published `proxy-wasm` SDK
//! (`host-abi/test-programs/grpc-probe`), driven through the harness: what the filter sends is
//! seen, the test answers as the server, and the filter's callbacks — which the SDK routes to
//! the request that asked — run as in Envoy.

use std::time::Duration;

use wasmesh_sdk_test::{Action, Error, GrpcCode, Harness, Stream};

fn harness() -> Harness {
    Harness::builder(wasmesh_test_programs::GRPC_PROBE_WASM)
        .name("grpc-probe")
        .upstreams(&["auth", "echo", "backend"])
        .load()
        .expect("load the gRPC probe")
}

fn request<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        (":method", "GET"),
        (":path", "/orders/7"),
        (":authority", "shop"),
    ];
    h.extend_from_slice(extra);
    h
}

/// The filter's gRPC log lines, without their tokens' values.
fn grpc_log(h: &Harness) -> Vec<String> {
    h.logs()
        .into_iter()
        .filter_map(|l| l.message.strip_prefix("grpc ").map(str::to_string))
        .collect()
}

fn open(h: &Harness, extra: &[(&str, &str)]) -> Stream {
    let mut s = h.http_stream().expect("stream");
    let action = s
        .send_request_headers(&request(extra), true)
        .expect("request headers");
    assert_eq!(action, Action::Pause);
    s
}

#[test]
fn a_unary_call_is_sent_as_asked_and_its_answer_resumes_the_request() {
    let h = harness();
    let s = open(&h, &[("x-grpc-call", "auth"), ("x-user", "alice")]);
    assert!(s.is_paused());
    let calls = h.pending_grpc_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.upstream, "auth");
    assert_eq!(
        (call.service.as_str(), call.method.as_str()),
        ("wasmesh.test.Auth", "Check")
    );
    assert!(!call.stream);
    assert_eq!(call.messages, vec![b"/orders/7".to_vec()]);
    assert_eq!(call.timeout, Some(Duration::from_millis(1000)));
    assert_eq!(call.metadata("x-user").as_deref(), Some("alice"));
    assert!(
        call.initial_metadata
            .iter()
            .any(|(k, v)| k == "x-trace-bin" && v == &[0, 1]),
        "binary metadata passes as bytes: {:?}",
        call.initial_metadata
    );

    // Metadata is not shown for a unary call (as in Envoy), and nothing is delivered before
    // the status: the filter is still waiting.
    h.grpc_initial_metadata(call.id, &[(":status", "200"), ("x-echo-initial", "no")])
        .expect("metadata");
    assert!(grpc_log(&h).is_empty(), "{:?}", grpc_log(&h));
    assert!(s.is_paused());

    h.grpc_respond(call.id, b"allowed:alice").expect("respond");
    assert!(s.resumed());
    assert_eq!(s.request_header("x-auth").as_deref(), Some("allowed:alice"));
    assert_eq!(s.local_response(), None);
    let log = grpc_log(&h);
    assert_eq!(
        log.len(),
        1,
        "exactly one callback ends a unary call: {log:?}"
    );
    assert!(
        log[0].starts_with("call_response") && log[0].ends_with("status=0 size=13"),
        "{log:?}"
    );
    assert!(h.pending_grpc_calls().is_empty());
    assert!(matches!(
        h.grpc_message(call.id, b"late"),
        Err(Error::NoSuchGrpcCall(_))
    ));
}

#[test]
fn an_error_status_reaches_the_filter_with_its_message() {
    let h = harness();
    for (code, message, want_status) in [
        (GrpcCode::PermissionDenied, "no entry for bob", 403),
        (GrpcCode::Unavailable, "auth is down", 503),
    ] {
        let s = open(&h, &[("x-grpc-call", "auth"), ("x-user", "bob")]);
        let id = h.pending_grpc_calls()[0].id;
        // A message before a failing status is not delivered.
        h.grpc_message(id, b"ignored").expect("message");
        h.grpc_close(id, code, message).expect("close");
        let local = s.local_response().expect("the filter answered");
        assert_eq!(local.status, want_status);
        let header = |name: &str| {
            local
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("x-grpc-status"), Some(code.code().to_string()));
        assert_eq!(header("x-grpc-message").as_deref(), Some(message));
        assert!(
            grpc_log(&h)
                .iter()
                .any(|l| l.ends_with(&format!("status={} size=0", code.code()))),
            "{:?}",
            grpc_log(&h)
        );
    }
}

#[test]
fn ok_without_a_message_is_internal_as_in_envoy() {
    let h = harness();
    let s = open(&h, &[("x-grpc-call", "auth")]);
    let id = h.pending_grpc_calls()[0].id;
    h.grpc_close(id, GrpcCode::Ok, "").expect("close");
    let local = s.local_response().expect("the filter answered");
    assert_eq!(local.status, 403);
    assert!(
        local
            .headers
            .iter()
            .any(|(k, v)| k == "x-grpc-status" && v == b"13"),
        "{local:?}"
    );
}

#[test]
fn the_timeout_is_the_filters_and_a_deadline_status_fails_the_request() {
    let h = harness();
    let s = open(&h, &[("x-grpc-call", "auth"), ("x-grpc-timeout-ms", "250")]);
    let call = h.pending_grpc_calls().remove(0);
    assert_eq!(call.timeout, Some(Duration::from_millis(250)));
    h.grpc_close(
        call.id,
        GrpcCode::DeadlineExceeded,
        "deadline exceeded after 250ms",
    )
    .expect("close");
    let local = s.local_response().expect("answered");
    assert_eq!(local.status, 503);

    // Zero is "no deadline", as Envoy reads it.
    let _s = open(&h, &[("x-grpc-call", "auth"), ("x-grpc-timeout-ms", "0")]);
    assert_eq!(h.pending_grpc_calls()[0].timeout, None);
}

#[test]
fn an_unknown_upstream_is_a_parse_failure() {
    let h = harness();
    for header in ["x-grpc-call", "x-grpc-stream"] {
        let s = open(&h, &[(header, "nowhere")]);
        let local = s.local_response().expect("the filter answered");
        assert_eq!(local.status, 500);
        assert!(
            local
                .headers
                .iter()
                .any(|(k, v)| k == "x-grpc-dispatch" && v == b"ParseFailure"),
            "{header}: {local:?}"
        );
    }
    assert!(h.grpc_calls().is_empty());
}

#[test]
fn a_cancelled_call_gets_no_callback_even_when_answered() {
    let h = harness();
    let mut s = h.http_stream().expect("stream");
    let action = s
        .send_request_headers(&request(&[("x-grpc-cancel", "auth")]), true)
        .expect("headers");
    assert_eq!(action, Action::Continue);
    let id = h.pending_grpc_calls()[0].id;
    s.send_response_headers(&[(":status", "200")], true)
        .expect("response headers");
    let token = s.response_header("x-grpc-cancelled").expect("cancelled");
    assert!(!token.is_empty());
    let call = &h.grpc_calls()[0];
    assert!(call.cancelled, "the embedder was told: {call:?}");
    assert!(h.pending_grpc_calls().is_empty());

    // The server's answer still arrives; the filter must not hear of it.
    h.grpc_respond(id, b"too late").expect("respond");
    assert!(grpc_log(&h).is_empty(), "{:?}", grpc_log(&h));
}

#[test]
fn a_stream_carries_messages_both_ways_with_metadata_and_status() {
    let h = harness();
    let s = open(
        &h,
        &[
            ("x-grpc-stream", "echo"),
            ("x-user", "carol"),
            ("x-grpc-send", "a,b,c"),
        ],
    );
    let call = h.pending_grpc_calls().remove(0);
    assert!(call.stream);
    assert_eq!(
        (call.service.as_str(), call.method.as_str()),
        ("wasmesh.test.Echo", "Chat")
    );
    assert_eq!(call.metadata("x-user").as_deref(), Some("carol"));
    assert_eq!(
        call.messages,
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert!(call.half_closed, "the last message carried end_stream");
    assert_eq!(call.timeout, None);

    h.grpc_initial_metadata(call.id, &[(":status", "200"), ("x-echo-initial", "hello")])
        .expect("initial metadata");
    for m in ["x", "y", "z"] {
        h.grpc_message(call.id, m.as_bytes()).expect("message");
        assert!(s.is_paused(), "messages do not end the stream");
    }
    h.grpc_trailing_metadata(call.id, &[("grpc-status", "0"), ("x-echo-trailer", "bye")])
        .expect("trailers");
    h.grpc_close(call.id, GrpcCode::Ok, "").expect("close");

    assert!(s.resumed());
    assert_eq!(
        s.request_header("x-echo-messages").as_deref(),
        Some("x,y,z")
    );
    assert_eq!(s.request_header("x-echo-initial").as_deref(), Some("hello"));
    assert_eq!(s.request_header("x-echo-trailer").as_deref(), Some("bye"));
    assert_eq!(s.request_header("x-grpc-status").as_deref(), Some("0"));
    let order: Vec<String> = grpc_log(&h)
        .iter()
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        order,
        [
            "stream_initial_metadata",
            "stream_message",
            "stream_message",
            "stream_message",
            "stream_trailing_metadata",
            "stream_close",
        ]
    );
    assert!(
        grpc_log(&h)[0].ends_with("n=2"),
        "the initial metadata's size: {:?}",
        grpc_log(&h)
    );
}

#[test]
fn a_stream_closed_locally_keeps_receiving_until_the_remote_status() {
    let h = harness();
    let s = open(
        &h,
        &[
            ("x-grpc-stream", "echo"),
            ("x-grpc-send", "one,two"),
            ("x-grpc-half-close", "close"),
        ],
    );
    let call = h.pending_grpc_calls().remove(0);
    assert_eq!(call.messages, vec![b"one".to_vec(), b"two".to_vec()]);
    assert!(call.half_closed, "close_grpc_stream closed the local side");
    h.grpc_message(call.id, b"after-close").expect("message");
    h.grpc_close(call.id, GrpcCode::Aborted, "stopped by the server")
        .expect("close");
    assert!(s.resumed());
    assert_eq!(
        s.request_header("x-echo-messages").as_deref(),
        Some("after-close")
    );
    assert_eq!(s.request_header("x-grpc-status").as_deref(), Some("10"));
    assert_eq!(
        s.request_header("x-grpc-message").as_deref(),
        Some("stopped by the server")
    );
}

#[test]
fn a_stream_left_open_can_be_closed_after_the_remote_end_closed() {
    let h = harness();
    let mut s = open(
        &h,
        &[
            ("x-grpc-stream", "echo"),
            ("x-grpc-send", "ping"),
            ("x-grpc-half-close", "none"),
        ],
    );
    let call = h.pending_grpc_calls().remove(0);
    assert!(!call.half_closed);
    h.grpc_close(call.id, GrpcCode::Unavailable, "")
        .expect("close");
    assert!(s.resumed(), "{:?}", h.logs());
    assert_eq!(s.request_header("x-grpc-status").as_deref(), Some("14"));
    assert_eq!(s.request_header("x-echo-messages").as_deref(), Some(""));
    // The filter closes its side in a later callback: the SDK unwraps that result, so
    // anything but OK would trap it.
    let action = s
        .send_response_headers(&[(":status", "200")], true)
        .expect("closing a remote-closed stream succeeds");
    assert_eq!(action, Action::Continue);
    assert!(s.response_header("x-grpc-closed").is_some());
    // Once closed on both sides it is gone: a call that carried end_stream is the same.
    let mut s = open(&h, &[("x-grpc-stream", "echo"), ("x-grpc-send", "ping")]);
    let id = h.pending_grpc_calls()[0].id;
    h.grpc_close(id, GrpcCode::Ok, "").expect("close");
    s.send_response_headers(&[(":status", "200")], true)
        .expect("closing after end_stream succeeds too");
    assert!(s.response_header("x-grpc-closed").is_some());
}
