//! The stock `ratelimit` filter in the real proxy: one bucket holds across the proxy's
//! workers and VM replicas (shared data with compare-and-swap), the `x-ratelimit-*` headers
//! and 429s on the wire with the filter's metrics on `/stats`, and the global mode against a
//! small rate-limit service speaking Envoy's HTTP/JSON API, written here as an upstream.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use support::*;

/// A proxy config: listener chain `edge` with the ratelimit plugin configured by `config`
/// (JSON), in front of `upstream`; `rls`, if given, is the `rls` cluster.
fn proxy_config(upstream: SocketAddr, rls: Option<SocketAddr>, config: &str) -> String {
    let rls_cluster = rls
        .map(|addr| format!("  - name: rls\n    endpoints: [\"{addr}\"]\n"))
        .unwrap_or_default();
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
          - name: default
            match: {{ prefix: "/" }}
            cluster: backend
clusters:
  - name: backend
    endpoints: ["{upstream}"]
{rls_cluster}filter_chains:
  - name: edge
    plugins:
      - name: ratelimit
        source: "file://{wasm}"
        config: {config}
admin:
  address: "127.0.0.1:0"
"#,
        wasm = wasmesh_test_programs::filter("ratelimit"),
    )
}

fn stats(proxy: &Proxy) -> String {
    get_admin_text(proxy.admin.expect("admin"), "/stats")
}

#[tokio::test]
async fn one_bucket_holds_across_workers_and_replicas() {
    let upstream = Upstream::named("app").await;
    let config = r#"{"rules": [{"name": "per-ip", "key": {"type": "client_ip"},
        "bucket": {"max_tokens": 3, "fill_interval": "1h"}}]}"#;
    // Two workers; the proxy builds a VM replica per core and gives each new request the next
    // replica, so these requests are spread over replicas: with a bucket per replica, twice
    // the limit (or more) would pass.
    let proxy = Proxy::start_with_args(
        &proxy_config(upstream.addr, None, config),
        &["--concurrency", "2"],
    );
    let mut statuses = Vec::new();
    for i in 0..8 {
        let got = get(proxy.addr("main"), "/").await;
        statuses.push(got.status.as_u16());
        if i == 0 {
            assert_eq!(got.header("x-ratelimit-limit"), Some("3"));
            assert_eq!(got.header("x-ratelimit-remaining"), Some("2"));
            assert_eq!(got.text(), "app");
        }
        if got.status == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = got
                .header("retry-after")
                .and_then(|v| v.parse().ok())
                .expect("retry-after in seconds");
            assert!((1..=3600).contains(&retry), "{retry}");
            assert_eq!(got.header("x-ratelimit-remaining"), Some("0"));
            assert_eq!(got.header("x-ratelimit-limit"), Some("3"));
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429]);
    assert_eq!(
        upstream.hits(),
        3,
        "limited requests never reach the upstream"
    );
    let stats = stats(&proxy);
    assert!(
        stats.contains(
            "wasmesh_filter_ratelimit_allowed_total{plugin=\"ratelimit\",rule=\"per-ip\"} 3"
        ),
        "{stats}"
    );
    assert!(
        stats.contains(
            "wasmesh_filter_ratelimit_limited_total{plugin=\"ratelimit\",rule=\"per-ip\"} 5"
        ),
        "{stats}"
    );
}

/// A rate-limit service in the shape of Envoy's (`POST /json`): every descriptor may be
/// used `LIMIT` times per domain; answers 200/`OK` or 429/`OVER_LIMIT` with per-descriptor
/// statuses. Keeps every request body it saw.
struct RateLimitService {
    upstream: Upstream,
    seen: Arc<Mutex<Vec<Value>>>,
}

const LIMIT: u64 = 2;

