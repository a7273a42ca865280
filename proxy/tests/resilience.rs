//! Retries, timeouts, circuit breaking and graceful shutdown through the real binary.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::sync::Notify;

#[tokio::test]
async fn retry_on_5xx_until_success() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let upstream = Upstream::with(move |_| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                reply(StatusCode::SERVICE_UNAVAILABLE, "u", "try again")
            } else {
                reply(StatusCode::OK, "u", "finally")
            }
        }
    })
    .await;
    let route = "            retry_policy:\n              retry_on: [5xx]\n              num_retries: 2\n              base_interval: 1ms\n";
    let proxy = Proxy::start(&simple_config("", &[upstream.addr], route));
    let got = get(proxy.addr("main"), "/").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "finally");
    assert_eq!(upstream.hits(), 3);
    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    assert!(
        stats.contains("wasmesh_upstream_retries_total{cluster=\"backend\"} 2"),
        "{stats}"
    );
}

#[tokio::test]
async fn retries_are_bounded() {
    let upstream = Upstream::with(|_| async { reply(StatusCode::BAD_GATEWAY, "u", "nope") }).await;
    let route = "            retry_policy:\n              retry_on: [gateway-error]\n              num_retries: 3\n              base_interval: 1ms\n";
    let proxy = Proxy::start(&simple_config("", &[upstream.addr], route));
    let got = get(proxy.addr("main"), "/").await;
    assert_eq!(
        got.status,
        StatusCode::BAD_GATEWAY,
        "the last answer is passed on"
    );
    assert_eq!(upstream.hits(), 4);
}

#[tokio::test]
async fn retry_on_connect_failure_moves_to_a_live_endpoint() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let live = Upstream::named("live").await;
    let route = "            retry_policy:\n              retry_on: [connect-failure]\n              num_retries: 2\n              base_interval: 1ms\n";
    let proxy = Proxy::start(&simple_config("", &[dead, live.addr], route));
    for _ in 0..10 {
        let got = post_small(proxy.addr("main")).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    }
    assert_eq!(live.hits(), 10);
    assert_eq!(
        live.last_seen().body,
        "payload",
        "a buffered body is replayed on retry"
    );
}

async fn post_small(addr: std::net::SocketAddr) -> Got {
    let req = http::Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "t")
        .header("content-length", "7")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"payload",
        )))
        .expect("request");
    send(addr, req, false).await
}

#[tokio::test]
async fn route_timeout_gives_504() {
    let release = Arc::new(Notify::new());
    let r = release.clone();
    let upstream = Upstream::with(move |_| {
        let r = r.clone();
        async move {
            r.notified().await;
            reply(StatusCode::OK, "slow", "late")
        }
    })
    .await;
    let route = "            timeout: 200ms\n";
    let proxy = Proxy::start(&simple_config("", &[upstream.addr], route));
    let got = get(proxy.addr("main"), "/").await;
    release.notify_waiters();
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn circuit_breaker_max_requests_answers_503_with_reason() {
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let (r, e) = (release.clone(), entered.clone());
    let upstream = Upstream::with(move |_| {
        let (r, e) = (r.clone(), e.clone());
        async move {
            e.notify_one();
            r.notified().await;
            reply(StatusCode::OK, "held", "done")
        }
    })
    .await;
    let cluster = "    circuit_breakers:\n      max_requests: 1\n";
    let proxy = Proxy::start(&simple_config(cluster, &[upstream.addr], ""));
    let addr = proxy.addr("main");
    let first = tokio::spawn(async move { get(addr, "/").await });
    entered.notified().await; // the first request now occupies the only slot
    let second = get(addr, "/").await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.header("x-wasmesh-overloaded"), Some("max_requests"));
    release.notify_one();
    assert_eq!(first.await.expect("first").status, StatusCode::OK);
    // With the slot free again, requests flow.
    let upstream_free = upstream.hits();
    let third = tokio::spawn(async move { get(addr, "/").await });
    entered.notified().await;
    release.notify_one();
    assert_eq!(third.await.expect("third").status, StatusCode::OK);
    assert_eq!(upstream.hits(), upstream_free + 1);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let (r, e) = (release.clone(), entered.clone());
    let upstream = Upstream::with(move |_| {
        let (r, e) = (r.clone(), e.clone());
        async move {
            e.notify_one();
            r.notified().await;
            reply(StatusCode::OK, "slow", "finished")
        }
    })
    .await;
    let mut proxy = Proxy::start(&simple_config("", &[upstream.addr], ""));
    let addr = proxy.addr("main");
    let in_flight = tokio::spawn(async move { get(addr, "/").await });
    entered.notified().await;
    let pid = proxy.pid();
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    // Once draining, new connections are refused while the old request is still served.
    let refused = eventually(Duration::from_secs(10), async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "listener kept accepting after SIGTERM");
    release.notify_one();
    let got = in_flight.await.expect("in-flight request");
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "finished");
    assert!(proxy.terminate(), "clean exit after draining");
}

/// A filter can ask the router to retry this request (filter state `wasmesh.retry_on`,
/// `wasmesh.num_retries`, as the stock retry-hints filter does from Envoy's headers) on a
/// route that has no retry policy of its own.
#[tokio::test]
async fn filters_can_hint_a_retry_policy() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let flaky = Upstream::with(move |_| {
        let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            if n.is_multiple_of(2) {
                reply(http::StatusCode::SERVICE_UNAVAILABLE, "flaky", "down")
            } else {
                reply(http::StatusCode::OK, "flaky", "up")
            }
        }
    })
    .await;
    let config = simple_config("", &[flaky.addr], "            filter_chain: probe\n")
        + &format!(
            "filter_chains:\n  - name: probe\n    plugins:\n      - name: probe\n        source: \"file://{}\"\n",
            wasmesh_test_programs::PROBE_WASM
        );
    let proxy = Proxy::start(&config);
    let addr = proxy.addr("main");

    // No hint: the route has no retry policy, the 503 stands.
    let got = get(addr, "/").await;
    assert_eq!(got.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The next call would be answered 200; reset so the first attempt fails again.
    let _ = get(addr, "/").await;
    let hinted = send(
        addr,
        request(
            "GET",
            "/",
            &[(
                "x-probe-set-property",
                "wasmesh.retry_on=5xx;wasmesh.num_retries=2",
            )],
        ),
        false,
    )
    .await;
    assert_eq!(hinted.status, http::StatusCode::OK, "{}", hinted.text());
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "one failed attempt, then the hinted retry"
    );
}

/// A small body kept for retries keeps its trailers too, announced or not (an HTTP/2 client
/// need not send `TE` or `Trailer`), on every attempt.
#[tokio::test]
async fn a_retried_body_keeps_its_trailers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let upstream = Upstream::with(move |seen: Seen| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            let trailer = seen
                .trailers
                .as_ref()
                .and_then(|t| t.get("x-checksum"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string();
            let status = if n == 0 {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            reply(
                status,
                "u",
                &format!("{} trailer={trailer}", seen.body.len()),
            )
        }
    })
    .await;
    let route = "            retry_policy:\n              retry_on: [5xx]\n              num_retries: 1\n              base_interval: 1ms\n";
    let proxy = Proxy::start(&simple_config(
        "    protocol: http2\n",
        &[upstream.addr],
        route,
    ));

    let (status, _, body, _) = h2c_exchange(
        proxy.addr("main"),
        &[("content-length", "4")],
        body_with_trailers(b"ping", &[("x-checksum", "abc")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "4 trailer=abc");
    assert_eq!(upstream.hits(), 2);
}
