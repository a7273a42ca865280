//! The stock `retry-hints` filter in the real proxy, in front of a flaky upstream (each
//! request's attempts alternate 503, 200) on a route with no retry policy: a trusted client's
//! `x-envoy-retry-on: 5xx` turns its 503 into a 200 through one retry, the same request
//! without it gets the 503, a client from an untrusted address cannot ask, and the retries a
//! client asks for are capped. The upstream never sees the headers.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::TcpSocket;

fn proxy_config(upstream: SocketAddr) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "127.0.0.1:0"
    route_config: main
    filter_chain: hints
routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: default
            match: {{ prefix: "/" }}
            cluster: flaky
clusters:
  - name: flaky
    endpoints: ["{upstream}"]
filter_chains:
  - name: hints
    plugins:
      - name: retry-hints
        source: "file://{wasm}"
        config: {{ trusted_cidrs: ["127.0.0.1/32"], max_retries_cap: 2 }}
admin:
  address: "127.0.0.1:0"
"#,
        wasm = wasmesh_test_programs::filter("retry-hints"),
    )
}

/// The flaky upstream: attempts are counted per `x-test-id`; odd attempts get 503, even ones
/// 200 — or every attempt 503 for ids starting with `always-`.
async fn flaky() -> (Upstream, Arc<Mutex<HashMap<String, u32>>>) {
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let counted = attempts.clone();
    let upstream = Upstream::with(move |seen| {
        let counted = counted.clone();
        async move {
            let id = seen
                .headers
                .get("x-test-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let n = {
                let mut counted = counted.lock().expect("attempts");
                let n = counted.entry(id.clone()).or_insert(0);
                *n += 1;
                *n
            };
            if id.starts_with("always-") || n % 2 == 1 {
                reply(StatusCode::SERVICE_UNAVAILABLE, "flaky", "try again")
            } else {
                reply(StatusCode::OK, "flaky", "ok")
            }
        }
    })
    .await;
    (upstream, attempts)
}

fn with_id(id: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut all = vec![("x-test-id", id)];
    all.extend_from_slice(headers);
    request("GET", "/", &all)
}

/// Sends `req` from `local` (another loopback address than the trusted 127.0.0.1).
async fn send_from(local: &str, proxy: SocketAddr, req: Request<Full<Bytes>>) -> Got {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{local}:0").parse().expect("local address"))
        .expect("bind the client to another loopback address");
    let tcp = socket.connect(proxy).await.expect("connect to proxy");
    send_on(TokioIo::new(tcp), req, false).await
}

#[tokio::test]
async fn trusted_clients_can_ask_for_retries_and_others_cannot() {
    let (upstream, attempts) = flaky().await;
    let proxy = Proxy::start(&proxy_config(upstream.addr));
    let addr = proxy.addr("main");
    let attempts_of = |id: &str| attempts.lock().expect("attempts").get(id).copied();

    // Without the header: the route has no retry policy, the 503 comes back.
    let got = send(addr, with_id("plain", &[]), false).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts_of("plain"), Some(1));

    // With it, from a trusted address: one retry, and the client gets the 200.
    let got = send(
        addr,
        with_id("asked", &[("x-envoy-retry-on", "5xx")]),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "ok");
    assert_eq!(attempts_of("asked"), Some(2));
    let seen = upstream.seen.lock().expect("seen").clone();
    assert!(
        seen.iter()
            .all(|s| !s.headers.contains_key("x-envoy-retry-on")),
        "the header is not forwarded"
    );

    // From 127.0.0.2 (not trusted): no retry, and the header does not reach the upstream.
    let got = send_from(
        "127.0.0.2",
        addr,
        with_id(
            "untrusted",
            &[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "2")],
        ),
    )
    .await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts_of("untrusted"), Some(1));
    let last = upstream.last_seen();
    assert!(!last.headers.contains_key("x-envoy-retry-on"));
    assert!(!last.headers.contains_key("x-envoy-max-retries"));

    // Asking for ten retries gets the configured cap of two: three attempts in all.
    let got = send(
        addr,
        with_id(
            "always-failing",
            &[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "10")],
        ),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts_of("always-failing"), Some(3));

    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    assert!(
        stats.contains("wasmesh_filter_retry_hints_applied_total{plugin=\"retry-hints\"} 2"),
        "{stats}"
    );
    assert!(
        stats.contains(
            "wasmesh_filter_retry_hints_ignored_total{plugin=\"retry-hints\",reason=\"untrusted\"} 1"
        ),
        "{stats}"
    );
}
