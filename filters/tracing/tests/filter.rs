//! The tracing filter as built for wasm32-wasip1, run on wasmesh's host through the SDK's test
//! harness: trace and span ids through W3C and B3 headers (exactly: the caller's trace, a new
//! span, the caller's span as its parent), malformed contexts, sampling, the OTLP JSON sent
//! to the collector, batching by size and by tick, and a failing collector (spans dropped and
//! counted, memory bounded).

use serde_json::Value;
use wasmesh_sdk_test::{Callout, Error, Harness, LogLevel, Stream};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const QUEUE: &str = "wasmesh.tracing/tracing/spans";

fn load(config: &str) -> Harness {
    Harness::builder(wasmesh_test_programs::filter("tracing"))
        .name("tracing")
        .plugin_config(config)
        .upstreams(&["otel"])
        .load()
        .expect("configuration accepted")
}

/// Runs request headers through a new stream, with the exchange's attributes set for
/// `on_log`.
fn request(h: &Harness, headers: &[(&str, &str)]) -> Stream {
    let mut s = h.http_stream().expect("stream");
    s.set_property("request.method", "GET");
    s.set_property("request.url_path", "/users/7");
    s.set_property("request.host", "api.example.com");
    s.set_property("route_name", "users");
    s.set_property("source.address", "10.1.2.3:51234");
    s.set_property("request.time", 1_704_067_200_000_000_000i64);
    s.set_property("request.duration", 2_500_000i64);
    s.set_property("response.code", 200);
    let mut all = vec![
        (":method", "GET"),
        (":path", "/users/7?x=1"),
        (":authority", "api.example.com"),
    ];
    all.extend_from_slice(headers);
    s.send_request_headers(&all, true).expect("request headers");
    s
}

/// Ends `s` (its `on_log` queues the span) and lets the host deliver the queue's
/// notification: dropping a stream runs `on_log` but not the work it defers, which the
/// harness runs on its next call — here opening (and closing) a stream that does nothing.
fn finish(h: &Harness, s: Stream) {
    drop(s);
    drop(h.http_stream().expect("stream"));
}

/// The `traceparent` the upstream would see, split into (trace id, span id, flags).
fn upstream_traceparent(s: &Stream) -> (String, String, String) {
    let value = s.request_header("traceparent").expect("traceparent");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    (
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    )
}

fn is_hex_id(id: &str, len: usize) -> bool {
    id.len() == len
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && id.bytes().any(|b| b != b'0')
}

fn body(callout: &Callout) -> Value {
    serde_json::from_slice(&callout.body).expect("JSON body")
}

/// Every span in an export request.
fn spans(callout: &Callout) -> Vec<Value> {
    let body = body(callout);
    body["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .cloned()
        .expect("spans")
}

fn attribute(span: &Value, key: &str) -> Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == key))
        .map(|kv| kv["value"].clone())
        .unwrap_or(Value::Null)
}

const COLLECTOR: &str = r#""collector": {"cluster": "otel", "authority": "collector:4318",
    "headers": {"x-api-key": "k1"}}"#;

