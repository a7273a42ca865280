//! Failing upstreams behind the real proxy: real servers on loopback that close mid-response,
//! reset, stall, answer garbage or refuse connections, next to a good one. With retries,
//! timeouts, outlier ejection and circuit breaking the clients barely notice, and no request
//! outlives its route's timeout. A response cut short is never passed off as complete, nor
//! one still in a transfer coding the proxy does not undo; a body that stalls is cut at the route's idle timeout and one that trickles on at its timeout, and
//! a registry serving a tampered module never gets it into a proxy that follows its tag.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The route timeout the fault tests configure, and how much longer than it a request may
/// take before the test calls it a hang.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(5);
const HANG_MARGIN: Duration = Duration::from_secs(10);

/// How a bad upstream misbehaves, per connection.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Closes the connection in the middle of the response head.
    CloseMidHead,
    /// Resets the connection (RST) after reading the request.
    Reset,
    /// Reads the request and never answers.
    Stall,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Sends a head promising 100 bytes, 10 of them, and closes.
    TruncatedBody,
    /// Sends a head promising 100 bytes, 10 of them, and then nothing, forever.
    StalledBody,
    /// Sends a chunked body a byte every 100 ms, for ever: never silent, never done.
    TricklingBody,
    /// Sends a chunked body a byte every 100 ms, 15 bytes in all.
    SlowBody,
    /// Sends a body in a transfer coding besides chunked (`gzip, chunked`).
    CodedBody,
    /// Sends a chunked body of 10 bytes under a `Content-Length: 5` as well.
    LengthAndChunked,
}

/// A raw TCP server on loopback misbehaving with `fault` on every connection.
async fn bad_upstream(fault: Fault) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the request head (whatever arrives first is enough to misbehave on).
                let mut buf = vec![0u8; 16 * 1024];
                let _ = tcp.read(&mut buf).await;
                match fault {
                    Fault::CloseMidHead => {
                        let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
                    }
                    Fault::Reset => {
                        let _ = tcp.set_zero_linger();
                    }
                    Fault::Stall | Fault::StalledBody => {
                        if matches!(fault, Fault::StalledBody) {
                            let _ = tcp
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
                                )
                                .await;
                        }
                        // Hold the connection until the peer gives up.
                        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                    }
                    Fault::Garbage => {
                        let _ = tcp
                            .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe garbage\r\n\r\n")
                            .await;
                    }
                    Fault::TruncatedBody => {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                            .await;
                    }
                    Fault::CodedBody => {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                            .await;
                    }
                    Fault::LengthAndChunked => {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n")
                            .await;
                    }
                    Fault::TricklingBody | Fault::SlowBody => {
                        // One response per connection: the proxy must not reuse it.
                        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
                        let mut sent = tcp.write_all(head).await;
                        let mut count = 0;
                        while sent.is_ok() && (matches!(fault, Fault::TricklingBody) || count < 15)
                        {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            sent = tcp.write_all(b"1\r\nx\r\n").await;
                            count += 1;
                        }
                        let _ = tcp.write_all(b"0\r\n\r\n").await;
                    }
                }
                drop(tcp);
            });
        }
    });
    (addr, task)
}

fn cluster_with_defences() -> &'static str {
    "    lb_policy: round_robin\n    connect_timeout: 1s\n    outlier_detection: { consecutive_5xx: 2, consecutive_gateway_failure: 2, base_ejection_time: 60s, max_ejection_percent: 50 }\n    circuit_breakers: { max_retries: 16 }\n"
}

fn route_with_retries() -> String {
    format!(
        "            timeout: {}s\n            retry_policy:\n              retry_on: [connect-failure, reset, 5xx, gateway-error]\n              num_retries: 2\n              per_try_timeout: 1s\n              base_interval: 1ms\n",
        ROUTE_TIMEOUT.as_secs()
    )
}

