//! The headers filter as built for wasm32-wasip1, run on wasmesh's host through the SDK's
//! test harness: the configuration format the proxy's tests use, several values, every
//! template variable, the rewrites, and configuration errors.

use wasmesh_sdk_test::{Action, Error, Harness, LogLevel, Stream};

fn load(config: &str) -> Harness {
    Harness::builder(wasmesh_test_programs::filter("headers"))
        .name("headers")
        .plugin_config(config)
        .load()
        .expect("configuration accepted")
}

fn request_through(h: &Harness, headers: &[(&str, &str)]) -> Stream {
    let mut s = h.http_stream().expect("stream");
    let mut all = vec![
        (":method", "GET"),
        (":path", "/api/v1/users?id=7"),
        (":authority", "example.com"),
        (":scheme", "https"),
    ];
    all.extend_from_slice(headers);
    assert_eq!(
        s.send_request_headers(&all, true).expect("request headers"),
        Action::Continue
    );
    s
}

#[test]
fn the_proxy_configuration_format_works() {
    let h = load(
        r#"{"request": {"set": {"x-env": "prod"}, "add": {"x-tag": "b"}, "remove": ["x-debug"]},
            "response": {"set": {"x-served-by": "wasmesh"}, "remove": ["x-upstream"]}}"#,
    );
    let mut s = request_through(&h, &[("x-env", "dev"), ("x-tag", "a"), ("x-debug", "1")]);
    assert_eq!(s.request_header_values("x-env"), ["prod"]);
    assert_eq!(s.request_header_values("x-tag"), ["a", "b"]);
    assert_eq!(s.request_header("x-debug"), None);
    s.send_response_headers(&[(":status", "200"), ("x-upstream", "u1")], true)
        .expect("response");
    assert_eq!(s.response_header("x-served-by").as_deref(), Some("wasmesh"));
    assert_eq!(s.response_header("x-upstream"), None);
}

#[test]
fn several_values() {
    let h = load(
        r#"{"request": {"set": {"x-multi": ["one", "two"]}, "add": {"x-tag": ["b", "c"]},
                        "remove": ["x-gone"]}}"#,
    );
    let s = request_through(
        &h,
        &[
            ("x-multi", "old-1"),
            ("x-multi", "old-2"),
            ("x-tag", "a"),
            ("x-gone", "1"),
            ("x-gone", "2"),
        ],
    );
    assert_eq!(s.request_header_values("x-multi"), ["one", "two"]);
    assert_eq!(s.request_header_values("x-tag"), ["a", "b", "c"]);
    assert!(s.request_header_values("x-gone").is_empty());
}

