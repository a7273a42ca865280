//! The SDK's host-facing helpers inside a real VM: `host-abi/test-programs/sdk-probe` is
//! written with them, built for wasm32-wasip1, and driven here through the test harness.

use wasmesh_sdk_test::{Action, Harness, LogLevel, MetricType, Stream};

fn load(config: &str) -> Harness {
    Harness::builder(wasmesh_test_programs::SDK_PROBE_WASM)
        .name("sdk-probe")
        .root_id("sdk-root")
        .vm_id("sdk-vm")
        .plugin_config(config)
        .load()
        .expect("load")
}

fn send(h: &Harness, method: &str, path: &str, extra: &[(&str, &str)]) -> (Stream, Action) {
    let mut s = h.http_stream().expect("stream");
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", "api.example.com:8443"),
    ];
    headers.extend_from_slice(extra);
    let action = s.send_request_headers(&headers, true).expect("headers");
    (s, action)
}

#[test]
fn typed_configuration_is_read_and_a_bad_one_logged() {
    let h = load(r#"{"greeting": "hello"}"#);
    let (s, _) = send(&h, "GET", "/", &[]);
    assert_eq!(s.request_header("x-greeting").as_deref(), Some("hello"));

    let err = Harness::builder(wasmesh_test_programs::SDK_PROBE_WASM)
        .plugin_config(r#"{"greeting": 7}"#)
        .load()
        .err()
        .expect("refused");
    assert!(
        err.logs().iter().any(|l| l.level == LogLevel::Error
            && l.message.starts_with(
                "configuration field `greeting`: invalid type: integer `7`, expected a string"
            )),
        "{err}"
    );
}

#[test]
fn the_router_answers_locally() {
    let h = load(r#"{"health_path": "/ready"}"#);
    let (s, action) = send(&h, "GET", "/ready?probe=1", &[]);
    assert_eq!(action, Action::Pause);
    let local = s.local_response().expect("health answer");
    assert_eq!((local.status, local.body.as_slice()), (200, &b"ok"[..]));
    assert!(
        local
            .headers
            .contains(&("content-type".into(), b"text/plain; charset=utf-8".to_vec()))
    );

    let (s, _) = send(&h, "DELETE", "/gone/item", &[]);
    let local = s.local_response().expect("gone");
    assert_eq!(local.status, 410);
    assert!(local.headers.contains(&("x-gone".into(), b"yes".to_vec())));

    let (s, action) = send(&h, "POST", "/ready", &[]);
    assert_eq!(action, Action::Continue, "the health route is GET only");
    assert_eq!(s.local_response(), None);
}

#[test]
fn header_helpers() {
    let h = load("");
    let (mut s, _) = send(
        &h,
        "GET",
        "/search/x?q=hello+world%21&n=1",
        &[
            ("cookie", "a=1"),
            ("Cookie", "b=2"),
            ("content-length", "41"),
            ("x-multi", "old"),
        ],
    );
    assert_eq!(s.request_header("x-cookies").as_deref(), Some("2"));
    assert_eq!(s.request_header("x-length").as_deref(), Some("42"));
    assert_eq!(s.request_header("x-path").as_deref(), Some("/search/x"));
    assert_eq!(s.request_header("x-q").as_deref(), Some("hello world!"));
    assert_eq!(
        s.request_header("x-host").as_deref(),
        Some("api.example.com")
    );
    assert_eq!(s.request_header("x-port").as_deref(), Some("8443"));
    assert_eq!(s.request_header_values("x-multi"), ["1", "2"]);
    s.send_response_headers(&[(":status", "201")], true)
        .expect("response");
    assert_eq!(s.response_header("x-status").as_deref(), Some("202"));
}

#[test]
fn attribute_accessors_decode_envoys_encodings() {
    let h = load("");
    h.set_property("source.port", 51234);
    h.set_property("destination.port", 8443);
    h.set_property("connection.mtls", true);
    h.set_property("connection.uri_san_peer_certificate", "spiffe://mesh/sa/x");
    h.set_property("route_name", "search");
    h.set_property("request.path", "/search/x?q=1");
    let (s, _) = send(&h, "GET", "/search/x?q=1", &[]);
    for (header, want) in [
        ("x-source-port", "51234"),
        ("x-destination-port", "8443"),
        ("x-mtls", "true"),
        ("x-uri-san", "spiffe://mesh/sa/x"),
        ("x-route", "search"),
        ("x-request-path", "/search/x?q=1"),
        ("x-plugin", "sdk-probe"),
        ("x-root", "sdk-root"),
        ("x-vm", "sdk-vm"),
    ] {
        assert_eq!(s.request_header(header).as_deref(), Some(want), "{header}");
    }

    // Absent attributes, or values not in Envoy's encoding, read as absent.
    h.remove_property("connection.mtls");
    h.set_property("source.port", "51234");
    let (s, _) = send(&h, "GET", "/", &[]);
    assert_eq!(s.request_header("x-mtls"), None);
    assert_eq!(s.request_header("x-source-port"), None);
}

#[test]
fn metrics_are_defined_once_with_labels_in_the_name() {
    let h = load("");
    send(
        &h,
        "GET",
        "/a",
        &[("cookie", "1"), ("cookie", "2"), ("cookie", "3")],
    );
    assert_eq!(h.metric("sdk_cookies"), Some(3));
    send(&h, "GET", "/bb", &[]);
    let (s, _) = send(&h, "POST", "/ccc", &[]);
    assert_eq!(s.request_header("x-count").as_deref(), Some("3"));

    let metrics = h.metrics();
    let find = |name: &str| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| (m.kind, m.value))
    };
    assert_eq!(
        find("method=.=GET;.;sdk_requests_total"),
        Some((MetricType::Counter, 2))
    );
    assert_eq!(
        find("method=.=POST;.;sdk_requests_total"),
        Some((MetricType::Counter, 1))
    );
    assert_eq!(find("sdk_requests"), Some((MetricType::Counter, 3)));
    assert_eq!(find("sdk_cookies"), Some((MetricType::Gauge, 0)));
    assert_eq!(find("sdk_path_length"), Some((MetricType::Histogram, 4)));
    // Each metric is defined once, however many requests use it.
    assert_eq!(metrics.len(), 5, "{metrics:?}");
}
