//! A hostile filter (`host-abi/test-programs/hostile`) in the real proxy: traps in every
//! callback, runaway loops, memory and recursion, floods, a pause that never ends, traps in
//! ticks, queue and callout callbacks, and out-of-bounds pointers. For each: the failure policy
//! applies, other routes keep serving, `wasmesh_filter_failures_total{plugin,kind}` counts it,
//! and the failed replica is rebuilt (the filter's `x-hostile-configured` count grows).

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::{TcpListener, TcpStream};

/// Every exchange ends well within this, or the proxy hung.
const HANG: Duration = Duration::from_secs(90);

fn config(backend: SocketAddr, trailers: SocketAddr, policy: &str, extra_config: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "127.0.0.1:0"
    route_config: main
    header_read_timeout: 5s
routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: hostile
            match: {{ prefix: "/hostile" }}
            cluster: backend
            timeout: 2s
            filter_chain: hostile
          - name: trailers
            match: {{ prefix: "/trailers" }}
            cluster: trailers
            filter_chain: hostile
          - name: flood
            match: {{ prefix: "/flood" }}
            cluster: backend
            timeout: 60s
            filter_chain: flood
          - name: plain
            match: {{ prefix: "/" }}
            cluster: backend
clusters:
  - name: backend
    endpoints: ["{backend}"]
  - name: trailers
    endpoints: ["{trailers}"]
    protocol: http2
filter_chains:
  - name: hostile
    plugins:
      - name: hostile
        source: "file://{wasm}"
        config: "{extra_config}"
        vm_id: hostile
        failure_policy: {policy}
        deadline: 1s
        memory_limit: 16777216
  - name: flood
    plugins:
      - name: flood
        source: "file://{wasm}"
        vm_id: flood
        failure_policy: fail_closed
        deadline: 60s
        memory_limit: 33554432
admin:
  address: "127.0.0.1:0"
"#,
        wasm = wasmesh_test_programs::HOSTILE_WASM,
    )
}

