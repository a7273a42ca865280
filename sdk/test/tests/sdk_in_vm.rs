//! The SDK's newer helpers inside a real VM: `tests/fixture` is a filter written with them,
//! built for wasm32-wasip1 by `build_wasm` and driven here — filter state set and read back
//! (and a refusal that is a status, not a trap), the typed attribute accessors over Envoy's
//! encodings, clearing the route cache through Envoy's foreign function, and metrics whose
//! names and labels come from the configuration.

use std::path::PathBuf;

use wasmesh_sdk_test::{Action, Harness, HarnessBuilder, LogLevel, MetricType, Stream};

fn fixture() -> HarnessBuilder {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixture");
    let wasm: PathBuf = wasmesh_sdk_test::build_wasm(dir).expect("the fixture builds");
    Harness::builder(wasm).name("fixture").vm_id("fixture-vm")
}

fn send(h: &Harness, extra: &[(&str, &str)]) -> Stream {
    let mut s = h.http_stream().expect("stream");
    let mut headers = vec![
        (":method", "GET"),
        (":path", "/users/7"),
        (":authority", "api"),
    ];
    headers.extend_from_slice(extra);
    let action = s.send_request_headers(&headers, true).expect("headers");
    assert_eq!(action, Action::Continue);
    s
}

#[test]
fn filter_state_is_set_and_read_back_within_the_request() {
    let h = fixture().load().expect("load");
    let claims = r#"{"sub":"alice"}"#;
    let s = send(
        &h,
        &[
            ("x-set", &format!("wasmesh.jwt.claims={claims}")),
            ("x-get", "wasmesh.jwt.claims"),
        ],
    );
    assert_eq!(s.request_header("x-set-result").as_deref(), Some("Ok(())"));
    assert_eq!(s.request_header("x-got").as_deref(), Some(claims));
    assert_eq!(
        s.filter_state("wasmesh.jwt.claims").as_deref(),
        Some(claims.as_bytes()),
        "the host keeps it by its dotted name"
    );

    let other = send(&h, &[("x-get", "wasmesh.jwt.claims")]);
    assert_eq!(
        other.request_header("x-got"),
        None,
        "filter state is per request"
    );
}

#[test]
fn a_refused_set_property_is_a_status_not_a_trap() {
    // `on_configure` sets a property from the root context, where there is no request: the
    // host answers NOT_FOUND, which proxy-wasm's own `set_property` would turn into a panic.
    let h = fixture().load().expect("load");
    assert!(
        h.logs()
            .iter()
            .any(|l| l.level == LogLevel::Info && l.message == "root set_property: Err(NotFound)"),
        "{:?}",
        h.logs()
    );
    let s = send(&h, &[]);
    assert_eq!(
        s.request_header("x-replica").as_deref(),
        Some("0"),
        "still serving"
    );
}

#[test]
fn typed_accessors_decode_envoys_encodings() {
    let h = fixture().load().expect("load");
    let arrived = 1_704_067_200_123_456_789i64;
    h.set_property("request.time", arrived);
    h.set_property("request.duration", 42_000_000i64);
    h.set_property("response.code", 503);
    h.set_property("response.flags", 0x20i64 | 0x8000);
    h.set_property("request.size", 12);
    h.set_property("response.size", 345);
    h.set_property("response.total_size", 512);
    h.set_property("upstream.address", "10.0.0.9:8080");
    h.set_property("upstream.port", 8080);
    h.set_property("request.protocol", "HTTP/2");
    let s = send(&h, &[("x-attributes", "")]);
    assert_eq!(s.request_header("x-time"), Some(arrived.to_string()));
    assert_eq!(s.request_header("x-duration").as_deref(), Some("42000000"));
    assert_eq!(s.request_header("x-code").as_deref(), Some("503"));
    assert_eq!(s.request_header("x-flags").as_deref(), Some("UF,URX"));
    assert_eq!(s.request_header("x-sizes").as_deref(), Some("12/-/345/512"));
    assert_eq!(
        s.request_header("x-upstream").as_deref(),
        Some("10.0.0.9:8080 port 8080")
    );
    assert_eq!(s.request_header("x-protocol").as_deref(), Some("HTTP/2"));

    // Values of the wrong shape are no values: a text status, a negative duration.
    h.set_property("response.code", "503");
    h.set_property("request.duration", -5i64);
    h.set_property("response.flags", 0i64);
    let s = send(&h, &[("x-attributes", "")]);
    assert_eq!(s.request_header("x-code"), None);
    assert_eq!(s.request_header("x-duration"), None);
    assert_eq!(s.request_header("x-flags").as_deref(), Some("-"));

    let bare = fixture().load().expect("load");
    let s = send(&bare, &[("x-attributes", "")]);
    assert_eq!(s.request_header("x-time"), None);
    assert_eq!(s.request_header("x-sizes").as_deref(), Some("-/-/-/-"));
}

#[test]
fn clearing_the_route_cache_reaches_the_host_through_the_foreign_function() {
    let h = fixture().load().expect("load");
    let s = send(&h, &[("x-clear-route", "")]);
    assert_eq!(s.request_header("x-cleared").as_deref(), Some("true"));
    assert!(s.route_cache_cleared());

    // As in Envoy, editing the request's headers has the route chosen again too: the fixture
    // sets headers on every request.
    let s = send(&h, &[]);
    assert!(s.route_cache_cleared());
}

#[test]
fn metrics_take_their_names_and_labels_from_the_configuration() {
    let h = fixture()
        .plugin_config(r#"{"prefix": "fx_", "labels": ["route", "method"]}"#)
        .load()
        .expect("load");
    h.set_property("route_name", "users");
    h.set_property("request.method", "GET");
    let first = send(&h, &[]);
    let second = send(&h, &[]);
    h.set_property("request.method", "POST");
    let third = send(&h, &[]);
    assert_eq!(
        h.metric("route=.=users;.;method=.=GET;.;fx_requests_total"),
        Some(2)
    );
    assert_eq!(
        h.metric("route=.=users;.;method=.=POST;.;fx_requests_total"),
        Some(1)
    );
    assert_eq!(h.metric("fx_open_streams"), Some(3));
    for s in [first, second, third] {
        s.finish().expect("finish");
    }
    assert_eq!(h.metric("fx_open_streams"), Some(0));
    let histogram = h
        .metrics()
        .into_iter()
        .find(|m| m.name == "fx_path_length")
        .expect("histogram defined");
    assert_eq!(histogram.kind, MetricType::Histogram);
    assert_eq!(histogram.value, "/users/7".len() as i64);

    // Another configuration, other names: no prefix, no labels.
    let plain = fixture().load().expect("load");
    send(&plain, &[]);
    assert_eq!(plain.metric("requests_total"), Some(1));
    assert_eq!(plain.metric("fx_requests_total"), None);
}

#[test]
fn a_configuration_the_fixture_cannot_parse_is_refused() {
    let err = fixture()
        .plugin_config(r#"{"labels": "route"}"#)
        .load()
        .err()
        .expect("refused");
    assert!(
        err.logs()
            .iter()
            .any(|l| l.message.starts_with("configuration field `labels`")),
        "{err}"
    );
}
