//! The retry-hints filter as built for wasm32-wasip1, run on wasmesh's host through the SDK's
//! test harness: trusted sources' headers become the router's filter state (exact keys and
//! values), untrusted ones change nothing, values are checked and capped, the headers are
//! removed before forwarding (or kept if configured), and configuration errors.

use wasmesh_sdk_test::{Error, Harness, LogLevel, Stream};

const ALL_HEADERS: [&str; 5] = [
    "x-envoy-retry-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-retriable-status-codes",
    "x-envoy-upstream-rq-timeout-ms",
];

const KEYS: [&str; 5] = [
    "wasmesh.retry_on",
    "wasmesh.num_retries",
    "wasmesh.per_try_timeout_ms",
    "wasmesh.retriable_status_codes",
    "wasmesh.timeout_ms",
];

fn load(config: &str) -> Harness {
    Harness::builder(wasmesh_test_programs::filter("retry-hints"))
        .name("retry-hints")
        .plugin_config(config)
        .load()
        .expect("configuration accepted")
}

/// A request from `source` (`ip:port`, or none) with `headers`.
fn request(h: &Harness, source: Option<&str>, headers: &[(&str, &str)]) -> Stream {
    let mut s = h.http_stream().expect("stream");
    if let Some(source) = source {
        s.set_property("source.address", source);
    }
    let mut all = vec![(":method", "GET"), (":path", "/"), (":authority", "a")];
    all.extend_from_slice(headers);
    s.send_request_headers(&all, true).expect("request headers");
    s
}

fn state(s: &Stream, key: &str) -> Option<String> {
    s.filter_state(key)
        .map(|v| String::from_utf8(v).expect("UTF-8 filter state"))
}

const TRUSTED: &str = r#"{"trusted_cidrs": ["10.0.0.0/8", "2001:db8::/32"]}"#;

#[test]
fn a_trusted_callers_headers_become_router_hints() {
    let h = load(TRUSTED);
    let s = request(
        &h,
        Some("10.1.2.3:40000"),
        &[
            (
                "x-envoy-retry-on",
                "5xx,connect-failure,retriable-status-codes",
            ),
            ("x-envoy-max-retries", "2"),
            ("x-envoy-upstream-rq-per-try-timeout-ms", "300"),
            ("x-envoy-retriable-status-codes", "409"),
            ("x-envoy-upstream-rq-timeout-ms", "2500"),
            ("x-other", "kept"),
        ],
    );
    assert_eq!(
        state(&s, "wasmesh.retry_on").as_deref(),
        Some("5xx,connect-failure,retriable-status-codes")
    );
    assert_eq!(state(&s, "wasmesh.num_retries").as_deref(), Some("2"));
    assert_eq!(
        state(&s, "wasmesh.per_try_timeout_ms").as_deref(),
        Some("300")
    );
    assert_eq!(
        state(&s, "wasmesh.retriable_status_codes").as_deref(),
        Some("409")
    );
    assert_eq!(state(&s, "wasmesh.timeout_ms").as_deref(), Some("2500"));
    for header in ALL_HEADERS {
        assert_eq!(s.request_header(header), None, "{header} removed");
    }
    assert_eq!(s.request_header("x-other").as_deref(), Some("kept"));
    assert_eq!(h.metric("retry_hints_applied_total"), Some(1));

    // IPv6 peers, and IPv4 peers seen as IPv4-mapped IPv6.
    let s = request(
        &h,
        Some("[2001:db8::7]:40000"),
        &[("x-envoy-max-retries", "1")],
    );
    assert_eq!(state(&s, "wasmesh.num_retries").as_deref(), Some("1"));
    let s = request(
        &h,
        Some("[::ffff:10.9.9.9]:40000"),
        &[("x-envoy-max-retries", "1")],
    );
    assert_eq!(state(&s, "wasmesh.num_retries").as_deref(), Some("1"));
}

#[test]
fn an_untrusted_caller_changes_nothing() {
    let h = load(TRUSTED);
    for source in [Some("192.0.2.1:40000"), Some("[2001:db9::1]:1"), None] {
        let s = request(
            &h,
            source,
            &[
                ("x-envoy-retry-on", "5xx"),
                ("x-envoy-max-retries", "10"),
                ("x-envoy-upstream-rq-timeout-ms", "0"),
            ],
        );
        for key in KEYS {
            assert_eq!(state(&s, key), None, "{source:?}: {key}");
        }
        for header in ALL_HEADERS {
            assert_eq!(
                s.request_header(header),
                None,
                "{source:?}: {header} removed"
            );
        }
    }
    assert_eq!(
        h.metric("reason=.=untrusted;.;retry_hints_ignored_total"),
        Some(3)
    );
    assert_eq!(h.metric("retry_hints_applied_total"), None);

    // No configuration trusts nobody.
    let h = load("");
    let s = request(&h, Some("127.0.0.1:1"), &[("x-envoy-retry-on", "5xx")]);
    assert_eq!(state(&s, "wasmesh.retry_on"), None);
    assert_eq!(s.request_header("x-envoy-retry-on"), None);
}