#[test]
fn every_template_variable() {
    let cases: &[(&str, &str)] = &[
        ("%REQ(x-in)%", "in-value"),
        ("%REQ(X-IN)%", "in-value"),
        ("%REQ(x-missing?x-in)%", "in-value"),
        ("%REQ(x-in):2%", "in"),
        ("%REQ(:path)%", "/api/v1/users?id=7"),
        ("%REQ(:authority)%", "example.com"),
        ("%PROPERTY(source.address)%", "10.1.2.3:51234"),
        ("%PROPERTY(source.port)%", "51234"),
        ("%PROPERTY(connection.mtls)%", "true"),
        ("%PROPERTY(plugin_name)%", "headers"),
        ("%PROPERTY(custom.value)%", "custom"),
        ("%PROTOCOL%", "HTTP/2"),
        ("%DOWNSTREAM_REMOTE_ADDRESS%", "10.1.2.3:51234"),
        ("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.1.2.3"),
        ("%DOWNSTREAM_REMOTE_PORT%", "51234"),
        ("%DOWNSTREAM_LOCAL_ADDRESS%", "[2001:db8::1]:8443"),
        ("%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "2001:db8::1"),
        ("%DOWNSTREAM_LOCAL_PORT%", "8443"),
        ("%REQUESTED_SERVER_NAME%", "api.example.com"),
        ("%DOWNSTREAM_PEER_URI_SAN%", "spiffe://mesh/ns/a/sa/client"),
        ("%DOWNSTREAM_PEER_DNS_SAN%", "client.mesh"),
        ("%DOWNSTREAM_PEER_SUBJECT%", "CN=client,O=mesh"),
        ("%ROUTE_NAME%", "users"),
        ("%UPSTREAM_CLUSTER%", "users-v1"),
        ("100%% %ROUTE_NAME%", "100% users"),
        ("<%REQ(x-in)%|%ROUTE_NAME%>", "<in-value|users>"),
    ];
    let set: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (template, _))| format!("\"x-out-{i}\": {template:?}"))
        .collect();
    let h = load(&format!(
        r#"{{"request": {{"set": {{{}}}}}}}"#,
        set.join(", ")
    ));
    h.set_property("source.address", "10.1.2.3:51234");
    h.set_property("source.port", 51234);
    h.set_property("destination.address", "[2001:db8::1]:8443");
    h.set_property("destination.port", 8443);
    h.set_property("connection.mtls", true);
    h.set_property("connection.requested_server_name", "api.example.com");
    h.set_property(
        "connection.uri_san_peer_certificate",
        "spiffe://mesh/ns/a/sa/client",
    );
    h.set_property("connection.dns_san_peer_certificate", "client.mesh");
    h.set_property("connection.subject_peer_certificate", "CN=client,O=mesh");
    h.set_property("route_name", "users");
    h.set_property("cluster_name", "users-v1");
    h.set_property("request.protocol", "HTTP/2");
    h.set_property("custom.value", "custom");
    let s = request_through(&h, &[("x-in", "in-value")]);
    for (i, (template, want)) in cases.iter().enumerate() {
        assert_eq!(
            s.request_header(&format!("x-out-{i}")).as_deref(),
            Some(*want),
            "{template}"
        );
    }
}

#[test]
fn response_templates_read_the_request_and_the_response() {
    let h = load(
        r#"{"response": {"set": {"x-request-id": "%REQ(x-request-id)%", "x-echo": "%RESP(x-app)%/%ROUTE_NAME%"},
                         "add": {"x-trace": "%REQ(x-missing?x-trace-id)%"}}}"#,
    );
    h.set_property("route_name", "users");
    let mut s = request_through(&h, &[("x-request-id", "req-42"), ("x-trace-id", "t-1")]);
    s.send_response_headers(&[(":status", "200"), ("x-app", "app-9")], true)
        .expect("response");
    assert_eq!(s.response_header("x-request-id").as_deref(), Some("req-42"));
    assert_eq!(s.response_header("x-echo").as_deref(), Some("app-9/users"));
    assert_eq!(s.response_header("x-trace").as_deref(), Some("t-1"));
}

#[test]
fn templates_read_the_request_as_it_arrived_and_empty_values_are_skipped() {
    let h = load(
        r#"{"request": {"set": {"x-a": "new", "x-b": "%REQ(x-a)%", "x-c": "%REQ(x-missing)%"},
                        "add": {"x-d": ["%REQ(x-missing)%", "kept"]}}}"#,
    );
    let s = request_through(&h, &[("x-a", "old"), ("x-c", "untouched")]);
    assert_eq!(s.request_header("x-a").as_deref(), Some("new"));
    assert_eq!(s.request_header("x-b").as_deref(), Some("old"));
    assert_eq!(s.request_header_values("x-c"), ["untouched"]);
    assert_eq!(s.request_header_values("x-d"), ["kept"]);
}

