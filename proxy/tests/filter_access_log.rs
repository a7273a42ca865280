//! The stock access-log filter in the real proxy: each request through the chain becomes one
//! JSON line, and the lines reach a collector cluster (a real upstream) as NDJSON POSTs sent by
//! the filter's root context.

mod support;

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use support::*;

/// Every line the collector has received so far, parsed.
fn received(collector: &Upstream) -> Vec<Value> {
    collector
        .seen
        .lock()
        .expect("seen")
        .iter()
        .flat_map(|post| {
            String::from_utf8_lossy(&post.body)
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect::<Vec<Value>>()
        })
        .collect()
}

#[tokio::test]
async fn access_log_lines_reach_the_collector_as_ndjson() {
    let collector =
        Upstream::with(|_| async { reply(StatusCode::NO_CONTENT, "collector", "") }).await;
    let backend = Upstream::with(|seen: Seen| async move {
        match seen.path.as_str() {
            "/missing" => reply(StatusCode::NOT_FOUND, "backend", "no"),
            _ => reply(StatusCode::OK, "backend", "yes"),
        }
    })
    .await;
    let base = simple_config(
        &format!(
            "  - name: collector\n    endpoints: [\"{}\"]\n",
            collector.addr
        ),
        &[backend.addr],
        "            filter_chain: logs\n",
    );
    let yaml = format!(
        r#"{base}
filter_chains:
  - name: logs
    plugins:
      - name: access
        source: "file://{wasm}"
        config:
          fields: [method, path, response_code, request_id, authority, user_agent, duration]
          collector: {{ cluster: collector, path: /v1/logs, batch_size: 10, flush_interval: 100ms }}
"#,
        wasm = wasmesh_test_programs::filter("access-log"),
    );
    let proxy = Proxy::start(&yaml);
    let addr = proxy.addr("main");
    let got = send(
        addr,
        request("GET", "/orders?id=7", &[("user-agent", "e2e-test/1")]),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    let ok_id = backend.last_seen().headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let got = send(addr, request("DELETE", "/missing", &[]), false).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    let missing_id = backend.last_seen().headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();

    let both = eventually(Duration::from_secs(20), async || {
        received(&collector).len() >= 2
    })
    .await;
    let lines = received(&collector);
    assert!(both, "the collector got {lines:?}");
    let line = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"] == path)
            .unwrap_or_else(|| panic!("no line for {path} in {lines:?}"))
            .clone()
    };
    let ok = line("/orders?id=7");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["response_code"], 200);
    assert_eq!(ok["request_id"], ok_id.as_str());
    assert_eq!(ok["authority"], "test.local");
    assert_eq!(ok["user_agent"], "e2e-test/1");
    assert!(ok["duration"].is_u64(), "{ok}");
    let missing = line("/missing");
    assert_eq!(missing["method"], "DELETE");
    assert_eq!(missing["response_code"], 404);
    assert_eq!(missing["request_id"], missing_id.as_str());
    assert_eq!(lines.len(), 2, "one line per request: {lines:?}");

    let post = collector.last_seen();
    assert_eq!(post.method, "POST");
    assert_eq!(post.path, "/v1/logs");
    assert_eq!(post.headers["content-type"], "application/x-ndjson");
    // Counted when the collector's answer is back, which may be a moment after it got them.
    let admin = proxy.admin.expect("admin");
    let counted = eventually(Duration::from_secs(20), async || {
        get_admin_text(admin, "/stats")
            .contains("wasmesh_filter_access_log_sent_lines_total{plugin=\"access\"} 2")
    })
    .await;
    assert!(counted, "{}", get_admin_text(admin, "/stats"));
}
