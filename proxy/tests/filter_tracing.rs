//! The stock `tracing` filter in the real proxy: a request carrying a W3C `traceparent` reaches
//! the upstream with the same trace id and the proxy's new span as its parent, and a test
//! OTLP/HTTP collector (an upstream recording what is POSTed to it) receives that span as
//! OTLP JSON, child of the caller's span; an unsampled request is propagated, not exported.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use support::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const UNSAMPLED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn proxy_config(app: SocketAddr, collector: SocketAddr) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "127.0.0.1:0"
    route_config: main
    filter_chain: observe
routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: users
            match: {{ prefix: "/users" }}
            cluster: app
clusters:
  - name: app
    endpoints: ["{app}"]
  - name: otel
    endpoints: ["{collector}"]
filter_chains:
  - name: observe
    plugins:
      - name: tracing
        source: "file://{wasm}"
        config:
          collector: {{ cluster: otel, authority: "collector:4318" }}
          service_name: edge
          batch: {{ max_spans: 10, flush_interval_ms: 100 }}
admin:
  address: "127.0.0.1:0"
"#,
        wasm = wasmesh_test_programs::filter("tracing"),
    )
}

/// Every span in every export request the collector received.
fn received_spans(collector: &Upstream) -> Vec<(Value, Value)> {
    let seen = collector.seen.lock().expect("seen").clone();
    let mut spans = Vec::new();
    for request in seen {
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            continue;
        };
        for resource_spans in body["resourceSpans"].as_array().into_iter().flatten() {
            let resource = resource_spans["resource"].clone();
            for scope_spans in resource_spans["scopeSpans"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for span in scope_spans["spans"].as_array().into_iter().flatten() {
                    spans.push((resource.clone(), span.clone()));
                }
            }
        }
    }
    spans
}

fn attribute(span: &Value, key: &str) -> Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == key))
        .map(|kv| kv["value"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_collector_gets_the_span_and_the_upstream_its_parent() {
    let app = Upstream::named("app").await;
    let collector = Upstream::with(|_| async {
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("reply")
    })
    .await;
    // One worker: the unsampled request's span, were it wrongly exported, would come first.
    let proxy = Proxy::start_with_args(
        &proxy_config(app.addr, collector.addr),
        &["--concurrency", "1"],
    );
    let addr = proxy.addr("main");

    let unsampled = request(
        "GET",
        "/users/1",
        &[("traceparent", &format!("00-{UNSAMPLED_TRACE}-{PARENT}-00"))],
    );
    assert_eq!(send(addr, unsampled, false).await.status, StatusCode::OK);
    let seen = app.last_seen();
    let traceparent = seen
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("traceparent upstream");
    assert!(
        traceparent.starts_with(&format!("00-{UNSAMPLED_TRACE}-")) && traceparent.ends_with("-00"),
        "{traceparent}"
    );

    let sampled = request(
        "GET",
        "/users/7?full=1",
        &[
            ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    );
    let got = send(addr, sampled, false).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "app");

    // The upstream's parent is the proxy's span, in the caller's trace.
    let seen = app.last_seen();
    let header = |name: &str| {
        seen.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let traceparent = header("traceparent").expect("traceparent upstream");
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00");
    assert_eq!(fields[1], TRACE, "same trace");
    let proxy_span = fields[2].to_string();
    assert_eq!(proxy_span.len(), 16);
    assert_ne!(proxy_span, PARENT, "a new span id");
    assert_eq!(fields[3], "01");
    assert_eq!(header("tracestate").as_deref(), Some("congo=t61rcWkgMzE"));

    // The collector gets the span (the flush tick sends it).
    let arrived = eventually(Duration::from_secs(10), async || {
        received_spans(&collector)
            .iter()
            .any(|(_, span)| span["traceId"] == TRACE)
    })
    .await;
    assert!(arrived, "no span reached the collector");
    let export = collector.last_seen();
    assert_eq!(export.method, "POST");
    assert_eq!(export.path, "/v1/traces");
    assert_eq!(
        export
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let spans = received_spans(&collector);
    assert!(
        spans
            .iter()
            .all(|(_, span)| span["traceId"] != UNSAMPLED_TRACE),
        "an unsampled request was exported: {spans:?}"
    );
    let (resource, span) = spans
        .iter()
        .find(|(_, span)| span["traceId"] == TRACE)
        .cloned()
        .expect("the span");
    assert_eq!(
        resource["attributes"][0],
        serde_json::json!({"key": "service.name", "value": {"stringValue": "edge"}})
    );
    assert_eq!(span["spanId"], proxy_span.as_str());
    assert_eq!(span["parentSpanId"], PARENT);
    assert_eq!(span["traceState"], "congo=t61rcWkgMzE");
    assert_eq!(span["kind"], 2);
    assert_eq!(span["name"], "GET users");
    assert_eq!(attribute(&span, "http.method")["stringValue"], "GET");
    assert_eq!(attribute(&span, "http.route")["stringValue"], "users");
    assert_eq!(attribute(&span, "http.status_code")["intValue"], "200");
    assert_eq!(attribute(&span, "url.path")["stringValue"], "/users/7");
    assert_eq!(
        attribute(&span, "client.address")["stringValue"],
        "127.0.0.1"
    );
    let nanos = |key: &str| -> u64 {
        span[key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{key} as a decimal string: {span}"))
    };
    let (start, end) = (nanos("startTimeUnixNano"), nanos("endTimeUnixNano"));
    assert!(start > 1_600_000_000_000_000_000, "{start}");
    assert!(end >= start, "{start}..{end}");

    let admin = proxy.admin.expect("admin");
    let mut stats = String::new();
    let counted = eventually(Duration::from_secs(10), async || {
        stats = get_admin_text(admin, "/stats");
        stats.contains("wasmesh_filter_tracing_spans_exported_total{plugin=\"tracing\"} 1")
    })
    .await;
    assert!(counted, "{stats}");
}
