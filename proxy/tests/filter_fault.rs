//! The stock `fault` filter in the real proxy: aborts answered on the wire (HTTP and gRPC
//! statuses) without reaching the upstream, and delays released by the filter's tick so the
//! request still reaches the upstream, with the delay shown in the filter's metrics.

mod support;

use std::net::SocketAddr;

use http::StatusCode;
use support::*;

fn proxy_config(upstream: SocketAddr, config: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "127.0.0.1:0"
    route_config: main
    filter_chain: faults
routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: default
            match: {{ prefix: "/" }}
            cluster: backend
clusters:
  - name: backend
    endpoints: ["{upstream}"]
filter_chains:
  - name: faults
    plugins:
      - name: fault
        source: "file://{wasm}"
        config: {config}
admin:
  address: "127.0.0.1:0"
"#,
        wasm = wasmesh_test_programs::filter("fault"),
    )
}

const HEADER_CONTROLLED: &str = r#"{"delay": {"header_control": true},
    "abort": {"header_control": true}, "tick_interval": "5ms"}"#;

#[tokio::test]
async fn aborts_are_answered_on_the_wire_and_never_reach_the_upstream() {
    let upstream = Upstream::named("app").await;
    let proxy = Proxy::start(&proxy_config(upstream.addr, HEADER_CONTROLLED));

    let got = get(proxy.addr("main"), "/").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "app", "no fault asked, none injected");

    let got = send(
        proxy.addr("main"),
        request("GET", "/", &[("x-fault-abort-request", "503")]),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(got.text(), "fault filter abort\n");

    let got = send(
        proxy.addr("main"),
        request(
            "POST",
            "/pkg.Service/Method",
            &[
                ("content-type", "application/grpc"),
                ("x-fault-abort-grpc-request", "14"),
            ],
        ),
        true,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("grpc-status"), Some("14"));
    assert_eq!(got.header("grpc-message"), Some("fault filter abort"));

    assert_eq!(upstream.hits(), 1, "aborted requests never left the proxy");
    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    assert!(
        stats.contains("wasmesh_filter_fault_aborts_injected_total{plugin=\"fault\"} 2"),
        "{stats}"
    );
}

#[tokio::test]
async fn delayed_requests_are_released_by_the_tick_and_reach_the_upstream() {
    let upstream = Upstream::named("app").await;
    let proxy = Proxy::start(&proxy_config(upstream.addr, HEADER_CONTROLLED));
    for _ in 0..3 {
        let got = send(
            proxy.addr("main"),
            request("GET", "/slow", &[("x-fault-delay-request", "50")]),
            false,
        )
        .await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        assert_eq!(got.text(), "app");
    }
    assert_eq!(upstream.hits(), 3);
    let seen = upstream.last_seen();
    assert_eq!(
        seen.headers
            .get("x-fault-delay-request")
            .and_then(|v| v.to_str().ok()),
        Some("50"),
        "the request goes on as it came"
    );
    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    assert!(
        stats.contains("wasmesh_filter_fault_delays_injected_total{plugin=\"fault\"} 3"),
        "the responses were delayed by the filter:\n{stats}"
    );
    assert!(
        stats.contains("wasmesh_filter_fault_active_delays{plugin=\"fault\"} 0"),
        "and released:\n{stats}"
    );
}

#[tokio::test]
async fn delay_then_abort_with_fixed_faults_for_every_request() {
    let upstream = Upstream::named("app").await;
    let proxy = Proxy::start(&proxy_config(
        upstream.addr,
        r#"{"delay": {"fixed_delay": "20ms", "percentage": 100},
            "abort": {"http_status": 429, "percentage": 100}}"#,
    ));
    let got = get(proxy.addr("main"), "/").await;
    assert_eq!(got.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(got.text(), "fault filter abort\n");
    assert_eq!(upstream.hits(), 0);
    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    assert!(
        stats.contains("wasmesh_filter_fault_delays_injected_total{plugin=\"fault\"} 1"),
        "{stats}"
    );
}
