//! Rolling out filters on a running proxy: plugins pulled from a real registry over loopback
//! HTTP, a followed tag moving to a new module, a registry that is down at start-up, and a
//! hundred chain swaps under steady HTTP/1.1 and HTTP/2 load with no request failing.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use support::*;

/// Listener `main` runs chain `edge` (route `/`); route `/strict` adds chain `strict`. Pulled
/// modules go to a cache of this test's own (a remembered tag must not leak between runs whose
/// registries happened to get the same port).
fn config(cache: &std::path::Path, upstream: SocketAddr, edge: &str, strict: &str) -> String {
    format!(
        r#"
registry:
  cache_dir: "{cache}"
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
          - name: strict
            match: {{ prefix: "/strict" }}
            cluster: backend
            filter_chain: strict
          - name: default
            match: {{ prefix: "/" }}
            cluster: backend
clusters:
  - name: backend
    endpoints: ["{upstream}"]
filter_chains:
  - name: edge
    plugins:
{edge}
  - name: strict
    plugins:
{strict}
admin:
  address: "127.0.0.1:0"
"#,
        cache = cache.display()
    )
}

fn oci_plugin(name: &str, source: &str, extra: &str) -> String {
    format!("      - name: {name}\n        source: \"{source}\"\n{extra}")
}

async fn stamps(addr: SocketAddr, path: &str) -> (StatusCode, Vec<String>) {
    let got = get(addr, path).await;
    let stamps = got
        .headers
        .get_all("x-stamp")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    (got.status, stamps)
}

// The registry serves from this runtime while `Proxy::start` blocks waiting for the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_tag_rolls_out_the_new_module() {
    let dir = tempfile::tempdir().expect("dir");
    let registry = registry(&dir.path().join("registry")).await;
    let tag = format!("oci://{}/filters/stamp:live", registry.local_addr());
    let v1 = push(&tag, &stamp_module("v1")).await;

    let upstream = Upstream::named("up").await;
    let cache = tempfile::tempdir().expect("cache dir");
    let proxy = Proxy::start(&config(
        cache.path(),
        upstream.addr,
        &oci_plugin(
            "stamp",
            &tag,
            "        follow: true\n        poll_interval: 100ms\n",
        ),
        "",
    ));
    let addr = proxy.addr("main");
    assert_eq!(stamps(addr, "/").await, (StatusCode::OK, vec!["v1".into()]));
    let admin = proxy.admin.expect("admin");
    let chain = get_admin_text(admin, "/chains/edge");
    assert!(chain.contains(&v1), "{chain}");

    let v2 = push(&tag, &stamp_module("v2")).await;
    assert_ne!(v1, v2);
    assert!(
        eventually(Duration::from_secs(30), async || stamps(addr, "/").await.1
            == ["v2"])
        .await,
        "the proxy never served the module pushed to the followed tag"
    );
    let chain = get_admin_text(admin, "/chains/edge");
    assert!(chain.contains(&v2), "{chain}");
    let status = get_admin_text(admin, "/config/status");
    assert!(status.contains("moved to sha256:"), "{status}");
    registry.shutdown().await;
}