/// An h2c upstream whose every answer is `200 upstream body` followed by trailer
/// `x-upstream-trailer: yes` (the test `Upstream` answers without trailers).
async fn trailer_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    let mut trailers = HeaderMap::new();
                    trailers.insert("x-upstream-trailer", "yes".parse().expect("value"));
                    let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = vec![
                        Ok(http_body::Frame::data(Bytes::from_static(b"upstream body"))),
                        Ok(http_body::Frame::trailers(trailers)),
                    ];
                    Ok::<_, Infallible>(Response::new(StreamBody::new(futures_util::stream::iter(
                        frames,
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// What the client got: the body is an error when the stream was cut short (after its head,
/// or before it: then the status is 599, which no server sends here, and the body holds the
/// error).
struct Outcome {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes, String>,
}

impl Outcome {
    fn cut_short(&self) -> bool {
        self.body.is_err()
    }
}

impl Outcome {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One request over a fresh h2c connection, with a body and request trailers (so every
/// request callback runs), and `x-hostile: words`.
async fn exchange(addr: SocketAddr, path: &str, words: &str) -> Outcome {
    let run = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-client-trailer", "yes".parse().expect("value"));
        let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"client body"))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let mut req = Request::builder()
            .method("POST")
            .uri(format!("http://test.local:{}{path}", addr.port()))
            .header("te", "trailers")
            .header("x-client", "kept");
        if !words.is_empty() {
            req = req.header("x-hostile", words);
        }
        let req = req
            .body(StreamBody::new(futures_util::stream::iter(frames)))
            .expect("request");
        let response = match sender.send_request(req).await {
            Ok(response) => response,
            // Reset before the head arrived (h2 may deliver the reset with the head).
            Err(err) => {
                return Outcome {
                    status: StatusCode::from_u16(599).expect("a status"),
                    headers: HeaderMap::new(),
                    body: Err(err.to_string()),
                };
            }
        };
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| e.to_string());
        Outcome {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(HANG, run)
        .await
        .unwrap_or_else(|_| panic!("{path} with {words:?} hung"))
}

/// The value of one Prometheus sample (`name{labels}`), 0 when absent.
fn failures(admin: SocketAddr, plugin: &str, kind: &str) -> f64 {
    metric(
        &get_admin_text(admin, "/stats"),
        &format!("wasmesh_filter_failures_total{{plugin=\"{plugin}\",kind=\"{kind}\"}}"),
    )
}

/// How many root contexts of the hostile filter have been configured, as a healthy request
/// reports it.
async fn configured(addr: SocketAddr) -> u64 {
    let got = exchange(addr, "/hostile", "").await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "a clean request: {:?}",
        got.body
    );
    assert_eq!(got.header("x-hostile"), Some("ok"));
    got.header("x-hostile-configured")
        .and_then(|v| v.parse().ok())
        .expect("x-hostile-configured")
}

/// Clean requests until one runs on a replica built after `before` root contexts were
/// configured (replicas are picked round robin, one per core: a bounded number of requests
/// reaches the rebuilt one). Each of them must succeed.
async fn rebuilt_after(addr: SocketAddr, before: u64) -> bool {
    for _ in 0..64 {
        if configured(addr).await > before {
            return true;
        }
    }
    false
}

async fn plain_route_serves(addr: SocketAddr) {
    let got = exchange(addr, "/", "").await;
    assert_eq!(got.status, StatusCode::OK, "the plain route");
    assert_eq!(got.body.as_deref(), Ok(&b"alpha"[..]));
}

#[tokio::test]
async fn fail_closed_traps_in_every_callback_are_contained() {
    let backend = Upstream::named("alpha").await;
    let (trailers, _task) = trailer_upstream().await;
    let proxy = Proxy::start(&config(backend.addr, trailers, "fail_closed", ""));
    let (addr, admin) = (proxy.addr("main"), proxy.admin.expect("admin"));

    // (words, path, what the client gets, failure kind)
    let cases = [
        ("trap-request-headers", "/hostile", "503", "trap"),
        ("loop", "/hostile", "503", "timeout"),
        ("grow", "/hostile", "503", "trap"),
        ("recurse", "/hostile", "503", "trap"),
        ("headers-flood", "/hostile", "503", "limit"),
        // The upstream may have the request's head when these fail: the answer is 503 all
        // the same, and not the upstream's fault.
        (
            "trap-request-body",
            "/hostile",
            "503 after the head",
            "trap",
        ),
        (
            "trap-request-trailers",
            "/hostile",
            "503 after the head",
            "trap",
        ),
        ("body-flood", "/hostile", "503 after the head", "limit"),
        ("trap-response-headers", "/hostile", "5xx", "trap"),
        // The response's head is gone when these fail: the body is cut short.
        ("trap-response-body", "/hostile", "cut", "trap"),
        ("trap-response-trailers", "/trailers", "cut", "trap"),
        // After the exchange: the client got its answer.
        ("trap-log", "/hostile", "200", "trap"),
        ("trap-done", "/hostile", "200", "trap"),
    ];
    for (words, path, expected, kind) in cases {
        let before = configured(addr).await;
        let counted = failures(admin, "hostile", kind);
        let backend_hits = backend.hits();
        let got = exchange(addr, path, words).await;
        match expected {
            "503" => {
                assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE, "{words}");
                assert_eq!(
                    backend.hits(),
                    backend_hits,
                    "{words}: never reached the upstream"
                );
            }
            "503 after the head" => {
                assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE, "{words}");
                // Not counted as an upstream reset (which outlier detection would hold
                // against the endpoint).
                let stats = get_admin_text(admin, "/stats");
                let resets =
                    "wasmesh_upstream_requests_total{cluster=\"backend\",outcome=\"reset\"}";
                assert_eq!(
                    metric(&stats, resets),
                    0.0,
                    "{words}: the upstream was blamed"
                );
            }
            "5xx" => assert!(got.status.is_server_error(), "{words}: {}", got.status),
            "cut" => assert!(
                got.cut_short(),
                "{words}: the response must not look complete ({})",
                got.status
            ),
            _ => {
                assert_eq!(got.status, StatusCode::OK, "{words}");
                assert!(got.body.is_ok(), "{words}");
            }
        }
        assert!(
            eventually(HANG, async || failures(admin, "hostile", kind) > counted).await,
            "{words}: no {kind} failure counted"
        );
        plain_route_serves(addr).await;
        assert!(
            rebuilt_after(addr, before).await,
            "{words}: replica rebuilt"
        );
    }
}

#[tokio::test]
async fn fail_open_skips_the_failed_filter() {
    let backend = Upstream::named("alpha").await;
    let (trailers, _task) = trailer_upstream().await;
    let proxy = Proxy::start(&config(backend.addr, trailers, "fail_open", ""));
    let (addr, admin) = (proxy.addr("main"), proxy.admin.expect("admin"));
    for (words, kind) in [
        ("trap-request-headers", "trap"),
        ("loop", "timeout"),
        ("grow", "trap"),
        ("recurse", "trap"),
        ("trap-request-body", "trap"),
        ("trap-request-trailers", "trap"),
        ("trap-response-headers", "trap"),
        ("trap-response-body", "trap"),
    ] {
        let before = configured(addr).await;
        let counted = failures(admin, "hostile", kind);
        let got = exchange(addr, "/hostile", words).await;
        assert_eq!(got.status, StatusCode::OK, "{words}: {:?}", got.body);
        assert_eq!(got.body.as_deref(), Ok(&b"alpha"[..]), "{words}");
        let seen = backend.last_seen();
        assert_eq!(
            seen.headers.get("x-client").map(|v| v.as_bytes()),
            Some(&b"kept"[..]),
            "{words}: the request went on as the client sent it"
        );
        assert!(
            eventually(HANG, async || failures(admin, "hostile", kind) > counted).await,
            "{words}: no {kind} failure counted"
        );
        assert!(
            rebuilt_after(addr, before).await,
            "{words}: replica rebuilt"
        );
    }
}

/// A filter that pauses and never resumes: the route's timeout ends the wait, the failure
/// policy answers, and the other routes never notice.
#[tokio::test]
async fn a_pause_that_never_ends_is_cut_at_the_route_timeout() {
    let backend = Upstream::named("alpha").await;
    let (trailers, _task) = trailer_upstream().await;
    for (policy, expected) in [
        ("fail_closed", StatusCode::SERVICE_UNAVAILABLE),
        ("fail_open", StatusCode::OK),
    ] {
        let proxy = Proxy::start(&config(backend.addr, trailers, policy, ""));
        let addr = proxy.addr("main");
        // Several at once, on every replica; the plain route answers meanwhile.
        let paused: Vec<_> = (0..8)
            .map(|_| tokio::spawn(async move { exchange(addr, "/hostile", "pause").await }))
            .collect();
        plain_route_serves(addr).await;
        for request in paused {
            let got = request.await.expect("paused request");
            assert_eq!(got.status, expected, "{policy}");
        }
        assert!(configured(addr).await > 0);
    }
}

/// Floods of metric definitions, queue items and shared data through the proxy: refused past
/// their bounds (a full queue drops its oldest items instead), counted, and the proxy's memory
/// stays bounded.
#[tokio::test]
async fn floods_are_bounded_and_counted() {
    let backend = Upstream::named("alpha").await;
    let (trailers, _task) = trailer_upstream().await;
    let proxy = Proxy::start(&config(backend.addr, trailers, "fail_closed", ""));
    let (addr, admin) = (proxy.addr("main"), proxy.admin.expect("admin"));
    // (words, limit, refusals the filter saw, items refused or dropped the proxy counted)
    for (words, limit, refused, counted) in [
        ("metric-flood", "metrics", Some(100_000 - 1024), None),
        (
            "queue-flood",
            "shared_queue_items",
            Some(0),
            Some(100_000 - 10_000),
        ),
        ("shared-flood", "shared_data", None, None),
    ] {
        let got = exchange(addr, "/flood", words).await;
        assert_eq!(got.status, StatusCode::OK, "{words}: {:?}", got.body);
        let seen: u64 = backend.last_seen().headers["x-hostile-refused"]
            .to_str()
            .expect("text")
            .parse()
            .expect("number");
        if let Some(refused) = refused {
            assert_eq!(seen, refused, "{words}");
        }
        let counted = counted.unwrap_or(seen);
        assert!(counted > 0, "{words}");
        let stats = get_admin_text(admin, "/stats");
        assert_eq!(
            metric(
                &stats,
                &format!(
                    "wasmesh_filter_limit_exceeded_total{{plugin=\"flood\",limit=\"{limit}\"}}"
                )
            ),
            counted as f64,
            "{words}"
        );
        plain_route_serves(addr).await;
    }
    let rss = rss_kib(proxy.pid());
    assert!(
        rss < 1024 * 1024,
        "the proxy holds {rss} KiB after the floods"
    );
}

/// The proxy process's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Traps outside any request: in a tick, in `proxy_on_queue_ready` and in
/// `proxy_on_http_call_response`. Each is counted and contained.
#[tokio::test]
async fn traps_in_ticks_queues_and_callout_answers_are_counted() {
    let backend = Upstream::named("alpha").await;
    let (trailers, _task) = trailer_upstream().await;
    let proxy = Proxy::start(&config(backend.addr, trailers, "fail_open", "tick-trap"));
    let (addr, admin) = (proxy.addr("main"), proxy.admin.expect("admin"));
    // Exactly one tick traps (the filter guards it with a compare-and-swap).
    assert!(
        eventually(HANG, async || failures(admin, "hostile", "trap") >= 1.0).await,
        "the tick's trap was counted"
    );
    plain_route_serves(addr).await;

    let counted = failures(admin, "hostile", "trap");
    let got = exchange(addr, "/hostile", "queue-trap").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body.as_deref(), Ok(&b"queued"[..]));
    assert!(
        eventually(HANG, async || failures(admin, "hostile", "trap") > counted).await,
        "the queue callback's trap was counted"
    );

    let counted = failures(admin, "hostile", "trap");
    let got = exchange(addr, "/hostile", "callout-trap").await;
    // The callout's answer trapped: the paused request is failed (fail_open: it goes on
    // unfiltered) rather than left waiting.
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    assert_eq!(
        backend
            .last_seen()
            .headers
            .get("x-client")
            .map(|v| v.as_bytes()),
        Some(&b"kept"[..]),
        "the request went on as the client sent it"
    );
    assert!(
        backend
            .seen
            .lock()
            .expect("seen")
            .iter()
            .any(|s| s.path == "/hostile-callout"),
        "the callout was made"
    );
    assert!(
        eventually(HANG, async || failures(admin, "hostile", "trap") > counted).await,
        "the callout answer's trap was counted"
    );
    assert!(configured(addr).await > 0);
}