fn metric_sum(stats: &str, name: &str) -> f64 {
    stats
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_failing_endpoint_next_to_a_good_one_barely_hurts_and_nothing_hangs() {
    const REQUESTS: usize = 50;
    let good = Upstream::named("good").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    for fault in [
        Some(Fault::CloseMidHead),
        Some(Fault::Reset),
        Some(Fault::Stall),
        Some(Fault::Garbage),
        None, // connection refused
    ] {
        let (bad, _server) = match fault {
            Some(fault) => {
                let (addr, task) = bad_upstream(fault).await;
                (addr, Some(task))
            }
            None => (dead, None),
        };
        let proxy = Proxy::start(&simple_config(
            cluster_with_defences(),
            &[bad, good.addr],
            &route_with_retries(),
        ));
        let addr = proxy.addr("main");
        let mut ok = 0;
        for i in 0..REQUESTS {
            let got = tokio::time::timeout(ROUTE_TIMEOUT + HANG_MARGIN, get(addr, "/"))
                .await
                .unwrap_or_else(|_| panic!("{fault:?}: request {i} outlived its route timeout"));
            if got.status == StatusCode::OK && got.text() == "good" {
                ok += 1;
            }
        }
        eprintln!("{fault:?}: {ok} of {REQUESTS} requests succeeded");
        // Each request that meets the bad endpoint is retried on the good one (round robin),
        // and the bad one is soon ejected: all succeed; allow a little for what cannot be
        // retried.
        assert!(
            ok >= REQUESTS * 9 / 10,
            "{fault:?}: only {ok} of {REQUESTS} requests succeeded"
        );
        let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
        assert!(
            metric_sum(&stats, "wasmesh_outlier_ejections_total") >= 1.0,
            "{fault:?}: the bad endpoint was never ejected:\n{stats}"
        );
    }
}

/// Reads a response over a fresh connection (HTTP/1.1 or h2c); the body is an error when it
/// was cut short.
/// `fetch(addr, "/", h2)`, failing the test with `what` if it takes longer than the margin.
async fn fetch_within_margin(
    addr: SocketAddr,
    h2: bool,
    what: &str,
) -> (StatusCode, Result<Bytes, String>) {
    tokio::time::timeout(HANG_MARGIN, fetch(addr, "/", h2))
        .await
        .unwrap_or_else(|_| panic!("h2={h2}: {what}"))
}

async fn fetch(addr: SocketAddr, path: &str, h2: bool) -> (StatusCode, Result<Bytes, String>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let req = Request::get(format!("http://t:{}{path}", addr.port()))
        .header("host", "t")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        sender.send_request(req).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        sender.send_request(req).await
    };
    match response {
        Ok(response) => {
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|e| e.to_string());
            (status, body)
        }
        Err(err) => (StatusCode::BAD_GATEWAY, Err(err.to_string())),
    }
}

/// An upstream that closes after 10 of the 100 bytes it promised: the client must see the
/// response fail, over HTTP/1.1 and HTTP/2 — never ten bytes that look like a whole body.
#[tokio::test]
async fn a_response_cut_mid_body_is_never_passed_off_as_complete() {
    let (bad, _server) = bad_upstream(Fault::TruncatedBody).await;
    let proxy = Proxy::start(&simple_config("", &[bad], ""));
    for h2 in [false, true] {
        let (status, body) = fetch_within_margin(proxy.addr("main"), h2, "hung").await;
        assert!(
            body.is_err(),
            "h2={h2}: a truncated body arrived as complete ({status}, {body:?})"
        );
    }
}

/// An upstream answering in a transfer coding besides chunked: hyper would undo only the
/// chunking, and the body would reach the client still coded with nothing saying so. The
/// client gets a 502 instead, over HTTP/1.1 and HTTP/2.
#[tokio::test]
async fn a_response_in_a_foreign_transfer_coding_is_a_502() {
    let (bad, _server) = bad_upstream(Fault::CodedBody).await;
    let proxy = Proxy::start(&simple_config("", &[bad], ""));
    for h2 in [false, true] {
        let (status, body) = fetch_within_margin(proxy.addr("main"), h2, "hung").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "h2={h2}: {body:?}");
        let body = body.expect("the 502's own body");
        assert!(
            !body.windows(5).any(|w| w == b"hello"),
            "h2={h2}: the coded body got through: {body:?}"
        );
    }
    // An answer to HEAD has no body to decode, whatever coding its head names.
    let got = send(proxy.addr("main"), request("HEAD", "/", &[]), false).await;
    assert_eq!(got.status, StatusCode::OK);
}