// The registry serves from this runtime while `Proxy::start` blocks waiting for the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_digests_and_pull_policies() {
    let dir = tempfile::tempdir().expect("dir");
    let registry = registry(&dir.path().join("registry")).await;
    let host = registry.local_addr();
    let tag = format!("oci://{host}/filters/stamp:pinned");
    let v1 = push(&tag, &stamp_module("v1")).await;

    let upstream = Upstream::named("up").await;
    let cache = tempfile::tempdir().expect("cache dir");
    let proxy = Proxy::start(&config(
        cache.path(),
        upstream.addr,
        &oci_plugin("stamp", &tag, ""),
        "",
    ));
    let (addr, admin) = (proxy.addr("main"), proxy.admin.expect("admin"));
    assert_eq!(stamps(addr, "/").await.1, ["v1"]);

    // The tag moves. An if_not_present plugin keeps the module it has, even through a reload
    // that rebuilds it (here: a new name, so a new plugin instance).
    push(&tag, &stamp_module("v2")).await;
    let document = |name: &str, extra: &str| {
        format!("plugins:\n  - name: {name}\n    source: \"{tag}\"\n{extra}")
    };
    let (status, body) = admin_call(admin, "PUT", "/chains/edge", &document("again", ""));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        stamps(addr, "/").await.1,
        ["v1"],
        "if_not_present stays put"
    );

    // always asks the registry: the moved tag is picked up.
    let (status, body) = admin_call(
        admin,
        "PUT",
        "/chains/edge",
        &document("always", "    pull_policy: always\n"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(stamps(addr, "/").await.1, ["v2"]);

    // A pin names the manifest: it wins over where the tag points now...
    let pinned = document("pinned", &format!("    sha256: {v1}\n"));
    let (status, body) = admin_call(admin, "PUT", "/chains/edge", &pinned);
    assert_eq!(status, 200, "{body}");
    assert_eq!(stamps(addr, "/").await.1, ["v1"]);

    // ...as does a digest reference...
    let by_digest =
        format!("plugins:\n  - name: stamp\n    source: \"oci://{host}/filters/stamp@{v1}\"\n");
    let (status, body) = admin_call(admin, "PUT", "/chains/edge", &by_digest);
    assert_eq!(status, 200, "{body}");
    assert_eq!(stamps(addr, "/").await.1, ["v1"]);

    // ...and a pin the registry does not have is refused; the running chain stays.
    let missing = document("missing", &format!("    sha256: {}\n", "0".repeat(64)));
    let (status, body) = admin_call(admin, "PUT", "/chains/edge", &missing);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("pulling"), "{body}");
    assert_eq!(stamps(addr, "/").await.1, ["v1"]);
    registry.shutdown().await;
}

// The registry serves from this runtime while `Proxy::start` blocks waiting for the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_down_at_start_up_applies_each_plugins_failure_policy() {
    let dir = tempfile::tempdir().expect("dir");
    // A free loopback port with nothing listening on it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let tag = format!("oci://{port}/filters/stamp:v1");
    let retry = "        poll_interval: 100ms\n";
    let edge = oci_plugin(
        "open",
        &tag,
        &format!("        failure_policy: fail_open\n{retry}"),
    );
    let strict = oci_plugin(
        "closed",
        &tag,
        &format!("        failure_policy: fail_closed\n{retry}"),
    );
    let upstream = Upstream::named("up").await;
    let cache = tempfile::tempdir().expect("cache dir");
    let proxy = Proxy::start_in(
        tempfile::tempdir().expect("dir"),
        &config(cache.path(), upstream.addr, &edge, &strict),
    );
    let addr = proxy.addr("main");
    // Serving at once: fail_open skips its plugin, fail_closed refuses its route.
    assert_eq!(stamps(addr, "/").await, (StatusCode::OK, vec![]));
    assert_eq!(
        stamps(addr, "/strict").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let admin = proxy.admin.expect("admin");
    let chains = get_admin_text(admin, "/chains");
    assert!(chains.contains("\"state\": \"unavailable\""), "{chains}");
    let stats = get_admin_text(admin, "/stats");
    assert!(
        stats.contains("wasmesh_filter_fetch_failures_total{plugin=\"closed\"}"),
        "{stats}"
    );

    // The registry comes up with the module: both plugins go into service without a restart.
    let registry = registry_on(&dir.path().join("registry"), port).await;
    push(&tag, &stamp_module("v1")).await;
    assert!(
        eventually(Duration::from_secs(30), async || {
            stamps(addr, "/").await.1 == ["v1"]
                && stamps(addr, "/strict").await == (StatusCode::OK, vec!["v1".into(), "v1".into()])
        })
        .await,
        "plugins never went into service once the registry was up"
    );
    registry.shutdown().await;
}

