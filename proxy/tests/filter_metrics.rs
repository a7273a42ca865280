//! The stock `metrics` filter in the real proxy: requests through two routes, then `/stats`
//! shows the filter's counters per route and status, its latency histogram with every bucket,
//! the body sizes, and a route over the cardinality bound counted as `other`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

fn proxy_config(upstream: SocketAddr, config: &str) -> String {
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
            cluster: backend
          - name: orders
            match: {{ prefix: "/orders" }}
            cluster: backend
          - name: misc
            match: {{ prefix: "/" }}
            cluster: backend
clusters:
  - name: backend
    endpoints: ["{upstream}"]
filter_chains:
  - name: observe
    plugins:
      - name: metrics
        source: "file://{wasm}"
        config: {config}
admin:
  address: "127.0.0.1:0"
"#,
        wasm = wasmesh_test_programs::filter("metrics"),
    )
}

/// The value of the sample line `series` (name and labels exactly) on `/stats`.
fn sample(stats: &str, series: &str) -> Option<f64> {
    stats.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[tokio::test]
async fn stats_show_counters_buckets_and_sizes_per_route_and_code() {
    // 503 for paths ending in /fail, else 200 with a 3-byte body.
    let upstream = Upstream::with(|seen| async move {
        if seen.path.ends_with("/fail") {
            reply(StatusCode::SERVICE_UNAVAILABLE, "app", "app")
        } else {
            reply(StatusCode::OK, "app", "app")
        }
    })
    .await;
    let config = r#"{"histogram": {"buckets_ms": [1, 10, 100, 1000, 10000]},
                     "max_values": {"route": 2}}"#;
    let proxy = Proxy::start_with_args(
        &proxy_config(upstream.addr, config),
        &["--concurrency", "2"],
    );
    let addr = proxy.addr("main");
    for path in ["/users/1", "/users/2", "/users/fail"] {
        get(addr, path).await;
    }
    let post = Request::builder()
        .method("POST")
        .uri("/orders")
        .header("host", "test.local")
        .body(Full::new(Bytes::from_static(b"hello")))
        .expect("request");
    assert_eq!(send(addr, post, false).await.status, StatusCode::OK);
    let admin = proxy.admin.expect("admin");
    // `on_log` runs as each exchange ends, which may be just after the client has its
    // answer: wait until both routes have been counted (so admitted), so the third route is
    // the one over the bound.
    let orders = r#"{plugin="metrics",route="orders",code="200"}"#;
    let mut stats = String::new();
    let counted = eventually(Duration::from_secs(10), async || {
        stats = get_admin_text(admin, "/stats");
        let users_failed = r#"{plugin="metrics",route="users",code="503"}"#;
        sample(&stats, &format!("wasmesh_filter_requests_total{orders}")) == Some(1.0)
            && sample(
                &stats,
                &format!("wasmesh_filter_requests_total{users_failed}"),
            ) == Some(1.0)
    })
    .await;
    assert!(counted, "{stats}");
    // A third route, over the bound of two.
    assert_eq!(get(addr, "/other-things").await.status, StatusCode::OK);

    let users_ok = r#"{plugin="metrics",route="users",code="200"}"#;
    let settled = eventually(Duration::from_secs(10), async || {
        stats = get_admin_text(admin, "/stats");
        sample(
            &stats,
            r#"wasmesh_filter_requests_total{plugin="metrics",route="other",code="200"}"#,
        ) == Some(1.0)
            && sample(&stats, &format!("wasmesh_filter_requests_total{users_ok}")) == Some(2.0)
    })
    .await;
    assert!(settled, "{stats}");
    let metric =
        |name: &str, labels: &str| sample(&stats, &format!("wasmesh_filter_{name}{labels}"));
    assert_eq!(
        metric(
            "requests_total",
            r#"{plugin="metrics",route="users",code="503"}"#
        ),
        Some(1.0),
        "{stats}"
    );
    assert_eq!(metric("requests_total", orders), Some(1.0), "{stats}");
    assert_eq!(metric("request_bytes_total", orders), Some(5.0), "{stats}");
    assert_eq!(metric("response_bytes_total", orders), Some(3.0), "{stats}");
    assert_eq!(
        metric("response_bytes_total", users_ok),
        Some(6.0),
        "{stats}"
    );
    assert_eq!(
        metric(
            "label_overflow_total",
            r#"{plugin="metrics",label="route"}"#
        ),
        Some(1.0),
        "{stats}"
    );

    // Every bucket of the users/200 series, cumulative, ending at the count.
    let mut last = 0.0;
    for le in ["1", "10", "100", "1000", "10000", "+Inf"] {
        let labels = format!(r#"{{plugin="metrics",route="users",code="200",le="{le}"}}"#);
        let value = metric("request_duration_ms_bucket", &labels)
            .unwrap_or_else(|| panic!("bucket le={le} missing:\n{stats}"));
        assert!(value >= last, "buckets are cumulative: {stats}");
        last = value;
    }
    assert_eq!(last, 2.0, "the +Inf bucket holds every request");
    assert_eq!(
        metric("request_duration_ms_count", users_ok),
        Some(2.0),
        "{stats}"
    );
    assert!(
        metric("request_duration_ms_sum", users_ok).is_some(),
        "{stats}"
    );
}

/// A histogram a filter defines (`proxy_define_metric`) is a Prometheus histogram on `/stats`,
/// with Envoy's default bucket bounds (the host cannot know the unit; filters usually record
/// milliseconds).
#[tokio::test]
async fn filter_histograms_have_buckets_on_stats() {
    let upstream = Upstream::named("app").await;
    let proxy = Proxy::start(&proxy_config(
        upstream.addr,
        r#"{"histogram": {"mode": "host"}}"#,
    ));
    assert_eq!(
        get(proxy.addr("main"), "/users/1").await.status,
        StatusCode::OK
    );
    let admin = proxy.admin.expect("admin");
    let count =
        r#"wasmesh_filter_request_duration_ms_count{plugin="metrics",route="users",code="200"}"#;
    let mut stats = String::new();
    let recorded = eventually(Duration::from_secs(10), async || {
        stats = get_admin_text(admin, "/stats");
        sample(&stats, count) == Some(1.0)
    })
    .await;
    assert!(recorded, "{stats}");
    for le in ["0.5", "1000", "3600000", "+Inf"] {
        let bucket = format!(
            r#"wasmesh_filter_request_duration_ms_bucket{{plugin="metrics",route="users",code="200",le="{le}"}}"#
        );
        assert!(
            sample(&stats, &bucket).is_some(),
            "no {bucket} in:\n{stats}"
        );
    }
    assert!(
        !stats.contains("wasmesh_filter_request_duration_ms{"),
        "a summary instead of a histogram:\n{stats}"
    );
}