/// Out-of-bounds pointers into host functions, through the real proxy: every call is answered
/// with a status and the request goes on.
#[tokio::test]
async fn out_of_bounds_pointers_get_statuses_and_the_request_goes_on() {
    let backend = Upstream::named("alpha").await;
    let (trailers, _task) = trailer_upstream().await;
    let proxy = Proxy::start(&config(backend.addr, trailers, "fail_closed", ""));
    let got = exchange(proxy.addr("main"), "/hostile", "oob").await;
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    let report = backend.last_seen().headers["x-hostile-oob"]
        .to_str()
        .expect("text")
        .to_string();
    let answers: Vec<(&str, &str)> = report
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    assert!(answers.len() >= 20, "{report}");
    for (name, status) in answers {
        assert_ne!(
            status, "0",
            "{name} succeeded with an out-of-bounds pointer"
        );
    }
}

/// A module that traps while starting is refused at start-up, and by a reload while the
/// running configuration keeps serving.
#[tokio::test]
async fn a_filter_trapping_at_start_is_refused_and_the_running_config_stays() {
    let backend = Upstream::named("alpha").await;
    let (trailers, _task) = trailer_upstream().await;
    let bad = config(backend.addr, trailers, "fail_closed", "trap-configure");
    let (ok, output, _) = validate_and_run(&bad);
    assert!(!ok, "started with a filter trapping in on_configure");
    assert!(output.contains("hostile"), "{output}");

    let proxy = Proxy::start(&config(backend.addr, trailers, "fail_closed", ""));
    let admin = proxy.admin.expect("admin");
    for word in ["trap-vm-start", "trap-configure", "fail-configure"] {
        let chain = format!(
            "plugins:\n  - name: hostile\n    source: \"file://{}\"\n    config: \"{word}\"\n",
            wasmesh_test_programs::HOSTILE_WASM
        );
        let (status, body) = admin_call(admin, "PUT", "/chains/hostile", &chain);
        assert_eq!(status, 400, "{word}: {body}");
        let got = exchange(proxy.addr("main"), "/hostile", "").await;
        assert_eq!(
            got.status,
            StatusCode::OK,
            "{word}: the running chain serves"
        );
    }
}

/// Runs `wasmesh run` on `yaml` until it exits (a configuration that cannot start makes it exit
/// at once); returns whether it succeeded and what it printed.
fn validate_and_run(yaml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmesh"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, path.display().to_string())
}