/// The issue's acceptance test: steady keep-alive load over HTTP/1.1 and HTTP/2 while the chain
/// is swapped 100 times between two modules; no request fails, each response carries exactly
/// one of the two stamps, and after the last swap only the new stamp is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_chain_swaps_under_load_fail_no_request() {
    let dir = tempfile::tempdir().expect("dir");
    let mut sources = Vec::new();
    for version in ["v1", "v2"] {
        let path = dir.path().join(format!("stamp-{version}.wasm"));
        std::fs::write(&path, stamp_module(version)).expect("write module");
        sources.push(format!("file://{}", path.display()));
    }
    let document = |i: usize| {
        format!(
            "plugins:\n  - name: stamp\n    source: \"{}\"\n",
            sources[i % 2]
        )
    };
    let upstream = Upstream::named("up").await;
    let cache = tempfile::tempdir().expect("cache dir");
    let proxy = Proxy::start(&config(
        cache.path(),
        upstream.addr,
        &oci_plugin("stamp", &sources[0], ""),
        "",
    ));
    let admin = proxy.admin.expect("admin");
    let addr = proxy.addr("main");

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([
        AtomicUsize::new(0), // v1
        AtomicUsize::new(0), // v2
        AtomicUsize::new(0), // failed
    ]);
    let mut clients = Vec::new();
    for h2 in [false, true, false, true] {
        let (stop, counts) = (stop.clone(), counts.clone());
        clients.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let io = hyper_util::rt::TokioIo::new(tcp);
            let (mut h1, mut h2s) = (None, None);
            if h2 {
                let (s, c) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                        .await
                        .expect("h2");
                tokio::spawn(c);
                h2s = Some(s);
            } else {
                let (s, c) = hyper::client::conn::http1::handshake(io).await.expect("h1");
                tokio::spawn(c);
                h1 = Some(s);
            }
            // Bounded: the loop ends when told to, or after this many requests at most.
            for _ in 0..200_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let req = http::Request::builder()
                    .uri(format!("http://t:{}/", addr.port()))
                    .header("host", "t")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request");
                let result = match (&mut h1, &mut h2s) {
                    (Some(s), _) => s.send_request(req).await,
                    (_, Some(s)) => s.send_request(req).await,
                    _ => unreachable!(),
                };
                let slot = match result {
                    Ok(r) if r.status() == StatusCode::OK => {
                        let got = collect(r).await;
                        let all: Vec<&str> = got
                            .headers
                            .get_all("x-stamp")
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .collect();
                        match (all.as_slice(), got.text().as_str()) {
                            (["v1"], "up") => 0,
                            (["v2"], "up") => 1,
                            _ => 2,
                        }
                    }
                    _ => 2,
                };
                counts[slot].fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for i in 1..=100 {
        let (status, body) = admin_call(admin, "PUT", "/chains/edge", &document(i));
        assert_eq!(status, 200, "reload {i}: {body}");
        // Let some requests through on each version before swapping again.
        let served = counts[0].load(Ordering::SeqCst) + counts[1].load(Ordering::SeqCst);
        let _ = eventually(Duration::from_secs(5), async || {
            counts[0].load(Ordering::SeqCst) + counts[1].load(Ordering::SeqCst) >= served + 8
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client");
    }
    let (v1, v2, failed) = (
        counts[0].load(Ordering::SeqCst),
        counts[1].load(Ordering::SeqCst),
        counts[2].load(Ordering::SeqCst),
    );
    eprintln!(
        "100 chain swaps under load: {v1} responses stamped v1, {v2} stamped v2, {failed} failed"
    );
    assert_eq!(
        failed, 0,
        "requests failed or were mis-stamped during the swaps"
    );
    assert!(v1 > 0 && v2 > 0, "both versions served ({v1}, {v2})");
    // The 100th swap installed sources[100 % 2] = v1; everything from now on is v1.
    for h2 in [false, true] {
        for _ in 0..20 {
            let got = send(addr, request("GET", "/", &[]), h2).await;
            let all: Vec<&str> = got
                .headers
                .get_all("x-stamp")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            assert_eq!(
                all,
                ["v1"],
                "after the last swap only the new stamp is served"
            );
        }
    }
    let status = get_admin_text(admin, "/config/status");
    assert!(status.contains("\"generation\": 101"), "{status}");
}
