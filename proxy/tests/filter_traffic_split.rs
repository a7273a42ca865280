//! The stock `traffic-split` filter in the real proxy, with the route-table pattern its README
//! documents: the filter writes `x-route-variant` and clears the route cache, and a route
//! matching that header sends the request to the canary cluster. All traffic to one side with
//! weights 100/0 and 0/100, a 90/10 split within a bound that cannot be missed by chance,
//! header and cookie overrides, sticky users, and a client unable to choose by sending the
//! header itself.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;

use http::StatusCode;
use support::*;

fn proxy_config(v1: SocketAddr, v2: SocketAddr, config: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "127.0.0.1:0"
    route_config: main
    filter_chain: split
routes:
  - name: main
    virtual_hosts:
      - name: shop
        domains: ["*"]
        routes:
          - name: shop-canary
            match:
              prefix: "/"
              headers: [{{ name: x-route-variant, exact: canary }}]
            cluster: shop-v2
          - name: shop-stable
            match: {{ prefix: "/" }}
            cluster: shop-v1
clusters:
  - name: shop-v1
    endpoints: ["{v1}"]
  - name: shop-v2
    endpoints: ["{v2}"]
filter_chains:
  - name: split
    plugins:
      - name: split
        source: "file://{wasm}"
        config: {config}
admin:
  address: "127.0.0.1:0"
"#,
        wasm = wasmesh_test_programs::filter("traffic-split"),
    )
}

fn weights(stable: u32, canary: u32, extra: &str) -> String {
    format!(
        r#"{{"variants": [{{"name": "stable", "weight": {stable}}}, {{"name": "canary", "weight": {canary}}}]{extra}}}"#
    )
}

/// The upstream (`v1` or `v2`) that answered.
async fn served_by(proxy: &Proxy, headers: &[(&str, &str)]) -> String {
    let got = send(proxy.addr("main"), request("GET", "/cart", headers), false).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    got.text()
}

#[tokio::test]
async fn weights_of_100_and_0_send_everything_to_one_cluster() {
    let v1 = Upstream::named("v1").await;
    let v2 = Upstream::named("v2").await;
    for (stable, canary, want) in [(100, 0, "v1"), (0, 100, "v2")] {
        let proxy = Proxy::start(&proxy_config(
            v1.addr,
            v2.addr,
            &weights(stable, canary, ""),
        ));
        for _ in 0..20 {
            assert_eq!(served_by(&proxy, &[]).await, want);
        }
        // The first route match follows the client's header; the filter replaces it and
        // the second match follows the filter's choice.
        let opposite = if want == "v1" { "canary" } else { "stable" };
        assert_eq!(
            served_by(&proxy, &[("x-route-variant", opposite)]).await,
            want,
            "a client cannot choose its variant by sending the header"
        );
    }
    assert_eq!(
        v1.last_seen().headers["x-route-variant"],
        "stable",
        "the upstream sees the choice"
    );
    assert_eq!(v2.last_seen().headers["x-route-variant"], "canary");
}

#[tokio::test]
async fn a_ninety_ten_split_holds_over_many_requests() {
    let v1 = Upstream::named("v1").await;
    let v2 = Upstream::named("v2").await;
    let proxy = Proxy::start(&proxy_config(v1.addr, v2.addr, &weights(90, 10, "")));
    let n = 1000;
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..n {
        *counts.entry(served_by(&proxy, &[]).await).or_default() += 1;
    }
    // 100 canary requests expected, standard deviation 9.5: the bounds are more than six
    // deviations away (a chance below one in a billion), while 50/50 or 100/0 is far outside.
    let canary = counts.get("v2").copied().unwrap_or(0);
    assert!((40..=200).contains(&canary), "{counts:?}");
    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    assert!(
        stats.contains(&format!(
            "wasmesh_filter_traffic_split_requests_total{{plugin=\"split\",variant=\"canary\",reason=\"weighted\"}} {canary}"
        )),
        "{stats}"
    );
}

#[tokio::test]
async fn overrides_and_sticky_users() {
    let v1 = Upstream::named("v1").await;
    let v2 = Upstream::named("v2").await;
    let config = weights(
        50,
        50,
        r#", "overrides": [{"header": "x-canary", "value": "always", "variant": "canary"},
                           {"cookie": "version", "value": "v2", "variant": "canary"},
                           {"header": "x-canary", "value": "never", "variant": "stable"}],
            "sticky": {"type": "header", "name": "x-user"}"#,
    );
    let proxy = Proxy::start(&proxy_config(v1.addr, v2.addr, &config));
    for _ in 0..10 {
        assert_eq!(served_by(&proxy, &[("x-canary", "always")]).await, "v2");
        assert_eq!(served_by(&proxy, &[("cookie", "version=v2")]).await, "v2");
        assert_eq!(served_by(&proxy, &[("x-canary", "never")]).await, "v1");
    }
    let mut users_per_upstream: HashMap<String, u32> = HashMap::new();
    for user in 0..30 {
        let id = format!("user-{user}");
        let first = served_by(&proxy, &[("x-user", &id)]).await;
        for _ in 0..3 {
            assert_eq!(served_by(&proxy, &[("x-user", &id)]).await, first, "{id}");
        }
        *users_per_upstream.entry(first).or_default() += 1;
    }
    assert_eq!(
        users_per_upstream.len(),
        2,
        "users are spread over both: {users_per_upstream:?}"
    );
}
