//! The cors filter as built for wasm32-wasip1, run on wasmesh's host through the SDK's test
//! harness: preflights answered with each header, `*` echoing what the preflight asks,
//! disallowed origins (forwarded or refused preflights, no headers on responses), actual
//! requests, `Vary`, origin patterns, per-route policies, metrics and configuration errors.

use wasmesh_sdk_test::{Action, Error, Harness, LogLevel, Stream};

const POLICY: &str = r#"{
    "allow_origins": ["https://app.example.com", "https://*.example.org", {"suffix": ".corp.test"}],
    "allow_methods": ["GET", "POST", "PUT"],
    "allow_headers": "content-type, x-token",
    "expose_headers": ["x-request-id", "x-trace"],
    "max_age": 600,
    "allow_credentials": true
}"#;

fn load(config: &str) -> Harness {
    Harness::builder(wasmesh_test_programs::filter("cors"))
        .name("cors")
        .plugin_config(config)
        .load()
        .expect("configuration accepted")
}

fn send(h: &Harness, method: &str, headers: &[(&str, &str)]) -> (Stream, Action) {
    let mut s = h.http_stream().expect("stream");
    let mut all = vec![
        (":method", method),
        (":path", "/api/items"),
        (":authority", "api.example.com"),
    ];
    all.extend_from_slice(headers);
    let action = s.send_request_headers(&all, true).expect("headers");
    (s, action)
}

fn preflight(h: &Harness, origin: &str, extra: &[(&str, &str)]) -> (Stream, Action) {
    let mut headers = vec![("origin", origin), ("access-control-request-method", "PUT")];
    headers.extend_from_slice(extra);
    send(h, "OPTIONS", &headers)
}

/// Runs the upstream's response through the filter.
fn respond(s: &mut Stream, headers: &[(&str, &str)]) {
    let mut all = vec![(":status", "200")];
    all.extend_from_slice(headers);
    s.send_response_headers(&all, true).expect("response");
}

fn local(s: &Stream, name: &str) -> Option<String> {
    s.local_response().and_then(|l| {
        l.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    })
}