#[test]
fn values_are_checked_and_capped() {
    let h = load(
        r#"{"trusted_cidrs": ["10.0.0.0/8"], "max_retries_cap": 2, "max_timeout_ms": 5000,
            "max_per_try_timeout_ms": 1000, "allowed_retry_on": ["5xx", "reset"]}"#,
    );
    let s = request(
        &h,
        Some("10.0.0.1:1"),
        &[
            (
                "x-envoy-retry-on",
                "retriable-4xx, gateway-error,reset ,5xx",
            ),
            ("x-envoy-max-retries", "50"),
            ("x-envoy-upstream-rq-per-try-timeout-ms", "60000"),
            ("x-envoy-upstream-rq-timeout-ms", "0"),
        ],
    );
    assert_eq!(
        state(&s, "wasmesh.retry_on").as_deref(),
        Some("reset,5xx"),
        "unknown and disallowed values are left out"
    );
    assert_eq!(state(&s, "wasmesh.num_retries").as_deref(), Some("2"));
    assert_eq!(
        state(&s, "wasmesh.per_try_timeout_ms").as_deref(),
        Some("1000")
    );
    assert_eq!(
        state(&s, "wasmesh.timeout_ms").as_deref(),
        Some("5000"),
        "0 (Envoy: no timeout) is the longest allowed"
    );

    let s = request(
        &h,
        Some("10.0.0.1:1"),
        &[
            ("x-envoy-retry-on", "retriable-4xx,refused-stream"),
            ("x-envoy-max-retries", "two"),
            ("x-envoy-upstream-rq-per-try-timeout-ms", "0"),
            ("x-envoy-retriable-status-codes", "409,abc"),
            ("x-envoy-upstream-rq-timeout-ms", "-5"),
        ],
    );
    for key in KEYS {
        assert_eq!(state(&s, key), None, "{key}: nothing usable");
    }
    for header in ALL_HEADERS {
        assert_eq!(s.request_header(header), None, "{header} removed");
    }
    assert_eq!(
        h.metric("reason=.=invalid;.;retry_hints_ignored_total"),
        Some(1)
    );
}

#[test]
fn only_honoured_headers_are_read() {
    let h = load(r#"{"trusted_cidrs": ["10.0.0.0/8"], "honor": ["retry_on", "timeout"]}"#);
    let s = request(
        &h,
        Some("10.0.0.1:1"),
        &[
            ("x-envoy-retry-on", "gateway-error"),
            ("x-envoy-max-retries", "3"),
            ("x-envoy-upstream-rq-timeout-ms", "700"),
        ],
    );
    assert_eq!(
        state(&s, "wasmesh.retry_on").as_deref(),
        Some("gateway-error")
    );
    assert_eq!(state(&s, "wasmesh.timeout_ms").as_deref(), Some("700"));
    assert_eq!(state(&s, "wasmesh.num_retries"), None);
    assert_eq!(s.request_header("x-envoy-max-retries"), None);
}

#[test]
fn trusted_headers_may_be_kept_untrusted_never() {
    let h = load(r#"{"trusted_cidrs": ["10.0.0.0/8"], "keep_headers": true}"#);
    let s = request(&h, Some("10.0.0.1:1"), &[("x-envoy-retry-on", "5xx")]);
    assert_eq!(state(&s, "wasmesh.retry_on").as_deref(), Some("5xx"));
    assert_eq!(s.request_header("x-envoy-retry-on").as_deref(), Some("5xx"));
    let s = request(&h, Some("192.0.2.1:1"), &[("x-envoy-retry-on", "5xx")]);
    assert_eq!(s.request_header("x-envoy-retry-on"), None);
}

#[test]
fn requests_without_the_headers_are_left_alone() {
    let h = load(TRUSTED);
    let s = request(&h, Some("10.0.0.1:1"), &[("x-envoy-other", "1")]);
    for key in KEYS {
        assert_eq!(state(&s, key), None);
    }
    assert_eq!(s.request_header("x-envoy-other").as_deref(), Some("1"));
    assert!(h.metrics().is_empty(), "{:?}", h.metrics());
}

#[test]
fn configuration_errors_name_the_field_in_the_log() {
    for (config, expect) in [
        (
            r#"{"trusted_cidrs": ["10.0.0.0/8", "internal"]}"#,
            "configuration field `trusted_cidrs[1]`: `internal` is not an address or CIDR",
        ),
        (
            r#"{"honor": ["retries"]}"#,
            "configuration field `honor[0]`: unknown variant `retries`",
        ),
        (
            r#"{"allowed_retry_on": ["refused-stream"]}"#,
            "configuration field `allowed_retry_on[0]`: unknown variant `refused-stream`",
        ),
        (
            r#"{"max_retries_cap": 20}"#,
            "configuration field `max_retries_cap`: must be 1 to 10",
        ),
        (
            r#"{"max_per_try_timeout_ms": 0}"#,
            "configuration field `max_per_try_timeout_ms`: must be 1 to 3600000",
        ),
        (
            r#"{"keep": true}"#,
            "configuration field `keep`: unknown field `keep`",
        ),
    ] {
        let err = Harness::builder(wasmesh_test_programs::filter("retry-hints"))
            .name("retry-hints")
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
