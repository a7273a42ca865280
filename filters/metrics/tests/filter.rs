//! The metrics filter as built for wasm32-wasip1, run on wasmesh's host through the SDK's
//! test harness: what each finished exchange adds to which metric, the histogram's buckets and
//! exact sum, the label choices and prefix, the cardinality bound (also against values another
//! replica admitted), and configuration errors.

use wasmesh_sdk_test::{Error, Harness, LogLevel, MetricType};

fn load(config: &str) -> Harness {
    Harness::builder(wasmesh_test_programs::filter("metrics"))
        .name("metrics")
        .plugin_config(config)
        .load()
        .expect("configuration accepted")
}

/// One finished exchange, as the host describes it in `on_log`.
struct Exchange<'a> {
    route: &'a str,
    method: &'a str,
    code: Option<i64>,
    cluster: &'a str,
    duration_us: i64,
    request_bytes: i64,
    response_bytes: i64,
}

impl Default for Exchange<'_> {
    fn default() -> Self {
        Exchange {
            route: "users",
            method: "GET",
            code: Some(200),
            cluster: "users-v1",
            duration_us: 1_500,
            request_bytes: 0,
            response_bytes: 0,
        }
    }
}

/// Runs one stream to its end (`on_log`, where a trap would fail the test) with `e`'s
/// attributes.
fn finish(h: &Harness, e: Exchange<'_>) {
    let mut s = h.http_stream().expect("stream");
    s.set_property("route_name", e.route);
    s.set_property("request.method", e.method);
    if let Some(code) = e.code {
        s.set_property("response.code", code);
    }
    s.set_property("cluster_name", e.cluster);
    s.set_property("request.duration", e.duration_us * 1_000);
    s.set_property("request.size", e.request_bytes);
    s.set_property("response.size", e.response_bytes);
    s.send_request_headers(&[(":method", e.method), (":path", "/")], true)
        .expect("request headers");
    if let Some(code) = e.code {
        s.send_response_headers(&[(":status", &code.to_string())], true)
            .expect("response headers");
    }
    s.finish().expect("on_log");
}

fn metric(h: &Harness, name: &str) -> Option<i64> {
    h.metric(name)
}

#[test]
fn counts_requests_per_route_and_code() {
    let h = load("");
    finish(&h, Exchange::default());
    finish(&h, Exchange::default());
    finish(
        &h,
        Exchange {
            code: Some(503),
            ..Exchange::default()
        },
    );
    finish(
        &h,
        Exchange {
            route: "orders",
            ..Exchange::default()
        },
    );
    assert_eq!(
        metric(&h, "route=.=users;.;code=.=200;.;requests_total"),
        Some(2)
    );
    assert_eq!(
        metric(&h, "route=.=users;.;code=.=503;.;requests_total"),
        Some(1)
    );
    assert_eq!(
        metric(&h, "route=.=orders;.;code=.=200;.;requests_total"),
        Some(1)
    );
}