#[test]
fn an_allowed_preflight_is_answered_here_with_every_header() {
    let h = load(POLICY);
    let (s, action) = preflight(
        &h,
        "https://app.example.com",
        &[("access-control-request-headers", "content-type")],
    );
    assert_eq!(action, Action::Pause);
    let answer = s.local_response().expect("answered locally");
    assert_eq!(answer.status, 204);
    assert!(answer.body.is_empty());
    for (name, value) in [
        ("access-control-allow-origin", "https://app.example.com"),
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-methods", "GET, POST, PUT"),
        ("access-control-allow-headers", "content-type, x-token"),
        ("access-control-max-age", "600"),
        ("vary", "Origin"),
    ] {
        assert_eq!(local(&s, name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(
        local(&s, "access-control-expose-headers"),
        None,
        "not on preflights"
    );
    assert_eq!(local(&s, "access-control-allow-private-network"), None);
    assert_eq!(h.metric("cors_preflights_answered_total"), Some(1));
    assert_eq!(h.metric("cors_origin_valid_total"), Some(1));
}

#[test]
fn a_minimal_policy_sends_only_what_it_has() {
    let h = load(r#"{"allow_origins": ["https://app.example.com"]}"#);
    let (s, _) = preflight(&h, "https://app.example.com", &[]);
    let answer = s.local_response().expect("answered");
    let names: Vec<&str> = answer.headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["access-control-allow-origin", "vary"]);
}

#[test]
fn wildcards_echo_what_the_preflight_asks() {
    let h = load(
        r#"{"allow_origins": ["*"], "allow_methods": "*", "allow_headers": ["*"],
            "allow_credentials": true}"#,
    );
    let (s, _) = preflight(
        &h,
        "https://anywhere.test",
        &[("access-control-request-headers", "x-custom, content-type")],
    );
    assert_eq!(
        local(&s, "access-control-allow-origin").as_deref(),
        Some("https://anywhere.test"),
        "the origin itself, never `*`, so credentials work"
    );
    assert_eq!(
        local(&s, "access-control-allow-methods").as_deref(),
        Some("PUT")
    );
    assert_eq!(
        local(&s, "access-control-allow-headers").as_deref(),
        Some("x-custom, content-type")
    );
    assert_eq!(
        local(&s, "vary").as_deref(),
        Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
    );
    let (s, _) = preflight(&h, "https://anywhere.test", &[]);
    assert_eq!(
        local(&s, "access-control-allow-headers"),
        None,
        "nothing asked, nothing echoed"
    );
}

#[test]
fn a_preflight_from_a_disallowed_origin_goes_upstream_unless_told_otherwise() {
    let h = load(POLICY);
    let (mut s, action) = preflight(&h, "https://evil.test", &[]);
    assert_eq!(
        action,
        Action::Continue,
        "forwarded, as Envoy does by default"
    );
    assert_eq!(s.local_response(), None);
    respond(&mut s, &[]);
    assert_eq!(s.response_header("access-control-allow-origin"), None);
    assert_eq!(s.response_header("vary").as_deref(), Some("Origin"));
    assert_eq!(h.metric("cors_origin_invalid_total"), Some(1));
    assert_eq!(h.metric("cors_preflights_answered_total"), None);

    let strict = load(
        r#"{"allow_origins": ["https://app.example.com"], "allow_methods": "GET",
            "forward_not_matching_preflights": false}"#,
    );
    let (s, action) = preflight(&strict, "https://evil.test", &[]);
    assert_eq!(action, Action::Pause);
    assert_eq!(s.local_response().map(|l| l.status), Some(204));
    assert_eq!(
        local(&s, "access-control-allow-origin"),
        None,
        "answered here, without allowing the origin: the browser refuses"
    );
    assert_eq!(
        local(&s, "access-control-allow-methods").as_deref(),
        Some("GET")
    );
}

#[test]
fn actual_requests_from_allowed_origins_get_the_response_headers() {
    let h = load(POLICY);
    let (mut s, action) = send(&h, "GET", &[("origin", "https://app.example.com")]);
    assert_eq!(action, Action::Continue);
    respond(
        &mut s,
        &[
            ("access-control-allow-origin", "*"),
            ("vary", "Accept-Encoding"),
        ],
    );
    assert_eq!(
        s.response_header_values("access-control-allow-origin"),
        ["https://app.example.com"],
        "replaces whatever the upstream said"
    );
    assert_eq!(
        s.response_header("access-control-allow-credentials")
            .as_deref(),
        Some("true")
    );
    assert_eq!(
        s.response_header("access-control-expose-headers")
            .as_deref(),
        Some("x-request-id, x-trace")
    );
    assert_eq!(
        s.response_header_values("vary"),
        ["Accept-Encoding", "Origin"]
    );
    assert_eq!(s.response_header("access-control-allow-methods"), None);
    assert_eq!(s.response_header("access-control-max-age"), None);

    let (mut s, _) = send(&h, "POST", &[("origin", "https://app.example.com")]);
    respond(&mut s, &[("vary", "accept, origin")]);
    assert_eq!(
        s.response_header_values("vary"),
        ["accept, origin"],
        "already varies on Origin"
    );
}

#[test]
fn disallowed_origins_and_requests_without_one_get_no_cors_headers() {
    let h = load(POLICY);
    for origin in [
        Some("https://evil.test"),
        Some("https://app.example.com.evil.test"),
        Some("http://app.example.com"),
        Some(""),
        None,
    ] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        let (mut s, action) = send(&h, "GET", &headers);
        assert_eq!(action, Action::Continue, "{origin:?}");
        respond(&mut s, &[]);
        assert_eq!(
            s.response_header("access-control-allow-origin"),
            None,
            "{origin:?}"
        );
        assert_eq!(
            s.response_header("access-control-allow-credentials"),
            None,
            "{origin:?}"
        );
        assert_eq!(
            s.response_header("access-control-expose-headers"),
            None,
            "{origin:?}"
        );
        assert_eq!(
            s.response_header("vary").as_deref(),
            Some("Origin"),
            "{origin:?}: caches must key on Origin for every response under a policy"
        );
    }
    assert_eq!(h.metric("cors_origin_invalid_total"), Some(3));
    assert_eq!(h.metric("cors_origin_valid_total"), None);
}

#[test]
fn origins_match_exactly_by_pattern_and_by_suffix() {
    let h = load(POLICY);
    for (origin, allowed) in [
        ("https://app.example.com", true),
        ("HTTPS://APP.EXAMPLE.COM", true),
        ("https://app.example.com:8443", false),
        ("https://shop.example.org", true),
        ("https://a.b.example.org", true),
        ("https://example.org", false),
        ("http://shop.example.org", false),
        ("https://build.corp.test", true),
        ("https://corp.test", false),
        ("null", false),
    ] {
        let (mut s, _) = send(&h, "GET", &[("origin", origin)]);
        respond(&mut s, &[]);
        assert_eq!(
            s.response_header("access-control-allow-origin").is_some(),
            allowed,
            "{origin}"
        );
    }
}