/// A response framed by `Transfer-Encoding` and naming a `Content-Length` too is read as
/// chunked, and its `Content-Length` goes (RFC 9112 §6.3): passed on, it would frame the body
/// for the client, cutting it short.
#[tokio::test]
async fn a_chunked_response_loses_its_content_length() {
    let (bad, _server) = bad_upstream(Fault::LengthAndChunked).await;
    let proxy = Proxy::start(&simple_config("", &[bad], ""));
    for h2 in [false, true] {
        let got = send(proxy.addr("main"), request("GET", "/", &[]), h2).await;
        assert_eq!(got.status, StatusCode::OK, "h2={h2}");
        assert_eq!(got.text(), "0123456789", "h2={h2}");
        assert_ne!(got.header("content-length"), Some("5"), "h2={h2}");
    }
}

/// An upstream that stops reading in the middle of an upload: the body stops moving, and the
/// route timeout (which waits for the end of a request whose body keeps moving) ends it with a
/// 504 instead of letting it hang.
#[tokio::test]
async fn an_upload_the_upstream_stopped_reading_gets_a_504() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        // Accepts and holds every connection, reading nothing.
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let proxy = Proxy::start(&simple_config("", &[upstream], "            timeout: 1s\n"));
    let tcp = TcpStream::connect(proxy.addr("main"))
        .await
        .expect("connect");
    let (mut reader, mut writer) = tcp.into_split();
    tokio::spawn(async move {
        // 64 MiB announced: far more than the sockets between here and the upstream buffer.
        let head = b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 67108864\r\n\r\n";
        if writer.write_all(head).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..1024 {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(HANG_MARGIN, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the stalled upload hung");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 504"), "{got}");
}

/// An upstream that stalls in the middle of its body: the route's idle timeout cuts it off.
#[tokio::test]
async fn a_body_that_stalls_is_cut_at_the_idle_timeout() {
    let (bad, _server) = bad_upstream(Fault::StalledBody).await;
    let proxy = Proxy::start(&simple_config("", &[bad], "            idle_timeout: 1s\n"));
    for h2 in [false, true] {
        let (status, body) =
            fetch_within_margin(proxy.addr("main"), h2, "the stalled body held the client").await;
        assert_eq!(status, StatusCode::OK, "h2={h2}");
        assert!(body.is_err(), "h2={h2}: {body:?}");
    }
}

/// An upstream that trickles its body for ever, never silent long enough for the idle timeout:
/// the route timeout (Envoy's: until the response is complete) cuts it off, and counts it.
#[tokio::test]
async fn a_body_that_outlives_the_route_timeout_is_cut_there() {
    let (bad, _server) = bad_upstream(Fault::TricklingBody).await;
    // 2 s: ample for the head to arrive first on a loaded machine; the body never ends.
    let proxy = Proxy::start(&simple_config("", &[bad], "            timeout: 2s\n"));
    for h2 in [false, true] {
        let (status, body) =
            fetch_within_margin(proxy.addr("main"), h2, "the trickling body held the client").await;
        assert_eq!(status, StatusCode::OK, "h2={h2}");
        assert!(body.is_err(), "h2={h2}: {body:?}");
    }
    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    let timeouts = metric_sum(
        &stats,
        "wasmesh_upstream_requests_total{cluster=\"backend\",outcome=\"timeout\"}",
    );
    assert_eq!(timeouts, 2.0, "{stats}");
}

/// `timeout: 0s` turns the route timeout off (as in Envoy): a slow body arrives whole.
#[tokio::test]
async fn a_route_timeout_of_zero_lets_a_slow_body_finish() {
    let (slow, _server) = bad_upstream(Fault::SlowBody).await;
    let proxy = Proxy::start(&simple_config("", &[slow], "            timeout: 0s\n"));
    for h2 in [false, true] {
        let (status, body) =
            fetch_within_margin(proxy.addr("main"), h2, "the slow body never finished").await;
        assert_eq!(status, StatusCode::OK, "h2={h2}");
        assert_eq!(body.as_deref(), Ok(&b"xxxxxxxxxxxxxxx"[..]), "h2={h2}");
    }
}

fn wasmesh(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmesh"))
        .args(args)
        .output()
        .expect("run wasmesh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn stamp(addr: SocketAddr) -> Option<String> {
    get(addr, "/").await.header("x-stamp").map(str::to_string)
}

/// The registry as a hostile upstream of modules: a blob tampered with on its disk. Pulling
/// fails loudly, and a proxy following the tag that now names it keeps its previous module
/// until the registry serves the real bytes again.
// The registry serves from this runtime while `Proxy::start` blocks waiting for the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_module_in_the_registry_never_replaces_the_running_one() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("registry");
    let registry = registry(&root).await;
    let host = registry.local_addr();
    let live = format!("oci://{host}/filters/stamp:live");
    push(&live, &stamp_module("v1")).await;

    let upstream = Upstream::named("up").await;
    let cache = tempfile::tempdir().expect("cache");
    let yaml = simple_config("", &[upstream.addr], "")
        .replace(
            "    header_read_timeout: 1s\n",
            "    header_read_timeout: 1s\n    filter_chain: edge\n",
        )
        .replace(
            "admin:",
            &format!(
                "registry:\n  cache_dir: \"{}\"\nfilter_chains:\n  - name: edge\n    plugins: []\nadmin:",
                cache.path().display()
            ),
        );
    let proxy = Proxy::start(&yaml);
    let (addr, admin) = (proxy.addr("main"), proxy.admin.expect("admin").to_string());
    // The README's way: point the chain at the tag and follow it.
    let (ok, out) = wasmesh(&[
        "chain",
        "set",
        "edge",
        "--plugin",
        &live,
        "--follow",
        "--poll-interval",
        "200ms",
        "--admin",
        &admin,
    ]);
    assert!(ok, "{out}");
    assert!(
        eventually(Duration::from_secs(30), async || stamp(addr)
            .await
            .as_deref()
            == Some("v1"))
        .await
    );

    // v2 goes in under another tag, its module blob is tampered with on the registry's disk,
    // and then the followed tag is moved to it (the blob is there already, so the push does
    // not send it again).
    let v2 = stamp_module("v2");
    push(&format!("oci://{host}/filters/stamp:staging"), &v2).await;
    let layer = wasmesh_registry::store::Digest::sha256_of(&v2);
    let blob = root.join("blobs/sha256").join(layer.hex());
    let original = std::fs::read(&blob).expect("the module blob");
    let mut tampered = original.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    std::fs::write(&blob, &tampered).expect("tamper");
    let v2_digest = push(&live, &v2).await;

    // Pulling it fails, loudly, and writes nothing.
    let out_file = dir.path().join("pulled.wasm");
    let (ok, out) = wasmesh(&[
        "filter",
        "pull",
        &live,
        "-o",
        out_file.to_str().expect("utf-8 path"),
    ]);
    assert!(!ok, "a tampered module was pulled: {out}");
    assert!(out.contains("digest"), "{out}");
    assert!(!out_file.exists(), "the tampered module was written out");

    // The proxy saw the tag move, could not verify what it names, and keeps v1.
    assert!(
        eventually(Duration::from_secs(30), async || get_admin_text(
            proxy.admin.expect("admin"),
            "/config/status"
        )
        .contains(&v2_digest))
        .await,
        "the follower never noticed the moved tag"
    );
    for _ in 0..10 {
        assert_eq!(stamp(addr).await.as_deref(), Some("v1"));
    }
    let chain = get_admin_text(proxy.admin.expect("admin"), "/chains/edge");
    assert!(!chain.contains(&v2_digest), "{chain}");

    // Once the registry serves the real bytes again, the roll-out completes.
    std::fs::write(&blob, &original).expect("restore");
    assert!(
        eventually(Duration::from_secs(30), async || stamp(addr)
            .await
            .as_deref()
            == Some("v2"))
        .await,
        "the verified module never rolled out"
    );
    registry.shutdown().await;
}
