//! The access-log filter as built for wasm32-wasip1, run on wasmesh's host through the SDK's
//! test harness: the JSON line from the host's attributes and from what the filter saw, custom
//! fields, and delivery to a collector — batching, retries, the bounded buffer — with ticks
//! and callouts under the test's control.

use std::time::Duration;

use serde_json::{Value, json};
use wasmesh_sdk_test::{Error, Harness, LogLevel};

fn load(config: &str) -> Harness {
    Harness::builder(wasmesh_test_programs::filter("access-log"))
        .name("access")
        .plugin_config(config)
        .load()
        .expect("configuration accepted")
}

/// Runs one request (headers both ways) and ends it, so its line is written.
fn request(h: &Harness, path: &str, extra: &[(&str, &str)], status: &str) {
    let mut s = h.http_stream().expect("stream");
    let mut headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", "api.test"),
        ("user-agent", "curl/8"),
        ("x-forwarded-for", "198.51.100.7"),
        ("x-request-id", "req-1"),
    ];
    headers.extend_from_slice(extra);
    s.send_request_headers(&headers, true).expect("request");
    s.send_response_headers(
        &[(":status", status), ("content-type", "text/plain")],
        false,
    )
    .expect("response");
    drop(s);
}

/// The JSON lines the filter logged, parsed.
fn lines(h: &Harness) -> Vec<Value> {
    h.logs()
        .into_iter()
        .filter(|l| l.level == LogLevel::Info)
        .map(|l| serde_json::from_str(&l.message).expect("a JSON line"))
        .collect()
}

const NANOS: i64 = 1_000_000_000;

#[test]
fn a_line_per_request_from_the_hosts_attributes() {
    let h = load("");
    let start = 1_704_067_200 * NANOS + 123_000_000;
    h.set_property("request.time", start);
    h.set_property("request.duration", 42 * 1_000_000i64);
    h.set_property("request.protocol", "HTTP/2");
    h.set_property("response.code", 503);
    h.set_property("response.flags", "UF");
    h.set_property("request.size", 12);
    h.set_property("response.size", 345);
    h.set_property("upstream.address", "10.0.0.9:8080");
    h.set_property("route_name", "users");
    h.set_property("cluster_name", "users-v1");
    h.set_property("source.address", "198.51.100.7:50000");
    request(&h, "/users?id=7", &[], "200");
    let got = lines(&h);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0],
        json!({
            "start_time": "2024-01-01T00:00:00.123Z",
            "method": "GET",
            "path": "/users?id=7",
            "protocol": "HTTP/2",
            "response_code": 503,
            "response_flags": "UF",
            "bytes_received": 12,
            "bytes_sent": 345,
            "duration": 42,
            "upstream_host": "10.0.0.9:8080",
            "x_forwarded_for": "198.51.100.7",
            "user_agent": "curl/8",
            "request_id": "req-1",
            "authority": "api.test",
            "route_name": "users",
            "upstream_cluster": "users-v1",
            "downstream_remote_address": "198.51.100.7:50000",
        })
    );
    // The keys come in the documented order.
    let message = &h.logs()[0].message;
    assert!(message.starts_with(r#"{"start_time":"#), "{message}");
    assert!(message.ends_with(r#""downstream_remote_address":"198.51.100.7:50000"}"#));
    assert_eq!(h.metric("access_log_lines_total"), Some(1));
}

#[test]
fn without_attributes_the_line_uses_what_the_filter_saw() {
    let h = load(
        r#"{"fields": ["start_time", "response_code", "duration", "bytes_sent", "protocol"]}"#,
    );
    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&[(":method", "GET"), (":path", "/")], true)
        .expect("request");
    h.advance(Duration::from_millis(1500));
    s.send_response_headers(&[(":status", "404")], true)
        .expect("response");
    drop(s);
    assert_eq!(
        lines(&h),
        [
            json!({"start_time": "2024-01-01T00:00:00.000Z", "response_code": 404,
                "duration": 1500, "bytes_sent": null, "protocol": null})
        ]
    );
}

#[test]
fn custom_fields_read_headers_and_properties() {
    let h = load(
        r#"{"fields": ["method"],
            "custom_fields": {"user": "%REQ(X-User)%", "type": "%RESP(content-type)%",
                              "where": "%PROPERTY(cluster_name)%@%PROPERTY(source.port)%",
                              "missing": "%REQ(x-none)%", "literal": "v1"}}"#,
    );
    h.set_property("cluster_name", "users");
    h.set_property("source.port", 50000);
    request(&h, "/", &[("x-user", "alice")], "200");
    assert_eq!(
        lines(&h),
        [
            json!({"method": "GET", "literal": "v1", "missing": null, "type": "text/plain",
                "user": "alice", "where": "users@50000"})
        ]
    );
}

fn collector(extra: &str, log: bool) -> Harness {
    load(&format!(
        r#"{{"fields": ["method", "path", "response_code"], "log": {log},
             "collector": {{"cluster": "logs", "path": "/ingest", "authority": "collector.test",
                            "flush_interval": "1s", "timeout": "2s"{extra}}}}}"#
    ))
}