#[test]
fn options_without_a_requested_method_is_an_ordinary_request() {
    let h = load(POLICY);
    let (mut s, action) = send(&h, "OPTIONS", &[("origin", "https://app.example.com")]);
    assert_eq!(action, Action::Continue, "not a preflight: goes upstream");
    respond(&mut s, &[]);
    assert_eq!(
        s.response_header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let (s, action) = send(
        &h,
        "GET",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
        ],
    );
    assert_eq!(action, Action::Continue, "only OPTIONS is a preflight");
    assert_eq!(s.local_response(), None);
}

#[test]
fn private_network_access_is_allowed_only_when_asked_and_configured() {
    let h = load(
        r#"{"allow_origins": ["https://app.example.com"], "allow_private_network_access": true}"#,
    );
    let (s, _) = preflight(
        &h,
        "https://app.example.com",
        &[("access-control-request-private-network", "true")],
    );
    assert_eq!(
        local(&s, "access-control-allow-private-network").as_deref(),
        Some("true")
    );
    let (s, _) = preflight(&h, "https://app.example.com", &[]);
    assert_eq!(local(&s, "access-control-allow-private-network"), None);
    let off = load(POLICY);
    let (s, _) = preflight(
        &off,
        "https://app.example.com",
        &[("access-control-request-private-network", "true")],
    );
    assert_eq!(local(&s, "access-control-allow-private-network"), None);
}

#[test]
fn per_route_policies_follow_route_name() {
    let h = load(
        r#"{"allow_origins": ["https://app.example.com"], "allow_methods": "GET", "max_age": 60,
            "routes": {
              "admin": {"allow_origins": ["https://admin.example.com"], "max_age": 5},
              "webhooks": {"enabled": false}
            }}"#,
    );
    let on_route = |route: &str, origin: &str| {
        let mut s = h.http_stream().expect("stream");
        s.set_property("route_name", route);
        s.send_request_headers(
            &[
                (":method", "OPTIONS"),
                (":path", "/"),
                ("origin", origin),
                ("access-control-request-method", "GET"),
            ],
            true,
        )
        .expect("headers");
        s
    };
    let s = on_route("admin", "https://admin.example.com");
    assert_eq!(
        local(&s, "access-control-allow-origin").as_deref(),
        Some("https://admin.example.com")
    );
    assert_eq!(local(&s, "access-control-max-age").as_deref(), Some("5"));
    assert_eq!(
        local(&s, "access-control-allow-methods").as_deref(),
        Some("GET"),
        "inherited from the top level"
    );
    let s = on_route("admin", "https://app.example.com");
    assert_eq!(
        s.local_response(),
        None,
        "not allowed on this route: forwarded"
    );
    let s = on_route("catalog", "https://app.example.com");
    assert_eq!(
        local(&s, "access-control-max-age").as_deref(),
        Some("60"),
        "a route without its own policy uses the top level"
    );
    let mut s = on_route("webhooks", "https://app.example.com");
    assert_eq!(s.local_response(), None, "CORS is off for this route");
    respond(&mut s, &[]);
    assert_eq!(s.response_header("access-control-allow-origin"), None);
    assert_eq!(s.response_header("vary"), None, "nothing at all");
}

#[test]
fn configuration_errors_name_the_field_in_the_log() {
    for (config, expect) in [
        (
            r#"{"allow_origins": ["https://**.example.com"]}"#,
            "configuration field `allow_origins[0]`: \"https://**.example.com\": `**` is not a pattern",
        ),
        (
            r#"{"allow_methods": ["GET", "BAD METHOD"]}"#,
            "configuration field `allow_methods`: \"BAD METHOD\" is not a method or header name",
        ),
        (
            r#"{"routes": {"a": {"allow_origin": ["*"]}}}"#,
            "configuration field `routes.a.allow_origin`: unknown field `allow_origin`",
        ),
        (
            r#"{"max_age": "10m"}"#,
            "configuration field `max_age`: invalid type",
        ),
    ] {
        let err = Harness::builder(wasmesh_test_programs::filter("cors"))
            .name("cors")
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