async fn rate_limit_service() -> RateLimitService {
    let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let bodies = seen.clone();
    let upstream = Upstream::with(move |request| {
        let counts = counts.clone();
        let bodies = bodies.clone();
        async move {
            let reply = |status: StatusCode, body: Value| {
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .expect("reply")
            };
            if request.method != "POST" || request.path != "/json" {
                return reply(StatusCode::NOT_FOUND, json!({}));
            }
            let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
                return reply(StatusCode::BAD_REQUEST, json!({}));
            };
            bodies.lock().expect("bodies").push(body.clone());
            let domain = body["domain"].as_str().unwrap_or_default().to_string();
            let mut over = false;
            let mut statuses = Vec::new();
            let mut counts = counts.lock().expect("counts");
            for descriptor in body["descriptors"].as_array().into_iter().flatten() {
                let key = format!("{domain}|{}", descriptor["entries"]);
                let used = counts.entry(key).or_insert(0);
                *used += 1;
                let code = if *used > LIMIT { "OVER_LIMIT" } else { "OK" };
                over |= *used > LIMIT;
                statuses.push(json!({
                    "code": code,
                    "currentLimit": {"requestsPerUnit": LIMIT, "unit": "MINUTE"},
                    "limitRemaining": LIMIT.saturating_sub(*used),
                }));
            }
            let (status, overall) = if over {
                (StatusCode::TOO_MANY_REQUESTS, "OVER_LIMIT")
            } else {
                (StatusCode::OK, "OK")
            };
            reply(
                status,
                json!({"overallCode": overall, "statuses": statuses}),
            )
        }
    })
    .await;
    RateLimitService { upstream, seen }
}

const GLOBAL: &str = r#"{"global": {"cluster": "rls", "domain": "edge", "timeout": "2s"},
    "rules": [{"name": "per-key", "key": {"type": "header", "name": "x-api-key"},
               "descriptor_key": "api_key"}]}"#;

#[tokio::test]
async fn global_mode_follows_an_external_rate_limit_service() {
    let upstream = Upstream::named("app").await;
    let rls = rate_limit_service().await;
    let proxy = Proxy::start(&proxy_config(
        upstream.addr,
        Some(rls.upstream.addr),
        GLOBAL,
    ));
    let with_key = |key: &str| request("GET", "/orders", &[("x-api-key", key)]);

    for remaining in ["1", "0"] {
        let got = send(proxy.addr("main"), with_key("a"), false).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        assert_eq!(got.text(), "app");
        assert_eq!(got.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(got.header("x-ratelimit-remaining"), Some(remaining));
    }
    let got = send(proxy.addr("main"), with_key("a"), false).await;
    assert_eq!(got.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(got.header("x-envoy-ratelimited"), Some("true"));
    assert_eq!(got.header("retry-after"), Some("60"));
    assert_eq!(got.header("x-ratelimit-remaining"), Some("0"));

    let got = send(proxy.addr("main"), with_key("b"), false).await;
    assert_eq!(got.status, StatusCode::OK, "another key has its own limit");
    let got = get(proxy.addr("main"), "/orders").await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "no key: no descriptor, so no question"
    );

    let seen = rls.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 4, "one call per keyed request: {seen:?}");
    assert_eq!(
        seen[0],
        json!({"domain": "edge", "descriptors": [{"entries": [{"key": "api_key", "value": "a"}]}]})
    );
    assert_eq!(upstream.hits(), 4);
    let stats = stats(&proxy);
    assert!(
        stats.contains(
            "wasmesh_filter_ratelimit_limited_total{plugin=\"ratelimit\",rule=\"per-key\"} 1"
        ),
        "{stats}"
    );
}

#[tokio::test]
async fn global_mode_failure_allows_by_default_and_denies_when_configured() {
    let upstream = Upstream::named("app").await;
    // A port nothing listens on.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    for (deny, expect) in [
        (false, StatusCode::OK),
        (true, StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        let config = GLOBAL.replace(
            "\"timeout\": \"2s\"",
            &format!("\"timeout\": \"2s\", \"failure_mode_deny\": {deny}"),
        );
        let proxy = Proxy::start(&proxy_config(upstream.addr, Some(dead), &config));
        let got = send(
            proxy.addr("main"),
            request("GET", "/", &[("x-api-key", "a")]),
            false,
        )
        .await;
        assert_eq!(got.status, expect, "deny={deny}: {}", got.text());
        let stats = stats(&proxy);
        assert!(
            stats.contains("wasmesh_filter_ratelimit_service_errors_total{plugin=\"ratelimit\"} 1"),
            "{stats}"
        );
    }
}