/// The NDJSON lines of callout `index`'s body, parsed.
fn batch(h: &Harness, index: usize) -> Vec<Value> {
    let callout = &h.callouts()[index];
    let body = String::from_utf8(callout.body.clone()).expect("UTF-8");
    assert!(body.ends_with('\n'), "NDJSON lines end with a newline");
    body.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn paths(values: &[Value]) -> Vec<&str> {
    values.iter().filter_map(|v| v["path"].as_str()).collect()
}

#[test]
fn lines_are_batched_to_the_collector() {
    let h = collector(r#", "batch_size": 3"#, false);
    assert_eq!(h.tick_period(), Some(Duration::from_secs(1)));
    request(&h, "/a", &[], "200");
    request(&h, "/b", &[], "201");
    assert!(
        h.callouts().is_empty(),
        "a partial batch waits for the tick"
    );
    assert!(lines(&h).is_empty(), "log: false");
    h.tick().expect("tick");
    let first = &h.callouts()[0];
    assert_eq!(first.upstream, "logs");
    assert_eq!(first.header(":method").as_deref(), Some("POST"));
    assert_eq!(first.header(":path").as_deref(), Some("/ingest"));
    assert_eq!(
        first.header(":authority").as_deref(),
        Some("collector.test")
    );
    assert_eq!(
        first.header("content-type").as_deref(),
        Some("application/x-ndjson")
    );
    assert_eq!(first.timeout, Duration::from_secs(2));
    assert_eq!(
        batch(&h, 0),
        [
            json!({"method": "GET", "path": "/a", "response_code": 200}),
            json!({"method": "GET", "path": "/b", "response_code": 201}),
        ]
    );
    h.respond(first.id, 204, &[], b"").expect("respond");
    assert_eq!(h.metric("access_log_sent_lines_total"), Some(2));
    assert_eq!(h.metric("result=.=ok;.;access_log_batches_total"), Some(1));

    // A full batch goes at once, lines from other replicas (on the same queue) included.
    request(&h, "/c", &[], "200");
    request(&h, "/d", &[], "200");
    h.enqueue(
        "access-log:access",
        r#"{"method":"PUT","path":"/other-replica","response_code":200}"#,
    )
    .expect("enqueue");
    assert_eq!(h.callouts().len(), 2, "sent without waiting for a tick");
    assert_eq!(paths(&batch(&h, 1)), ["/c", "/d", "/other-replica"]);
    assert_eq!(h.metric("access_log_lines_total"), Some(4));
}

#[test]
fn failed_batches_are_sent_again_and_a_full_buffer_drops_lines() {
    let h = collector(r#", "batch_size": 2, "max_buffered": 4"#, true);
    request(&h, "/1", &[], "200");
    h.tick().expect("tick");
    let first = h.pending_callouts();
    assert_eq!(first.len(), 1);
    assert_eq!(paths(&batch(&h, 0)), ["/1"]);

    // Six more while the first batch is under way: four fit, two are dropped.
    for i in 2..8 {
        request(&h, &format!("/{i}"), &[], "200");
    }
    h.tick().expect("tick");
    assert_eq!(h.callouts().len(), 1, "one batch under way at a time");
    assert_eq!(h.metric("access_log_dropped_total"), Some(2));
    assert_eq!(lines(&h).len(), 7, "every line is still logged");

    // The collector refuses the first batch: there is no room to put its line back.
    h.respond(first[0].id, 503, &[], b"busy").expect("respond");
    assert_eq!(
        h.metric("result=.=failed;.;access_log_batches_total"),
        Some(1)
    );
    assert_eq!(h.metric("access_log_dropped_total"), Some(3));
    assert!(h.logs().iter().any(|l| l.level == LogLevel::Warn
        && l.message
            == "the collector refused a batch (status 503); 4 lines wait to be sent again"));
    let second = h.pending_callouts();
    assert_eq!(second.len(), 1, "the next full batch follows at once");
    assert_eq!(paths(&batch(&h, 1)), ["/2", "/3"]);

    // This one is never answered: given up a second after its timeout and sent again.
    h.advance(Duration::from_secs(2));
    h.tick().expect("tick");
    assert_eq!(h.callouts().len(), 2, "still waiting");
    h.advance(Duration::from_secs(1));
    h.tick().expect("tick");
    assert_eq!(
        h.metric("result=.=failed;.;access_log_batches_total"),
        Some(2)
    );
    assert_eq!(h.callouts().len(), 3);
    assert_eq!(paths(&batch(&h, 2)), ["/2", "/3"], "the same lines again");
    h.respond(second[0].id, 200, &[], b"")
        .expect("a late answer");
    assert_eq!(
        h.metric("access_log_sent_lines_total"),
        None,
        "a late answer is not taken"
    );
    let third = h.pending_callouts();
    h.respond(third[0].id, 200, &[], b"").expect("respond");
    assert_eq!(h.metric("access_log_sent_lines_total"), Some(2));
    assert_eq!(paths(&batch(&h, 3)), ["/4", "/5"], "and the rest follows");
}

#[test]
fn an_unknown_collector_cluster_keeps_lines_waiting() {
    let h = Harness::builder(wasmesh_test_programs::filter("access-log"))
        .name("access")
        .upstreams(&["other"])
        .plugin_config(r#"{"log": false, "collector": {"cluster": "logs", "path": "/ingest"}}"#)
        .load()
        .expect("loads");
    request(&h, "/", &[], "200");
    h.tick().expect("tick");
    assert!(h.callouts().is_empty());
    assert_eq!(
        h.metric("result=.=failed;.;access_log_batches_total"),
        Some(1)
    );
    assert_eq!(h.metric("access_log_dropped_total"), None, "the line waits");
    assert!(h.logs().iter().any(|l| {
        l.level == LogLevel::Warn
            && l.message
                .starts_with("cannot send to collector cluster logs")
            && l.message.ends_with("1 lines wait")
    }));
}

#[test]
fn configuration_errors_name_the_field_in_the_log() {
    for (config, expect) in [
        (
            r#"{"fields": ["method", "status"]}"#,
            "configuration field `fields[1]`: unknown variant `status`",
        ),
        (
            r#"{"custom_fields": {"user": "%HEADER(x)%"}}"#,
            "configuration field `custom_fields.user`: unknown variable %HEADER(x)%",
        ),
        (
            r#"{"collector": {"cluster": "logs", "path": "/", "batch_size": 0}}"#,
            "configuration field `collector.batch_size`: must be at least 1",
        ),
        (
            r#"{"log": false}"#,
            "configuration field `log`: with log false and no collector",
        ),
    ] {
        let err = Harness::builder(wasmesh_test_programs::filter("access-log"))
            .name("access")
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