#[test]
fn the_histogram_is_cumulative_and_its_sum_exact() {
    let h = load(r#"{"histogram": {"buckets_ms": [1, 5, 10, 25.5]}}"#);
    for us in [3_000, 12_000, 400, 25_500, 90_000] {
        finish(
            &h,
            Exchange {
                duration_us: us,
                ..Exchange::default()
            },
        );
    }
    let bucket = |le: &str| {
        metric(
            &h,
            &format!("route=.=users;.;code=.=200;.;le=.={le};.;request_duration_ms_bucket"),
        )
    };
    assert_eq!(bucket("1"), Some(1), "0.4 ms");
    assert_eq!(bucket("5"), Some(2), "and 3 ms");
    assert_eq!(bucket("10"), Some(2));
    assert_eq!(bucket("25.5"), Some(4), "a bound is inclusive");
    assert_eq!(bucket("+Inf"), Some(5));
    let series = "route=.=users;.;code=.=200;.;";
    assert_eq!(
        metric(&h, &format!("{series}request_duration_ms_count")),
        Some(5)
    );
    // 3 + 12 + 0.4 + 25.5 + 90 = 130.9 ms: whole milliseconds so far.
    assert_eq!(
        metric(&h, &format!("{series}request_duration_ms_sum")),
        Some(130)
    );
    // The 0.9 ms left over is not lost: 0.9 + 0.3 = 1.2 adds one more.
    finish(
        &h,
        Exchange {
            duration_us: 300,
            ..Exchange::default()
        },
    );
    assert_eq!(
        metric(&h, &format!("{series}request_duration_ms_sum")),
        Some(131)
    );
    assert_eq!(bucket("1"), Some(2));
}

#[test]
fn every_bucket_exists_before_it_is_hit() {
    let h = load(r#"{"histogram": {"buckets_ms": [1, 5]}}"#);
    finish(
        &h,
        Exchange {
            duration_us: 60_000,
            ..Exchange::default()
        },
    );
    let series = "route=.=users;.;code=.=200;.;";
    assert_eq!(
        metric(&h, &format!("{series}le=.=1;.;request_duration_ms_bucket")),
        Some(0)
    );
    assert_eq!(
        metric(&h, &format!("{series}le=.=5;.;request_duration_ms_bucket")),
        Some(0)
    );
    assert_eq!(
        metric(
            &h,
            &format!("{series}le=.=+Inf;.;request_duration_ms_bucket")
        ),
        Some(1)
    );
}

#[test]
fn sizes_add_up() {
    let h = load("");
    for (request_bytes, response_bytes) in [(100, 2_000), (0, 35)] {
        finish(
            &h,
            Exchange {
                request_bytes,
                response_bytes,
                ..Exchange::default()
            },
        );
    }
    let series = "route=.=users;.;code=.=200;.;";
    assert_eq!(
        metric(&h, &format!("{series}request_bytes_total")),
        Some(100)
    );
    assert_eq!(
        metric(&h, &format!("{series}response_bytes_total")),
        Some(2_035)
    );

    let h = load(r#"{"sizes": false}"#);
    finish(&h, Exchange::default());
    assert!(
        h.metrics().iter().all(|m| !m.name.contains("bytes_total")),
        "{:?}",
        h.metrics()
    );
}

#[test]
fn labels_and_prefix_are_configurable() {
    let h = load(
        r#"{"prefix": "edge_", "labels": ["cluster", "method", "code_class"],
            "histogram": {"mode": "none"}, "sizes": false}"#,
    );
    finish(&h, Exchange::default());
    finish(
        &h,
        Exchange {
            code: Some(204),
            ..Exchange::default()
        },
    );
    finish(
        &h,
        Exchange {
            method: "BREW",
            code: Some(503),
            ..Exchange::default()
        },
    );
    let names: Vec<(String, i64)> = h.metrics().into_iter().map(|m| (m.name, m.value)).collect();
    assert_eq!(
        names,
        [
            (
                "cluster=.=users-v1;.;method=.=GET;.;code_class=.=2xx;.;edge_requests_total"
                    .to_string(),
                2
            ),
            (
                "cluster=.=users-v1;.;method=.=other;.;code_class=.=5xx;.;edge_requests_total"
                    .to_string(),
                1
            ),
        ],
        "no histogram, no sizes, a method outside the standard ones reads `other`"
    );
}

#[test]
fn the_host_histogram_records_milliseconds() {
    let h = load(r#"{"histogram": {"mode": "host"}, "labels": ["route"]}"#);
    finish(
        &h,
        Exchange {
            duration_us: 42_700,
            ..Exchange::default()
        },
    );
    let histogram = h
        .metrics()
        .into_iter()
        .find(|m| m.name == "route=.=users;.;request_duration_ms")
        .expect("histogram defined");
    assert_eq!(histogram.kind, MetricType::Histogram);
    assert_eq!(histogram.value, 42, "the last value recorded, in whole ms");
    assert!(h.metrics().iter().all(|m| !m.name.contains("_bucket")));
}

#[test]
fn no_response_reads_code_zero() {
    let h = load(r#"{"labels": ["code", "code_class"], "histogram": {"mode": "none"}}"#);
    finish(
        &h,
        Exchange {
            code: None,
            ..Exchange::default()
        },
    );
    assert_eq!(
        metric(&h, "code=.=0;.;code_class=.=none;.;requests_total"),
        Some(1)
    );
}

#[test]
fn label_values_beyond_the_bound_read_other() {
    let h = load(
        r#"{"labels": ["route", "code"], "histogram": {"mode": "none"}, "sizes": false,
            "max_values": {"route": 2, "code": 1}}"#,
    );
    for route in ["a", "b", "c", "d", "a"] {
        finish(
            &h,
            Exchange {
                route,
                ..Exchange::default()
            },
        );
    }
    finish(
        &h,
        Exchange {
            route: "b",
            code: Some(404),
            ..Exchange::default()
        },
    );
    let names: Vec<(String, i64)> = h.metrics().into_iter().map(|m| (m.name, m.value)).collect();
    let get = |n: &str| names.iter().find(|(name, _)| name == n).map(|(_, v)| *v);
    assert_eq!(get("route=.=a;.;code=.=200;.;requests_total"), Some(2));
    assert_eq!(get("route=.=b;.;code=.=200;.;requests_total"), Some(1));
    assert_eq!(get("route=.=other;.;code=.=200;.;requests_total"), Some(2));
    assert_eq!(get("route=.=b;.;code=.=other;.;requests_total"), Some(1));
    assert_eq!(get("label=.=route;.;label_overflow_total"), Some(2));
    assert_eq!(get("label=.=code;.;label_overflow_total"), Some(1));
    assert!(
        names
            .iter()
            .all(|(n, _)| !n.contains("=.=c;") && !n.contains("=.=d;")),
        "{names:?}"
    );
    // What every replica shares: the admitted values.
    let admitted: Vec<String> = serde_json::from_slice(
        &h.shared_data("wasmesh.metrics/metrics/route")
            .expect("shared list"),
    )
    .expect("JSON list");
    assert_eq!(admitted, ["a", "b"]);
}

#[test]
fn the_bound_holds_across_replicas() {
    let h =
        load(r#"{"labels": ["route"], "histogram": {"mode": "none"}, "max_values": {"route": 2}}"#);
    // Another replica of the plugin admitted two routes already.
    h.set_shared_data("wasmesh.metrics/metrics/route", r#"["x","y"]"#)
        .expect("shared data");
    finish(&h, Exchange::default());
    finish(
        &h,
        Exchange {
            route: "y",
            ..Exchange::default()
        },
    );
    assert_eq!(metric(&h, "route=.=other;.;requests_total"), Some(1));
    assert_eq!(metric(&h, "route=.=y;.;requests_total"), Some(1));
    assert_eq!(metric(&h, "route=.=users;.;requests_total"), None);
}

#[test]
fn replicas_admit_values_and_count_together() {
    // Two VM replicas, as the proxy runs one per worker; streams alternate between them.
    let h = Harness::builder(wasmesh_test_programs::filter("metrics"))
        .name("metrics")
        .replicas(2)
        .plugin_config(
            r#"{"labels": ["route"], "histogram": {"mode": "none"}, "max_values": {"route": 2}}"#,
        )
        .load()
        .expect("configuration accepted");
    for route in ["a", "b", "c", "a", "b"] {
        finish(
            &h,
            Exchange {
                route,
                ..Exchange::default()
            },
        );
    }
    // Replica 0 saw a, c, b and replica 1 saw b, a: `c` found the bound full though its
    // replica had admitted only `a`, and both replicas count into the same series.
    assert_eq!(metric(&h, "route=.=a;.;requests_total"), Some(2));
    assert_eq!(metric(&h, "route=.=b;.;requests_total"), Some(2));
    assert_eq!(metric(&h, "route=.=other;.;requests_total"), Some(1));
    assert_eq!(metric(&h, "label=.=route;.;label_overflow_total"), Some(1));
    assert_eq!(metric(&h, "route=.=c;.;requests_total"), None);
}

#[test]
fn configuration_errors_name_the_field_in_the_log() {
    for (config, expect) in [
        (
            r#"{"labels": ["route", "host"]}"#,
            "configuration field `labels[1]`: unknown variant `host`",
        ),
        (
            r#"{"labels": ["code", "code"]}"#,
            "configuration field `labels[1]`: `code` is listed twice",
        ),
        (
            r#"{"prefix": "my-app"}"#,
            "configuration field `prefix`: may hold only letters",
        ),
        (
            r#"{"histogram": {"buckets_ms": [10, 5]}}"#,
            "configuration field `histogram.buckets_ms[1]`: bounds must be strictly increasing",
        ),
        (
            r#"{"histogram": {"mode": "exponential"}}"#,
            "configuration field `histogram.mode`: unknown variant `exponential`",
        ),
        (
            r#"{"max_values": {"code": 0}}"#,
            "configuration field `max_values.code`: must be at least 1",
        ),
        (
            r#"{"label": ["route"]}"#,
            "configuration field `label`: unknown field `label`",
        ),
        ("[", "configuration"),
    ] {
        let err = Harness::builder(wasmesh_test_programs::filter("metrics"))
            .name("metrics")
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
