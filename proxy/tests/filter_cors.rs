//! The stock `cors` filter in the real proxy: a preflight answered by the proxy, actual
//! requests whose responses carry the CORS headers, a preflight from a disallowed origin
//! forwarded upstream, and per-route policies chosen by the proxy's route names.

mod support;

use std::net::SocketAddr;

use http::StatusCode;
use support::*;

fn proxy_config(upstream: SocketAddr) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "127.0.0.1:0"
    route_config: main
    filter_chain: edge
routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: webhooks
            match: {{ prefix: "/hooks" }}
            cluster: backend
          - name: api
            match: {{ prefix: "/" }}
            cluster: backend
clusters:
  - name: backend
    endpoints: ["{upstream}"]
filter_chains:
  - name: edge
    plugins:
      - name: cors
        source: "file://{wasm}"
        config:
          allow_origins: ["https://app.example.com", "https://*.example.org"]
          allow_methods: [GET, POST, PUT]
          allow_headers: [content-type, authorization]
          expose_headers: [x-upstream]
          max_age: 300
          allow_credentials: true
          routes:
            webhooks: {{ enabled: false }}
admin:
  address: "127.0.0.1:0"
"#,
        wasm = wasmesh_test_programs::filter("cors"),
    )
}

#[tokio::test]
async fn preflights_are_answered_by_the_proxy() {
    let upstream = Upstream::named("app").await;
    let proxy = Proxy::start(&proxy_config(upstream.addr));
    let got = send(
        proxy.addr("main"),
        request(
            "OPTIONS",
            "/items",
            &[
                ("origin", "https://shop.example.org"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "content-type"),
            ],
        ),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    for (name, value) in [
        ("access-control-allow-origin", "https://shop.example.org"),
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-methods", "GET, POST, PUT"),
        (
            "access-control-allow-headers",
            "content-type, authorization",
        ),
        ("access-control-max-age", "300"),
        ("vary", "Origin"),
    ] {
        assert_eq!(got.header(name), Some(value), "{name}");
    }
    assert!(got.body.is_empty());
    assert_eq!(upstream.hits(), 0, "the upstream never saw the preflight");

    // From an origin that is not allowed, the preflight goes upstream (as Envoy by default).
    let got = send(
        proxy.addr("main"),
        request(
            "OPTIONS",
            "/items",
            &[
                ("origin", "https://evil.test"),
                ("access-control-request-method", "PUT"),
            ],
        ),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "app");
    assert_eq!(got.header("access-control-allow-origin"), None);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn actual_requests_carry_the_cors_headers_per_route() {
    let upstream = Upstream::named("app").await;
    let proxy = Proxy::start(&proxy_config(upstream.addr));
    let got = send(
        proxy.addr("main"),
        request("GET", "/items", &[("origin", "https://app.example.com")]),
        true,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "app");
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(got.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        got.header("access-control-expose-headers"),
        Some("x-upstream")
    );
    assert_eq!(got.header("vary"), Some("Origin"));

    let got = send(
        proxy.addr("main"),
        request("GET", "/items", &[("origin", "https://evil.test")]),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("access-control-allow-origin"), None);
    assert_eq!(got.header("vary"), Some("Origin"));

    // The webhooks route turns CORS off: nothing is added, and its preflight goes upstream.
    let got = send(
        proxy.addr("main"),
        request(
            "OPTIONS",
            "/hooks/github",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
            ],
        ),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "app");
    assert_eq!(got.header("access-control-allow-origin"), None);
    assert_eq!(got.header("vary"), None);

    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    assert!(
        stats.contains("wasmesh_filter_cors_origin_valid_total{plugin=\"cors\"} 1"),
        "{stats}"
    );
    assert!(
        stats.contains("wasmesh_filter_cors_origin_invalid_total{plugin=\"cors\"} 1"),
        "{stats}"
    );
}