#[test]
fn substituted_values_cannot_inject_headers() {
    let h = load(r#"{"request": {"set": {"x-peer": "%PROPERTY(custom.evil)%"}}}"#);
    h.set_property("custom.evil", "a\r\nx-injected: 1");
    let s = request_through(&h, &[]);
    assert_eq!(
        s.request_header("x-peer").as_deref(),
        Some("ax-injected: 1")
    );
    assert_eq!(s.request_header("x-injected"), None);
}

#[test]
fn rewrites_path_prefix_and_host() {
    let h = load(
        r#"{"request": {"set": {"x-original-path": "%REQ(:path)%"},
                        "rewrite": {"path_prefix": {"from": "/api/v1/", "to": "/"},
                                    "host": "users.%REQ(x-zone)%.internal"}}}"#,
    );
    let s = request_through(&h, &[("x-zone", "eu")]);
    assert_eq!(s.request_header(":path").as_deref(), Some("/users?id=7"));
    assert_eq!(
        s.request_header(":authority").as_deref(),
        Some("users.eu.internal")
    );
    assert_eq!(
        s.request_header("x-original-path").as_deref(),
        Some("/api/v1/users?id=7")
    );

    let mut other = h.http_stream().expect("stream");
    other
        .send_request_headers(
            &[
                (":method", "GET"),
                (":path", "/health"),
                (":authority", "a"),
            ],
            true,
        )
        .expect("headers");
    assert_eq!(
        other.request_header(":path").as_deref(),
        Some("/health"),
        "no prefix, no rewrite"
    );
    assert_eq!(
        other.request_header(":authority").as_deref(),
        Some("users..internal")
    );
}

#[test]
fn pseudo_headers_can_be_set_on_requests() {
    let h = load(r#"{"request": {"set": {":path": "/fixed%REQ(x-suffix)%", ":method": "POST"}}}"#);
    let s = request_through(&h, &[("x-suffix", "/x")]);
    assert_eq!(s.request_header(":path").as_deref(), Some("/fixed/x"));
    assert_eq!(s.request_header_values(":method"), ["POST"]);
}

#[test]
fn configuration_errors_name_the_field_in_the_log() {
    for (config, expect) in [
        (
            r#"{"request": {"set": {"x-a": "%NOPE%"}}}"#,
            "configuration field `request.set.x-a`: unknown variable %NOPE%",
        ),
        (
            r#"{"request": {"add": {"x-a": ["ok", "50%"]}}}"#,
            "configuration field `request.add.x-a[1]`: unterminated variable",
        ),
        (
            r#"{"request": {"set": {"x-a": "%RESP(x-b)%"}}}"#,
            "configuration field `request.set.x-a`: %RESP()% is not available on request headers",
        ),
        (
            r#"{"response": {"remove": [":status"]}}"#,
            "configuration field `response.remove`: pseudo header :status cannot be removed",
        ),
        (
            r#"{"request": {"rewrite": {"path_prefix": {"from": "api", "to": "/"}}}}"#,
            "configuration field `request.rewrite.path_prefix.from`: must start with /",
        ),
        (
            r#"{"requests": {}}"#,
            "configuration field `requests`: unknown field `requests`",
        ),
        ("not json", "configuration: expected ident"),
    ] {
        let err = Harness::builder(wasmesh_test_programs::filter("headers"))
            .name("headers")
            .plugin_config(config)
            .load()
            .err()
            .unwrap_or_else(|| panic!("{config} must be refused"));
        assert!(matches!(err, Error::Load { .. }), "{err}");
        assert!(
            err.logs()
                .iter()
                .any(|l| l.level == LogLevel::Error && l.message.starts_with(expect)),
            "{config}: {:?}",
            err.logs()
        );
    }
}

#[test]
fn no_configuration_changes_nothing() {
    let h = load("");
    let mut s = request_through(&h, &[("x-a", "1")]);
    assert_eq!(s.request_header("x-a").as_deref(), Some("1"));
    assert_eq!(
        s.request_header(":path").as_deref(),
        Some("/api/v1/users?id=7")
    );
    s.send_response_headers(&[(":status", "204")], true)
        .expect("response");
    assert_eq!(s.response_headers().len(), 1);
}