#[test]
fn continues_the_callers_trace_with_a_new_span() {
    let h = load(&format!(
        r#"{{{COLLECTOR}, "service_name": "edge", "resource_attributes": {{"deployment.environment": "test"}}}}"#
    ));
    let s = request(
        &h,
        &[
            ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("tracestate", "rojo=00f067aa0ba902b7"),
        ],
    );
    let (trace, span, flags) = upstream_traceparent(&s);
    assert_eq!(trace, TRACE, "the caller's trace goes on");
    assert!(is_hex_id(&span, 16), "{span}");
    assert_ne!(span, PARENT, "the upstream's parent is this proxy's span");
    assert_eq!(flags, "01");
    assert_eq!(
        s.request_header_values("tracestate"),
        ["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"],
        "tracestate goes on (joined into one list)"
    );
    finish(&h, s);
    assert!(
        h.callouts().is_empty(),
        "a partial batch waits for the tick"
    );
    h.tick().expect("tick");
    let callouts = h.callouts();
    assert_eq!(callouts.len(), 1);
    let export = &callouts[0];
    assert_eq!(export.upstream, "otel");
    assert_eq!(export.header(":method").as_deref(), Some("POST"));
    assert_eq!(export.header(":path").as_deref(), Some("/v1/traces"));
    assert_eq!(
        export.header(":authority").as_deref(),
        Some("collector:4318")
    );
    assert_eq!(
        export.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(export.header("x-api-key").as_deref(), Some("k1"));
    assert_eq!(export.timeout, std::time::Duration::from_secs(5));

    let body = body(export);
    let resource = &body["resourceSpans"][0]["resource"]["attributes"];
    assert_eq!(
        resource,
        &serde_json::json!([
            {"key": "service.name", "value": {"stringValue": "edge"}},
            {"key": "deployment.environment", "value": {"stringValue": "test"}}
        ])
    );
    let got = spans(export);
    assert_eq!(got.len(), 1);
    let span_json = &got[0];
    assert_eq!(span_json["traceId"], TRACE);
    assert_eq!(span_json["spanId"], span.as_str());
    assert_eq!(span_json["parentSpanId"], PARENT);
    assert_eq!(
        span_json["traceState"],
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    );
    assert_eq!(span_json["kind"], 2);
    assert_eq!(span_json["flags"], 0x301, "sampled, remote parent");
    assert_eq!(span_json["name"], "GET users");
    assert_eq!(span_json["startTimeUnixNano"], "1704067200000000000");
    assert_eq!(span_json["endTimeUnixNano"], "1704067200002500000");
    assert_eq!(span_json["status"], serde_json::json!({}));
    assert_eq!(attribute(span_json, "http.method")["stringValue"], "GET");
    assert_eq!(attribute(span_json, "http.route")["stringValue"], "users");
    assert_eq!(attribute(span_json, "http.status_code")["intValue"], "200");
    assert_eq!(attribute(span_json, "url.path")["stringValue"], "/users/7");
    assert_eq!(
        attribute(span_json, "server.address")["stringValue"],
        "api.example.com"
    );
    assert_eq!(
        attribute(span_json, "client.address")["stringValue"],
        "10.1.2.3"
    );
    assert_eq!(attribute(span_json, "client.port")["intValue"], "51234");

    h.respond(
        export.id,
        200,
        &[("content-type", "application/json")],
        b"{}",
    )
    .expect("answer");
    assert_eq!(h.metric("tracing_spans_exported_total"), Some(1));
    assert_eq!(
        h.metric("result=.=ok;.;tracing_export_requests_total"),
        Some(1)
    );
}

#[test]
fn a_request_without_context_starts_a_trace() {
    let h = load(&format!("{{{COLLECTOR}}}"));
    let mut s = request(&h, &[]);
    s.send_response_headers(&[(":status", "503")], true)
        .expect("response");
    s.set_property("response.code", 503);
    let (trace, span, flags) = upstream_traceparent(&s);
    assert!(is_hex_id(&trace, 32), "{trace}");
    assert!(is_hex_id(&span, 16), "{span}");
    assert_eq!(flags, "01", "sampling_ratio 1 by default");
    assert_eq!(s.request_header("tracestate"), None);
    finish(&h, s);
    h.tick().expect("tick");
    let span_json = spans(&h.callouts()[0]).remove(0);
    assert_eq!(span_json["traceId"], trace.as_str());
    assert_eq!(span_json["spanId"], span.as_str());
    assert_eq!(span_json.get("parentSpanId"), None, "a root span");
    assert_eq!(
        span_json["flags"], 0x101,
        "sampled, parent known not remote"
    );
    assert_eq!(
        span_json["status"],
        serde_json::json!({"code": 2, "message": "HTTP 503"})
    );

    // Two requests, two traces.
    let other = request(&h, &[]);
    assert_ne!(upstream_traceparent(&other).0, trace);
}

#[test]
fn malformed_or_doubled_traceparents_start_a_new_trace() {
    let h = load(&format!("{{{COLLECTOR}}}"));
    for headers in [
        vec![(
            "traceparent",
            format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
        )],
        vec![("traceparent", format!("00-{TRACE}-{}-01", "0".repeat(16)))],
        vec![("traceparent", format!("00-{TRACE}-{PARENT}"))],
        vec![("traceparent", "garbage".to_string())],
        vec![
            ("traceparent", format!("00-{TRACE}-{PARENT}-01")),
            ("traceparent", format!("00-{TRACE}-{PARENT}-01")),
        ],
    ] {
        let mut with_state: Vec<(&str, &str)> =
            headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        with_state.push(("tracestate", "congo=t61rcWkgMzE"));
        let s = request(&h, &with_state);
        let (trace, _, flags) = upstream_traceparent(&s);
        assert_ne!(trace, TRACE, "{headers:?}");
        assert!(is_hex_id(&trace, 32));
        assert_eq!(flags, "01");
        assert_eq!(
            s.request_header_values("traceparent").len(),
            1,
            "one traceparent upstream"
        );
        assert_eq!(
            s.request_header("tracestate"),
            None,
            "tracestate goes with the context it belonged to"
        );
        finish(&h, s);
    }
    h.tick().expect("tick");
    for span_json in spans(&h.callouts()[0]) {
        assert_eq!(span_json.get("parentSpanId"), None);
        assert_eq!(span_json.get("traceState"), None);
    }
}

#[test]
fn unsampled_requests_propagate_but_export_nothing() {
    let h = load(&format!("{{{COLLECTOR}}}"));
    let s = request(&h, &[("traceparent", &format!("00-{TRACE}-{PARENT}-00"))]);
    let (trace, span, flags) = upstream_traceparent(&s);
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "00"));
    assert_ne!(span, PARENT);
    finish(&h, s);
    h.tick().expect("tick");
    assert!(h.callouts().is_empty());

    // Ratio 0: new traces are not sampled, and say so upstream.
    let h = load(&format!(r#"{{{COLLECTOR}, "sampling_ratio": 0}}"#));
    let s = request(&h, &[]);
    assert_eq!(upstream_traceparent(&s).2, "00");
    finish(&h, s);
    // ... but a caller's decision stands.
    let s = request(&h, &[("traceparent", &format!("00-{TRACE}-{PARENT}-01"))]);
    finish(&h, s);
    h.tick().expect("tick");
    let got = spans(&h.callouts()[0]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["traceId"], TRACE);
}

#[test]
fn b3_single_header() {
    let h = load(&format!(r#"{{{COLLECTOR}, "propagators": ["b3"]}}"#));
    let s = request(
        &h,
        &[("b3", &format!("{TRACE}-{PARENT}-1-05e3ac9a4f6e3b90"))],
    );
    let b3 = s.request_header("b3").expect("b3");
    let parts: Vec<&str> = b3.split('-').collect();
    assert_eq!(parts.len(), 3, "{b3}");
    assert_eq!(parts[0], TRACE);
    assert!(is_hex_id(parts[1], 16) && parts[1] != PARENT);
    assert_eq!(parts[2], "1");
    assert_eq!(
        s.request_header("traceparent"),
        None,
        "only configured formats are written"
    );
    let span = parts[1].to_string();
    finish(&h, s);

    // A 64-bit trace id is padded to 128 bits; `d` (debug) samples.
    let s = request(&h, &[("b3", &format!("a3ce929d0e0e4736-{PARENT}-d"))]);
    let b3 = s.request_header("b3").expect("b3");
    assert!(b3.starts_with("0000000000000000a3ce929d0e0e4736-"), "{b3}");
    assert!(b3.ends_with("-1"), "{b3}");
    finish(&h, s);

    // A lone `0` denies sampling for a new trace.
    let s = request(&h, &[("b3", "0")]);
    let b3 = s.request_header("b3").expect("b3");
    assert!(b3.ends_with("-0") && !b3.starts_with(TRACE), "{b3}");
    finish(&h, s);

    h.tick().expect("tick");
    let got = spans(&h.callouts()[0]);
    assert_eq!(got.len(), 2, "the unsampled one is not exported");
    assert_eq!(got[0]["traceId"], TRACE);
    assert_eq!(got[0]["spanId"], span.as_str());
    assert_eq!(got[0]["parentSpanId"], PARENT);
    assert_eq!(got[1]["traceId"], "0000000000000000a3ce929d0e0e4736");
}

#[test]
fn b3_multi_headers_and_several_formats() {
    let h = load(&format!(
        r#"{{{COLLECTOR}, "propagators": ["tracecontext", "b3multi"]}}"#
    ));
    let s = request(
        &h,
        &[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", PARENT),
            ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
            ("x-b3-sampled", "1"),
            ("x-b3-flags", "1"),
        ],
    );
    let (trace, span, flags) = upstream_traceparent(&s);
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_eq!(s.request_header("x-b3-traceid").as_deref(), Some(TRACE));
    assert_eq!(
        s.request_header("x-b3-spanid").as_deref(),
        Some(span.as_str())
    );
    assert_eq!(s.request_header("x-b3-sampled").as_deref(), Some("1"));
    assert_eq!(s.request_header("x-b3-parentspanid"), None);
    assert_eq!(s.request_header("x-b3-flags"), None);
    finish(&h, s);

    // A valid traceparent comes first in the configured order.
    let other_trace = "0af7651916cd43dd8448eb211c80319c";
    let s = request(
        &h,
        &[
            ("traceparent", &format!("00-{other_trace}-{PARENT}-01")),
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", PARENT),
        ],
    );
    assert_eq!(upstream_traceparent(&s).0, other_trace);
    assert_eq!(
        s.request_header("x-b3-traceid").as_deref(),
        Some(other_trace)
    );
    finish(&h, s);

    // A malformed traceparent falls through to B3.
    let s = request(
        &h,
        &[
            ("traceparent", "00-nope"),
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", PARENT),
        ],
    );
    assert_eq!(upstream_traceparent(&s).0, TRACE);
    finish(&h, s);

    h.tick().expect("tick");
    let got = spans(&h.callouts()[0]);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0]["spanId"], span.as_str());
    assert_eq!(got[0]["parentSpanId"], PARENT);
}

#[test]
fn the_ratio_decides_deferred_b3_traces_by_trace_id() {
    let h = load(&format!(
        r#"{{{COLLECTOR}, "propagators": ["b3multi"], "sampling_ratio": 0.5}}"#
    ));
    // No `x-b3-sampled`: the caller deferred the decision. The low 64 bits decide.
    for (trace, sampled) in [
        ("00000000000000000000000000000001", "1"),
        ("0000000000000000ffffffffffffffff", "0"),
        ("ffffffffffffffff7000000000000000", "1"),
        ("ffffffffffffffff8000000000000001", "0"),
    ] {
        let s = request(&h, &[("x-b3-traceid", trace), ("x-b3-spanid", PARENT)]);
        assert_eq!(
            s.request_header("x-b3-sampled").as_deref(),
            Some(sampled),
            "{trace}"
        );
    }
}

#[test]
fn batches_by_size_with_requests_in_flight_bounded() {
    let h = load(&format!(
        r#"{{{COLLECTOR}, "batch": {{"max_spans": 2, "max_queue": 10, "max_in_flight": 2}}}}"#
    ));
    let mut span_ids = Vec::new();
    for _ in 0..5 {
        let s = request(&h, &[]);
        span_ids.push(upstream_traceparent(&s).1);
        finish(&h, s);
    }
    // Two full batches went at once; the fifth span waits.
    let callouts = h.callouts();
    assert_eq!(callouts.len(), 2);
    let ids = |c: &Callout| -> Vec<String> {
        spans(c)
            .iter()
            .map(|s| s["spanId"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(ids(&callouts[0]), span_ids[0..2]);
    assert_eq!(ids(&callouts[1]), span_ids[2..4]);
    // Both request slots are taken: the tick sends nothing more.
    h.tick().expect("tick");
    assert_eq!(h.callouts().len(), 2);
    h.respond(callouts[0].id, 200, &[], b"").expect("answer");
    assert_eq!(h.callouts().len(), 2, "one span is not a full batch");
    h.tick().expect("tick");
    let callouts = h.callouts();
    assert_eq!(callouts.len(), 3);
    assert_eq!(ids(&callouts[2]), span_ids[4..5]);
    assert_eq!(h.metric("tracing_spans_exported_total"), Some(2));
}

#[test]
fn batches_by_tick() {
    let h = load(&format!(
        r#"{{{COLLECTOR}, "batch": {{"max_spans": 100, "flush_interval_ms": 250}}}}"#
    ));
    assert_eq!(h.tick_period(), Some(std::time::Duration::from_millis(250)));
    for _ in 0..3 {
        let s = request(&h, &[]);
        finish(&h, s);
    }
    assert!(h.callouts().is_empty());
    h.tick().expect("tick");
    assert_eq!(h.callouts().len(), 1);
    assert_eq!(spans(&h.callouts()[0]).len(), 3);
    h.tick().expect("tick");
    assert_eq!(h.callouts().len(), 1, "nothing left to send");
}

#[test]
fn a_failing_collector_costs_dropped_spans_not_memory() {
    let h = load(&format!(
        r#"{{{COLLECTOR}, "batch": {{"max_spans": 2, "max_queue": 4, "max_in_flight": 1}}}}"#
    ));
    for _ in 0..10 {
        let s = request(&h, &[]);
        finish(&h, s);
    }
    // One batch in flight, four spans buffered, the other four dropped.
    assert_eq!(h.callouts().len(), 1);
    assert_eq!(
        h.metric("reason=.=queue_full;.;tracing_spans_dropped_total"),
        Some(4)
    );
    // The collector fails: the batch is dropped, not retried, and the buffer moves on.
    h.respond(h.callouts()[0].id, 503, &[], b"unavailable")
        .expect("answer");
    assert_eq!(
        h.metric("reason=.=export_failed;.;tracing_spans_dropped_total"),
        Some(2)
    );
    assert_eq!(
        h.metric("result=.=failed;.;tracing_export_requests_total"),
        Some(1)
    );
    let callouts = h.callouts();
    assert_eq!(callouts.len(), 2, "the next full batch went");
    // No answer at all (a timeout, a reset) is a failure too.
    h.fail_callout(callouts[1].id).expect("fail");
    assert_eq!(
        h.metric("reason=.=export_failed;.;tracing_spans_dropped_total"),
        Some(4)
    );
    let callouts = h.callouts();
    assert_eq!(callouts.len(), 3);
    assert_eq!(spans(&callouts[2]).len(), 2);
    h.respond(callouts[2].id, 200, &[], b"{}").expect("answer");
    h.tick().expect("tick");
    assert_eq!(h.callouts().len(), 3, "everything was sent or dropped");
    assert_eq!(h.metric("tracing_spans_exported_total"), Some(2));
    assert_eq!(h.pending_callouts().len(), 0);
}

#[test]
fn partial_success_counts_rejected_spans() {
    let h = load(&format!(r#"{{{COLLECTOR}, "batch": {{"max_spans": 3}}}}"#));
    for _ in 0..3 {
        let s = request(&h, &[]);
        finish(&h, s);
    }
    let id = h.callouts()[0].id;
    h.respond(
        id,
        200,
        &[("content-type", "application/json")],
        br#"{"partialSuccess": {"rejectedSpans": "1", "errorMessage": "too old"}}"#,
    )
    .expect("answer");
    assert_eq!(h.metric("tracing_spans_exported_total"), Some(2));
    assert_eq!(
        h.metric("reason=.=rejected;.;tracing_spans_dropped_total"),
        Some(1)
    );
}

#[test]
fn an_unknown_collector_cluster_drops_and_counts() {
    let h = load(r#"{"collector": {"cluster": "nowhere"}}"#);
    let s = request(&h, &[]);
    finish(&h, s);
    h.tick().expect("tick");
    assert!(h.callouts().is_empty());
    assert_eq!(
        h.metric("reason=.=export_failed;.;tracing_spans_dropped_total"),
        Some(1)
    );
}

#[test]
fn what_is_not_a_span_on_the_queue_is_dropped() {
    let h = load(&format!("{{{COLLECTOR}}}"));
    h.enqueue(QUEUE, "not a span").expect("enqueue");
    h.enqueue(QUEUE, r#"{"traceId": "x"}"#).expect("enqueue");
    h.tick().expect("tick");
    assert!(h.callouts().is_empty());
    assert_eq!(
        h.metric("reason=.=invalid;.;tracing_spans_dropped_total"),
        Some(2)
    );
}

#[test]
fn without_host_times_the_filter_clock_is_used() {
    let h = load(&format!("{{{COLLECTOR}}}"));
    let start = h.now();
    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&[(":method", "GET"), (":path", "/")], true)
        .expect("headers");
    h.advance(std::time::Duration::from_millis(40));
    finish(&h, s);
    h.tick().expect("tick");
    let span_json = spans(&h.callouts()[0]).remove(0);
    let nanos = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_nanos()
            .to_string()
    };
    assert_eq!(span_json["startTimeUnixNano"], nanos(start).as_str());
    assert_eq!(span_json["endTimeUnixNano"], nanos(h.now()).as_str());
    assert_eq!(span_json["name"], "GET", "no route: the method alone");
    assert_eq!(
        span_json["status"],
        serde_json::json!({"code": 2, "message": "no response"})
    );
}

#[test]
fn configuration_errors_name_the_field_in_the_log() {
    for (config, expect) in [
        ("{}", "configuration: missing field `collector`"),
        (
            r#"{"collector": {"cluster": "otel"}, "propagators": ["jaeger"]}"#,
            "configuration field `propagators[0]`: unknown variant `jaeger`",
        ),
        (
            r#"{"collector": {"cluster": "otel"}, "sampling_ratio": 2}"#,
            "configuration field `sampling_ratio`: must be between 0 and 1",
        ),
        (
            r#"{"collector": {"cluster": "otel", "path": "v1/traces"}}"#,
            "configuration field `collector.path`: must start with /",
        ),
        (
            r#"{"collector": {"cluster": "otel"}, "batch": {"max_spans": 0}}"#,
            "configuration field `batch.max_spans`: must be at least 1",
        ),
        (
            r#"{"collector": {"cluster": "otel"}, "span_name": "path"}"#,
            "configuration field `span_name`: unknown variant `path`",
        ),
        (
            r#"{"collector": {"cluster": "otel", "headers": {"x-key": "a\r\nb"}}}"#,
            "configuration field `collector.headers.x-key`: a value may not hold CR, LF or NUL",
        ),
    ] {
        let err = Harness::builder(wasmesh_test_programs::filter("tracing"))
            .name("tracing")
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
