//! Wasm filters in the real proxy: a filter built from the published `proxy-wasm` SDK edits
//! headers on the wire both ways, answers locally, reads properties and reports metrics; a
//! trapping, looping or memory-hungry filter is contained by its failure policy while the proxy
//! keeps serving.

mod support;

use http::StatusCode;
use support::*;

fn config_with_chain(upstream: std::net::SocketAddr, failure_policy: &str, extra: &str) -> String {
    let base = simple_config("", &[upstream], "            filter_chain: probe\n");
    format!(
        r#"{base}
filter_chains:
  - name: probe
    plugins:
      - name: probe
        source: "file://{wasm}"
        config: "from-config"
        vm_id: probe
        failure_policy: {failure_policy}
        deadline: 1s
        memory_limit: 16777216
{extra}"#,
        wasm = wasmesh_test_programs::PROBE_WASM,
    )
}

#[tokio::test]
async fn filter_edits_request_and_response_headers_on_the_wire() {
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start(&config_with_chain(upstream.addr, "fail_closed", ""));
    let got = send(
        proxy.addr("main"),
        request(
            "GET",
            "/hello",
            &[("x-remove-me", "1"), ("x-probe-property", "request.path")],
        ),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.header("x-probe"), Some("response"));
    let seen = upstream.last_seen();
    assert_eq!(seen.headers["x-probe-config"], "from-config");
    assert!(!seen.headers.contains_key("x-remove-me"));
    assert_eq!(seen.headers["x-property"], "/hello");
    assert_eq!(seen.headers["x-probe-count"], "1");
    assert!(
        seen.headers.contains_key("x-forwarded-for"),
        "filters run after the router's own headers"
    );

    let got = get(proxy.addr("main"), "/again").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        upstream.last_seen().headers["x-probe-count"],
        "2",
        "shared data spans requests"
    );

    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    assert!(
        stats.contains("wasmesh_filter_probe_requests{plugin=\"probe\"} 2"),
        "{stats}"
    );
}

#[tokio::test]
async fn filter_local_response_never_reaches_the_upstream() {
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start(&config_with_chain(upstream.addr, "fail_closed", ""));
    let got = get(proxy.addr("main"), "/local").await;
    assert_eq!(got.status.as_u16(), 418);
    assert_eq!(got.header("x-local"), Some("yes"));
    assert_eq!(got.text(), "local reply");
    assert_eq!(upstream.hits(), 0);
}

/// A filter's local answer goes back through the response callbacks of the filters that saw
/// the request (Envoy's encoder chain: the answering one included), and `on_log` sees it.
#[tokio::test]
async fn a_local_answer_goes_back_through_the_earlier_filters() {
    let upstream = Upstream::named("alpha").await;
    let base = simple_config("", &[upstream.addr], "            filter_chain: both\n");
    let config = format!(
        r#"{base}
filter_chains:
  - name: both
    plugins:
      - name: decorate
        source: "file://{headers}"
        config: {{ response: {{ set: {{ x-decorated: "yes" }} }} }}
        deadline: 1s
      - name: probe
        source: "file://{probe}"
        vm_id: probe
        deadline: 1s
"#,
        headers = wasmesh_test_programs::HEADERS_WASM,
        probe = wasmesh_test_programs::PROBE_WASM,
    );
    let proxy = Proxy::start(&config);
    let addr = proxy.addr("main");
    let got = send(
        addr,
        request(
            "GET",
            "/local",
            &[("x-probe-log-properties", "response.code")],
        ),
        false,
    )
    .await;
    assert_eq!(got.status.as_u16(), 418, "{}", got.text());
    assert_eq!(got.text(), "local reply");
    assert_eq!(got.header("x-local"), Some("yes"));
    assert_eq!(
        got.header("x-decorated"),
        Some("yes"),
        "the earlier filter saw the answer"
    );
    assert_eq!(
        got.header("x-probe"),
        Some("response"),
        "so did the one that answered"
    );
    assert_eq!(upstream.hits(), 0);

    let mut logged = String::new();
    assert!(
        eventually(std::time::Duration::from_secs(10), async || {
            send(
                addr,
                request("GET", "/next", &[("x-probe-logged", "1")]),
                false,
            )
            .await;
            logged = upstream
                .last_seen()
                .headers
                .get("x-probe-logged")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            !logged.is_empty()
        })
        .await,
        "on_log never recorded the properties"
    );
    assert_eq!(
        logged,
        format!("response.code={}", hex(&418i64.to_le_bytes()))
    );
}

/// Filter state is the request's, shared by its filters as in Envoy: what the first plugin
/// sets with `proxy_set_property`, the second reads with `proxy_get_property`.
#[tokio::test]
async fn filter_state_set_by_one_filter_is_read_by_the_next() {
    let upstream = Upstream::named("alpha").await;
    let base = simple_config("", &[upstream.addr], "            filter_chain: two\n");
    let config = format!(
        r#"{base}
filter_chains:
  - name: two
    plugins:
      - name: first
        source: "file://{probe}"
        vm_id: first
        deadline: 1s
      - name: second
        source: "file://{probe}"
        vm_id: second
        deadline: 1s
"#,
        probe = wasmesh_test_programs::PROBE_WASM,
    );
    let proxy = Proxy::start(&config);
    // Each probe reads `x-probe-property` before it applies `x-probe-set-property`: only the
    // second can have seen the value, and only if the first's write reached it.
    let got = send(
        proxy.addr("main"),
        request(
            "GET",
            "/",
            &[
                ("x-probe-set-property", "shared.note=from-first"),
                ("x-probe-property", "shared.note"),
            ],
        ),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(upstream.last_seen().headers["x-property"], "from-first");

    // And it is the request's: the next request starts with none.
    let got = send(
        proxy.addr("main"),
        request("GET", "/", &[("x-probe-property", "shared.note")]),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(!upstream.last_seen().headers.contains_key("x-property"));
}

/// Each worker runs its streams on its own VM replica, as Envoy has one VM per worker thread:
/// a connection stays on one worker, so all its requests meet the same VM, whose own count
/// then goes up by exactly one per request (streams spread over replicas would skip).
#[tokio::test]
async fn a_workers_requests_meet_its_own_vm_replica() {
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start_with_args(
        &config_with_chain(upstream.addr, "fail_closed", ""),
        &["--concurrency", "2"],
    );
    let connections = 4;
    for _ in 0..connections {
        let tcp = tokio::net::TcpStream::connect(proxy.addr("main"))
            .await
            .expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let mut counts = Vec::new();
        for _ in 0..6 {
            let response = sender
                .send_request(request("GET", "/", &[]))
                .await
                .expect("response");
            assert_eq!(collect(response).await.status, StatusCode::OK);
            let seen = upstream.last_seen().headers["x-probe-vm-requests"].clone();
            counts.push(
                seen.to_str()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .expect("a count"),
            );
        }
        assert!(
            counts.windows(2).all(|w| w[1] == w[0] + 1),
            "one connection's requests met different VMs: {counts:?}"
        );
    }
    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    let accepted: f64 = stats
        .lines()
        .filter(|l| l.starts_with("wasmesh_worker_connections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(accepted, f64::from(connections), "{stats}");
}

/// A filter spinning until its 1 s deadline holds its worker's event loop that long, and the
/// worker's watchdog (a 250 ms timer) reports the stall: a tick due during the spin runs at
/// least 750 ms late, whichever worker took the connection.
#[tokio::test]
async fn a_stalled_worker_shows_in_its_loop_delay() {
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start(&config_with_chain(upstream.addr, "fail_open", ""));
    let got = send(
        proxy.addr("main"),
        request("GET", "/", &[("x-probe-loop", "1")]),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    let admin = proxy.admin.expect("admin");
    // The late tick is recorded when it runs, just after the spin.
    let mut stalled = 0.0;
    let reported = eventually(std::time::Duration::from_secs(10), async || {
        stalled = get_admin_text(admin, "/stats")
            .lines()
            .filter(|l| l.starts_with("wasmesh_worker_loop_delay_seconds_sum{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        stalled >= 0.75
    })
    .await;
    assert!(reported, "loop delay summed to {stalled} s");
}

#[tokio::test]
async fn failing_filters_follow_their_failure_policy_and_the_proxy_keeps_serving() {
    let upstream = Upstream::named("alpha").await;
    for (policy, expected) in [
        ("fail_closed", StatusCode::SERVICE_UNAVAILABLE),
        ("fail_open", StatusCode::OK),
    ] {
        let proxy = Proxy::start(&config_with_chain(upstream.addr, policy, ""));
        for trigger in ["x-probe-trap", "x-probe-loop", "x-probe-grow"] {
            let got = send(
                proxy.addr("main"),
                request("GET", "/", &[(trigger, "1")]),
                false,
            )
            .await;
            assert_eq!(got.status, expected, "{policy} {trigger}: {}", got.text());
            // The next ordinary requests are served by rebuilt replicas.
            for _ in 0..3 {
                let ok = get(proxy.addr("main"), "/").await;
                assert_eq!(ok.status, StatusCode::OK, "{policy} after {trigger}");
                assert_eq!(ok.header("x-probe"), Some("response"));
            }
        }
        let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
        for kind in ["trap", "timeout"] {
            assert!(
                stats.contains(&format!(
                    "wasmesh_filter_failures_total{{plugin=\"probe\",kind=\"{kind}\"}}"
                )),
                "{policy}: no {kind} counted:\n{stats}"
            );
        }
    }
}

#[tokio::test]
async fn a_plugin_that_fails_to_configure_rejects_the_config() {
    let upstream = Upstream::named("alpha").await;
    let yaml = config_with_chain(upstream.addr, "fail_closed", "")
        .replace("\"from-config\"", "\"reject\"");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmesh"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("proxy_on_configure returned false"),
        "{stderr}"
    );
}

/// One route to `upstream` through the stock `headers` filter, configured with `request` and
/// `response` (flow-style YAML).
fn with_headers_filter(upstream: std::net::SocketAddr, request: &str, response: &str) -> String {
    let base = simple_config("", &[upstream], "            filter_chain: edge\n");
    format!(
        r#"{base}
filter_chains:
  - name: edge
    plugins:
      - name: headers
        source: "file://{wasm}"
        config:
          request: {request}
          response: {response}
"#,
        wasm = wasmesh_test_programs::HEADERS_WASM,
    )
}

#[tokio::test]
async fn stock_headers_filter() {
    let upstream = Upstream::named("alpha").await;
    let yaml = with_headers_filter(
        upstream.addr,
        "{ set: { x-env: prod }, add: { x-tag: b }, remove: [x-debug] }",
        "{ set: { x-served-by: wasmesh }, remove: [x-upstream] }",
    );
    let proxy = Proxy::start(&yaml);
    let got = send(
        proxy.addr("main"),
        request(
            "GET",
            "/",
            &[("x-env", "dev"), ("x-tag", "a"), ("x-debug", "1")],
        ),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("x-served-by"), Some("wasmesh"));
    assert_eq!(got.header("x-upstream"), None);
    let seen = upstream.last_seen();
    assert_eq!(seen.headers["x-env"], "prod");
    let tags: Vec<_> = seen
        .headers
        .get_all("x-tag")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    assert_eq!(tags, ["a", "b"]);
    assert!(!seen.headers.contains_key("x-debug"));
}

#[tokio::test]
async fn filter_rewrites_request_and_response_bodies() {
    let upstream = Upstream::with(|seen: Seen| async move {
        reply(StatusCode::OK, "echo", &String::from_utf8_lossy(&seen.body))
    })
    .await;
    let proxy = Proxy::start(&config_with_chain(upstream.addr, "fail_closed", ""));
    for h2 in [false, true] {
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://t:{}/echo", proxy.addr("main").port()))
            .header("host", "t")
            .header("x-probe-body", "1")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"hello body",
            )))
            .expect("request");
        let got = send(proxy.addr("main"), req, h2).await;
        assert_eq!(got.status, StatusCode::OK, "h2={h2}: {}", got.text());
        assert_eq!(upstream.last_seen().body, "HELLO BODY", "h2={h2}");
        assert_eq!(got.text(), "HELLO BODY [probed]", "h2={h2}");
    }
    // Without the header the same filter leaves bodies alone.
    let req = http::Request::builder()
        .method("POST")
        .uri("/echo")
        .header("host", "t")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"plain",
        )))
        .expect("request");
    let got = send(proxy.addr("main"), req, false).await;
    assert_eq!(got.text(), "plain");
}

#[tokio::test]
async fn filter_calls_out_through_a_cluster_then_resumes_or_denies() {
    let upstream = Upstream::with(|seen: Seen| async move {
        match seen.path.as_str() {
            "/allow" => reply(StatusCode::OK, "auth", "granted"),
            "/deny" => reply(StatusCode::FORBIDDEN, "auth", "no"),
            _ => reply(StatusCode::OK, "main", "main"),
        }
    })
    .await;
    let proxy = Proxy::start(&config_with_chain(upstream.addr, "fail_closed", ""));

    let got = send(
        proxy.addr("main"),
        request("GET", "/app", &[("x-probe-callout", "/allow")]),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "main");
    let seen = upstream.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 2, "the callout, then the request itself");
    assert_eq!(seen[0].path, "/allow");
    assert_eq!(seen[0].headers["host"], "auth");
    assert_eq!(seen[1].path, "/app");
    assert_eq!(
        seen[1].headers.get("x-callout-body").map(|v| v.as_bytes()),
        Some(&b"granted"[..]),
        "edited after the callout: {:?}",
        seen[1].headers
    );

    let got = send(
        proxy.addr("main"),
        request("GET", "/app", &[("x-probe-callout", "/deny")]),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert_eq!(got.header("x-denied-by"), Some("probe"));
    assert_eq!(got.text(), "denied");
    let seen = upstream.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 3, "a denied request never reaches the upstream");
    assert_eq!(seen[2].path, "/deny");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `on_log` sees the whole exchange through Envoy's attributes, in Envoy's encodings: the
/// final status, body sizes both ways, the protocol, the upstream that answered, how long it
/// took, and no response flags for a normal answer.
#[tokio::test]
async fn on_log_sees_the_whole_exchange() {
    let upstream = Upstream::with(|_| async { reply(StatusCode::CREATED, "up", "hello") }).await;
    let proxy = Proxy::start(&config_with_chain(upstream.addr, "fail_closed", ""));
    let addr = proxy.addr("main");
    let properties = "response.code,response.size,request.size,request.protocol,\
        upstream.address,response.flags,request.useragent,request.duration,request.time,\
        connection.tls_version";
    let mut first = request("POST", "/log", &[("x-probe-log-properties", properties)]);
    *first.body_mut() = http_body_util::Full::new(bytes::Bytes::from_static(b"abcdef"));
    first
        .headers_mut()
        .insert("user-agent", http::HeaderValue::from_static("probe-test"));
    let got = send(addr, first, false).await;
    assert_eq!(got.status, StatusCode::CREATED);
    assert_eq!(got.text(), "hello");

    // The first request's contexts end when its response body has gone out; ask until its
    // on_log has run.
    let mut logged = String::new();
    assert!(
        eventually(std::time::Duration::from_secs(10), async || {
            send(
                addr,
                request("GET", "/next", &[("x-probe-logged", "1")]),
                false,
            )
            .await;
            logged = upstream
                .last_seen()
                .headers
                .get("x-probe-logged")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            !logged.is_empty()
        })
        .await,
        "on_log never recorded the properties"
    );
    let field = |name: &str| {
        logged
            .split(';')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing from {logged}"))
            .to_string()
    };
    let int = |n: i64| hex(&n.to_le_bytes());
    assert_eq!(field("response.code"), int(201));
    assert_eq!(field("response.size"), int(5));
    assert_eq!(field("request.size"), int(6));
    assert_eq!(field("request.protocol"), hex(b"HTTP/1.1"));
    assert_eq!(
        field("upstream.address"),
        hex(upstream.addr.to_string().as_bytes())
    );
    assert_eq!(field("response.flags"), int(0));
    assert_eq!(field("request.useragent"), hex(b"probe-test"));
    assert_eq!(field("request.duration").len(), 16, "an 8-byte duration");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    let time = i64::from_le_bytes(
        (0..8)
            .map(|i| u8::from_str_radix(&field("request.time")[2 * i..2 * i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>()
            .try_into()
            .expect("8 bytes"),
    );
    assert!(
        time <= now && now - time < 600 * 1_000_000_000,
        "request.time is nanoseconds since the epoch: {time}"
    );
    assert_eq!(
        field("connection.tls_version"),
        "-",
        "plain TCP has no TLS version"
    );
}

/// What [`trailer_upstream`] saw last: a request's headers or trailers.
type Last = std::sync::Arc<std::sync::Mutex<Option<http::HeaderMap>>>;

/// The body of the request [`trailer_upstream`] saw end last.
type LastBody = std::sync::Arc<std::sync::Mutex<Option<bytes::Bytes>>>;

/// An h2c upstream that records the last request's trailers and headers (and the body of the
/// last one to end), and answers `pong` with trailer `x-up-trailer: u`.
async fn trailer_upstream() -> (std::net::SocketAddr, Last, Last, LastBody) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Last = Default::default();
    let headers: Last = Default::default();
    let body: LastBody = Default::default();
    let (record, record_headers, record_body) = (seen.clone(), headers.clone(), body.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (record, record_headers, record_body) =
                (record.clone(), record_headers.clone(), record_body.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (record, record_headers, record_body) =
                            (record.clone(), record_headers.clone(), record_body.clone());
                        async move {
                            *record_headers.lock().expect("seen") = Some(req.headers().clone());
                            let collected = req.into_body().collect().await.expect("body");
                            *record.lock().expect("seen") = collected.trailers().cloned();
                            *record_body.lock().expect("seen") = Some(collected.to_bytes());
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                body_with_trailers(b"pong", &[("x-up-trailer", "u")]),
                            ))
                        }
                    });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
            });
        }
    });
    (addr, seen, headers, body)
}

fn h2_config(upstream: std::net::SocketAddr) -> String {
    config_with_chain(upstream, "fail_closed", "")
        .replace("    endpoints: [", "    protocol: http2\n    endpoints: [")
}

/// Trailers reach the filters' trailer callbacks both ways, in Envoy's order, and what the
/// filters make of them is what the peers get.
#[tokio::test]
async fn trailers_go_through_the_filters_both_ways() {
    let (upstream, seen, _, _) = trailer_upstream().await;
    let proxy = Proxy::start(&h2_config(upstream));
    let (status, _, body, trailers) = h2c_exchange(
        proxy.addr("main"),
        &[],
        body_with_trailers(b"ping", &[("x-client-trailer", "c")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"pong");
    let upstream_trailers = seen
        .lock()
        .expect("seen")
        .clone()
        .expect("request trailers");
    assert_eq!(upstream_trailers["x-client-trailer"], "c");
    assert_eq!(upstream_trailers["x-probe-trailer"], "request");
    let trailers = trailers.expect("response trailers");
    assert_eq!(trailers["x-up-trailer"], "u");
    assert_eq!(trailers["x-probe-trailer"], "response");
}

/// In `on_log` a filter reads the response's trailers (Envoy's `response.trailers`), and
/// trailers it drops then stay dropped.
#[tokio::test]
async fn on_log_reads_the_response_trailers() {
    let (upstream, _, headers, _) = trailer_upstream().await;
    let proxy = Proxy::start(&h2_config(upstream));
    let (status, ..) = h2c_exchange(
        proxy.addr("main"),
        &[
            ("x-probe-log-properties", "response.trailers.x-up-trailer"),
            ("x-probe-log-drop-trailers", "x-up-trailer"),
        ],
        body_with_trailers(b"ping", &[]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The first stream's on_log runs once its response has gone out; ask until it has.
    let mut logged = String::new();
    assert!(
        eventually(std::time::Duration::from_secs(10), async || {
            h2c_exchange(
                proxy.addr("main"),
                &[("x-probe-logged", "1")],
                body_with_trailers(b"next", &[]),
            )
            .await;
            logged = headers
                .lock()
                .expect("seen")
                .as_ref()
                .and_then(|h| h.get("x-probe-logged"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            !logged.is_empty()
        })
        .await,
        "on_log never recorded the trailers"
    );
    let fields: Vec<&str> = logged.split(';').collect();
    let read = format!("response.trailers.x-up-trailer={}", hex(b"u"));
    assert!(fields.contains(&read.as_str()), "{logged}");
    assert!(fields.contains(&"dropped.x-up-trailer=-"), "{logged}");
}

/// A filter may add trailers in its last body callback of a body that had none.
#[tokio::test]
async fn a_filter_adds_trailers_to_a_body_that_had_none() {
    let (upstream, seen, _, _) = trailer_upstream().await;
    let proxy = Proxy::start(&h2_config(upstream));
    let (status, ..) = h2c_exchange(
        proxy.addr("main"),
        &[("x-probe-body-trailer", "1")],
        body_with_trailers(b"ping", &[]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let upstream_trailers = seen.lock().expect("seen").clone().expect("added trailers");
    assert_eq!(upstream_trailers["x-probe-added"], "body");
}

/// A filter that answers from its request body callback (having buffered the body) gets its
/// answer to the client, over both protocols; a body it lets through reaches the upstream.
#[tokio::test]
async fn a_filter_answers_from_the_request_body() {
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start(&config_with_chain(upstream.addr, "fail_closed", ""));
    for h2 in [false, true] {
        let mut denied = request("POST", "/in", &[("x-probe-body-deny", "forbidden")]);
        *denied.body_mut() =
            http_body_util::Full::new(bytes::Bytes::from_static(b"some forbidden words"));
        let got = send(proxy.addr("main"), denied, h2).await;
        assert_eq!(got.status, StatusCode::FORBIDDEN, "h2={h2}");
        assert_eq!(got.text(), "body denied");
        assert_eq!(got.header("x-probe-denied"), Some("body"));

        let mut allowed = request("POST", "/in", &[("x-probe-body-deny", "forbidden")]);
        *allowed.body_mut() = http_body_util::Full::new(bytes::Bytes::from_static(b"kind words"));
        let hits = upstream.hits();
        let got = send(proxy.addr("main"), allowed, h2).await;
        assert_eq!(got.status, StatusCode::OK, "h2={h2}");
        assert_eq!(upstream.hits(), hits + 1);
        assert_eq!(&upstream.last_seen().body[..], b"kind words");
    }
}

/// A filter that pauses at the end of the request body, to send the body to a callout, holds
/// it until the answer comes (Envoy's `StopIterationAndBuffer` at `end_of_stream`, then
/// `continueDecoding`): the upstream gets the body the answer made, over both protocols; a
/// denied request's body never reaches it.
#[tokio::test]
async fn a_filter_holds_the_request_body_for_a_callout() {
    let upstream = Upstream::with(|seen: Seen| async move {
        match seen.path.as_str() {
            "/check" => {
                let checked = format!("checked {}", String::from_utf8_lossy(&seen.body));
                reply(StatusCode::OK, "auth", &checked)
            }
            "/deny" => reply(StatusCode::FORBIDDEN, "auth", "no"),
            _ => reply(StatusCode::OK, "main", "main"),
        }
    })
    .await;
    let proxy = Proxy::start(&config_with_chain(upstream.addr, "fail_closed", ""));
    let addr = proxy.addr("main");
    let bodies_at = |path: &str| -> Vec<bytes::Bytes> {
        let seen = upstream.seen.lock().expect("seen");
        seen.iter()
            .filter(|s| s.path == path)
            .map(|s| s.body.clone())
            .collect()
    };
    for h2 in [false, true] {
        let payload = format!("payload h2={h2}");
        let mut post = request("POST", "/app", &[("x-probe-body-callout", "/check")]);
        *post.body_mut() = http_body_util::Full::new(bytes::Bytes::from(payload.clone()));
        let got = send(addr, post, h2).await;
        assert_eq!(got.status, StatusCode::OK, "h2={h2}: {}", got.text());
        assert_eq!(got.text(), "main");
        let checked = bodies_at("/check");
        assert_eq!(checked.last().map(|b| &b[..]), Some(payload.as_bytes()));
        assert_eq!(
            bodies_at("/app").last().map(|b| &b[..]),
            Some(format!("checked {payload}").as_bytes()),
            "h2={h2}: the body as the callout's answer left it"
        );
    }
    for h2 in [false, true] {
        let mut post = request("POST", "/app", &[("x-probe-body-callout", "/deny")]);
        *post.body_mut() = http_body_util::Full::new(bytes::Bytes::from_static(b"secret"));
        let got = send(addr, post, h2).await;
        assert_eq!(got.status, StatusCode::FORBIDDEN, "h2={h2}");
        assert_eq!(got.text(), "denied");
    }
    assert_eq!(bodies_at("/deny").len(), 2);
    // The request's headers went upstream before its body; the body itself never did.
    let app = bodies_at("/app");
    assert!(
        app.iter()
            .all(|b| b.starts_with(b"checked payload") || b.is_empty()),
        "{app:?}"
    );
}

/// A filter that answers in place of the upstream's 101 refuses the switch: the client gets
/// the filter's answer and its connection closes, never a tunnel to the upstream (hyper would
/// otherwise still hand the socket over once a `close` connection is done).
#[tokio::test]
async fn a_filter_answering_instead_of_a_101_leaves_no_tunnel() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = echo_upgrade_upstream().await;
    let proxy = Proxy::start(&config_with_chain(upstream, "fail_closed", ""));
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr("main"))
        .await
        .expect("connect");
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, close\r\nUpgrade: echo\r\nx-probe-deny-response: 403\r\n\r\n",
    )
    .await
    .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"denied") {
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed before the answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    // Whatever the client sends now goes nowhere: the connection closes, with no echo.
    let _ = tcp.write_all(b"ping").await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tcp.read_to_end(&mut rest),
    )
    .await;
    assert!(closed.is_ok(), "the connection stayed open");
    assert!(
        !String::from_utf8_lossy(&rest).contains("ping"),
        "tunnelled to the upstream: {rest:?}"
    );
}

/// An upstream may answer before it has read the request body, while a filter still holds
/// that body for a slow callout: the answer goes through the filter's response callbacks as
/// usual (it cannot wait for the request side's pause to end).
#[tokio::test]
async fn an_early_answer_passes_a_filter_that_holds_the_request_body() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        // The callout is slow; the request itself is answered at once, its
                        // body unread.
                        if req.uri().path() == "/check" {
                            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                        }
                        Ok::<_, std::convert::Infallible>(reply(StatusCode::OK, "up", "early"))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let proxy = Proxy::start(&config_with_chain(upstream, "fail_closed", ""));
    let mut post = request("POST", "/app", &[("x-probe-body-callout", "/check")]);
    *post.body_mut() = http_body_util::Full::new(bytes::Bytes::from_static(b"payload"));
    let got = send(proxy.addr("main"), post, false).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "early");
    assert_eq!(
        got.header("x-probe"),
        Some("response"),
        "the response callbacks ran"
    );
}

/// A filter that pauses on the request trailers holds them (and the body it buffered, which it
/// can read there) until it resumes; the trailer it adds and the body it sets from the
/// callout's answer reach the upstream.
#[tokio::test]
async fn a_filter_holds_the_request_trailers_for_a_callout() {
    let (upstream, seen, _, upstream_body) = trailer_upstream().await;
    let proxy = Proxy::start(&h2_config(upstream));
    let (status, _, body, _) = h2c_exchange(
        proxy.addr("main"),
        &[("x-probe-body-callout", "/check")],
        body_with_trailers(b"ping", &[("x-client-trailer", "c")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"pong");
    let upstream_trailers = seen
        .lock()
        .expect("seen")
        .clone()
        .expect("request trailers");
    assert_eq!(upstream_trailers["x-client-trailer"], "c");
    assert_eq!(upstream_trailers["x-probe-trailer"], "request");
    assert_eq!(
        upstream_trailers["x-held-body"], "ping",
        "the body it buffered, read in its trailers callback: {upstream_trailers:?}"
    );
    assert_eq!(
        upstream_trailers["x-callout"], "pong",
        "added from the callout's answer: {upstream_trailers:?}"
    );
    let upstream_body = upstream_body.lock().expect("seen").clone();
    assert_eq!(
        upstream_body.as_deref(),
        Some(&b"pong"[..]),
        "the body as the callout's answer left it"
    );
}

/// Sends raw HTTP/1.1 `head` and `body` to `addr` and reads what comes back until the
/// connection closes.
async fn raw_exchange(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(head.as_bytes()).await.expect("head");
    tcp.write_all(body).await.expect("body");
    let mut got = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tcp.read_to_end(&mut got),
    )
    .await
    .expect("the proxy closes the connection")
    .expect("read");
    got
}

/// A filter may buffer at most the listener's `filter_buffer_limit_bytes` of a body: past it
/// a request is answered 413 (without waiting for the rest of the body) and a response, its
/// headers gone already, is cut off. Nothing it held goes on.
#[tokio::test]
async fn a_filter_buffering_past_the_limit_stops_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The upstream answers `/out` with a body that is a chunk that never ends, and nothing
    // else at all.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tcp.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                if !head.starts_with(b"GET /out ") {
                    let _ = tcp.read(&mut byte).await;
                    return;
                }
                let chunk = vec![b'u'; 3000];
                let mut response =
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nbb8\r\n".to_vec();
                response.extend_from_slice(&chunk);
                response.extend_from_slice(b"\r\n");
                if tcp.write_all(&response).await.is_ok() {
                    // Held open until the proxy lets go.
                    let _ = tcp.read(&mut byte).await;
                }
            });
        }
    });
    let config = config_with_chain(upstream, "fail_closed", "").replace(
        "    header_read_timeout: 1s\n",
        "    header_read_timeout: 1s\n    filter_buffer_limit_bytes: 1024\n",
    );
    let proxy = Proxy::start(&config);
    let addr = proxy.addr("main");

    // 3000 bytes of a chunked body whose end is never sent: buffered past the limit, answered.
    let mut body = b"bb8\r\n".to_vec();
    body.extend_from_slice(&[b'r'; 3000]);
    body.extend_from_slice(b"\r\n");
    let got = raw_exchange(
        addr,
        "POST /in HTTP/1.1\r\nhost: t\r\nx-probe-body: 1\r\ntransfer-encoding: chunked\r\n\r\n",
        &body,
    )
    .await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");

    // The upstream's answer: 3000 bytes of a chunked body whose end never comes.
    let got = raw_exchange(
        addr,
        "GET /out HTTP/1.1\r\nhost: t\r\nx-probe-body: 1\r\n\r\n",
        b"",
    )
    .await;
    // The connection closes with no whole response (hyper may not have flushed the head).
    let got = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(!got.contains("uuuu"), "nothing held went on: {got}");
    assert!(!got.ends_with("0\r\n\r\n"), "the body was cut off: {got}");

    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    let counted = metric(
        &stats,
        "wasmesh_filter_limit_exceeded_total{plugin=\"probe\",limit=\"buffer\"}",
    );
    assert_eq!(counted, 2.0, "{stats}");
}

/// A small request body that went through a filter is still kept for retries: its request is
/// retried on another endpoint when the first refuses the connection, with the body intact.
/// A filter answering from that body still has its answer reach the client.
#[tokio::test]
async fn a_filtered_request_body_is_retried_and_a_body_answer_still_stands() {
    let upstream = Upstream::named("alpha").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let route = "            filter_chain: probe\n            retry_policy:\n              retry_on: [connect-failure]\n              num_retries: 2\n              base_interval: 1ms\n";
    let base = simple_config("", &[dead, upstream.addr], route);
    let config = format!(
        r#"{base}
filter_chains:
  - name: probe
    plugins:
      - name: probe
        source: "file://{wasm}"
        vm_id: probe
        deadline: 1s
"#,
        wasm = wasmesh_test_programs::PROBE_WASM,
    );
    let proxy = Proxy::start(&config);
    for i in 0..6 {
        let body = format!("request body {i}");
        let mut post = request("POST", "/in", &[]);
        *post.body_mut() = http_body_util::Full::new(bytes::Bytes::from(body.clone()));
        let got = send(proxy.addr("main"), post, i % 2 == 1).await;
        assert_eq!(got.status, StatusCode::OK, "request {i}: {:?}", got.text());
        assert_eq!(&upstream.last_seen().body[..], body.as_bytes());
    }
    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    assert!(
        metric(
            &stats,
            "wasmesh_upstream_retries_total{cluster=\"backend\"}"
        ) >= 1.0,
        "no retry happened:\n{stats}"
    );

    let mut denied = request("POST", "/in", &[("x-probe-body-deny", "forbidden")]);
    *denied.body_mut() = http_body_util::Full::new(bytes::Bytes::from_static(b"forbidden"));
    let got = send(proxy.addr("main"), denied, false).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert_eq!(got.text(), "body denied");
}

/// A filter closing the stream (`reset_http_request`/`reset_http_response`, i.e.
/// `proxy_close_stream`) resets it as Envoy does, from the request headers, the request body or
/// the response headers: the client gets no response (HTTP/1.1: the connection closes; HTTP/2:
/// only that stream is reset), and a request closed in its headers never reaches the upstream.
#[tokio::test]
async fn a_filter_closing_the_stream_resets_it() {
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start(&config_with_chain(upstream.addr, "fail_closed", ""));
    let addr = proxy.addr("main");
    for h2 in [false, true] {
        let hits = upstream.hits();
        let closed = try_send(
            addr,
            request("GET", "/", &[("x-probe-reset", "headers")]),
            h2,
        )
        .await;
        assert!(closed.is_err(), "h2={h2}: {closed:?}");
        assert_eq!(upstream.hits(), hits, "h2={h2}: never sent upstream");

        let mut with_body = request("POST", "/", &[("x-probe-reset", "body")]);
        *with_body.body_mut() = http_body_util::Full::new(bytes::Bytes::from_static(b"payload"));
        let closed = try_send(addr, with_body, h2).await;
        assert!(closed.is_err(), "h2={h2}: {closed:?}");

        let closed = try_send(
            addr,
            request("GET", "/", &[("x-probe-reset", "response")]),
            h2,
        )
        .await;
        assert!(closed.is_err(), "h2={h2}: {closed:?}");
    }

    // HTTP/2: the reset is the stream's alone; the connection carries on.
    let io =
        hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let closed = sender
        .send_request(request("GET", "/", &[("x-probe-reset", "headers")]))
        .await;
    assert!(closed.is_err());
    let after = sender
        .send_request(request("GET", "/", &[]))
        .await
        .expect("the connection survives the reset");
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(get(addr, "/").await.status, StatusCode::OK);
}

/// A request a filter stops from its body (here, a reset) is the client's doing, not the
/// endpoint's: outlier detection does not count it, so a client cannot get a healthy endpoint
/// ejected that way.
#[tokio::test]
async fn a_request_a_filter_stops_is_not_held_against_the_endpoint() {
    let upstream = Upstream::named("alpha").await;
    let outlier = "    outlier_detection: { consecutive_5xx: 1, consecutive_gateway_failure: 1, \
                   base_ejection_time: 60s, max_ejection_percent: 100 }\n";
    let config = config_with_chain(upstream.addr, "fail_closed", "")
        .replace("    endpoints: [", &format!("{outlier}    endpoints: ["));
    let proxy = Proxy::start(&config);
    let addr = proxy.addr("main");
    for _ in 0..3 {
        let mut with_body = request("POST", "/", &[("x-probe-reset", "body")]);
        *with_body.body_mut() = http_body_util::Full::new(bytes::Bytes::from_static(b"payload"));
        assert!(try_send(addr, with_body, false).await.is_err());
    }
    let clusters = get_admin_text(proxy.admin.expect("admin"), "/clusters");
    assert!(!clusters.contains("\"ejected\": true"), "{clusters}");
    let got = get(addr, "/").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
}

/// A filter sees a request's authority once, as `:authority` (Envoy normalizes `Host` to it),
/// and one that sets `host` moves the request there: the upstream gets one `Host` either way.
#[tokio::test]
async fn filters_see_the_authority_once_and_may_set_it_as_host() {
    let upstream = Upstream::named("alpha").await;
    let chain = |request: &str| with_headers_filter(upstream.addr, request, "{}");

    let reader =
        chain(r#"{ set: { x-saw-host: "%REQ(host)%", x-saw-authority: "%REQ(:authority)%" } }"#);
    let proxy = Proxy::start(&reader);
    for h2 in [false, true] {
        let got = send(proxy.addr("main"), request("GET", "/", &[]), h2).await;
        assert_eq!(got.status, StatusCode::OK, "h2={h2}: {}", got.text());
        let seen = upstream.last_seen();
        assert_eq!(seen.headers["x-saw-authority"], "test.local", "h2={h2}");
        assert!(
            !seen.headers.contains_key("x-saw-host"),
            "h2={h2}: a filter saw `host`: {:?}",
            seen.headers
        );
        let hosts: Vec<_> = seen.headers.get_all("host").iter().collect();
        assert_eq!(hosts, ["test.local"], "h2={h2}");
    }
    drop(proxy);

    // Set as `host`, the new authority is what an HTTP/1.1 upstream gets as `Host` and an
    // HTTP/2 one as `:authority` (with no `host` beside it).
    let writer = chain(r#"{ set: { host: moved.example } }"#);
    let h2_upstream = writer.replace("    endpoints: [", "    protocol: http2\n    endpoints: [");
    for (yaml, upstream_h2) in [(writer, false), (h2_upstream, true)] {
        let proxy = Proxy::start(&yaml);
        for h2 in [false, true] {
            let got = send(proxy.addr("main"), request("GET", "/", &[]), h2).await;
            assert_eq!(got.status, StatusCode::OK, "h2={h2}: {}", got.text());
            let seen = upstream.last_seen();
            let hosts: Vec<_> = seen.headers.get_all("host").iter().collect();
            if upstream_h2 {
                assert_eq!(seen.authority.as_deref(), Some("moved.example"), "h2={h2}");
                assert!(hosts.is_empty(), "h2={h2}: {hosts:?}");
            } else {
                assert_eq!(hosts, ["moved.example"], "h2={h2}");
            }
        }
    }
}

/// One listener whose routes (`name`, the `x-variant` value it matches or none, cluster) go to
/// `clusters` (`name`, upstream), behind the stock `headers` filter configured with `headers`.
fn routed_by_variant(
    routes: &[(&str, Option<&str>)],
    clusters: &[(&str, std::net::SocketAddr)],
    headers: &str,
) -> String {
    let routes: String = routes
        .iter()
        .map(|(name, variant)| {
            let headers = variant
                .map(|v| format!(", headers: [{{ name: x-variant, exact: {v} }}]"))
                .unwrap_or_default();
            format!(
                "          - name: {name}\n            match: {{ prefix: \"/\"{headers} }}\n            cluster: {name}\n"
            )
        })
        .collect();
    let clusters: String = clusters
        .iter()
        .map(|(name, addr)| format!("  - {{ name: {name}, endpoints: [\"{addr}\"] }}\n"))
        .collect();
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
{routes}clusters:
{clusters}filter_chains:
  - name: edge
    plugins:
      - name: headers
        source: "file://{wasm}"
        config: {headers}
"#,
        wasm = wasmesh_test_programs::HEADERS_WASM,
    )
}

/// As in Envoy, a filter that changes the request's headers has the route chosen again: here
/// the stock `headers` filter sets the header a route matches on, without asking to re-route.
#[tokio::test]
async fn editing_request_headers_chooses_the_route_again() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let config = routed_by_variant(
        &[("canary", Some("canary")), ("stable", None)],
        &[("stable", stable.addr), ("canary", canary.addr)],
        "{ request: { set: { x-variant: canary } } }",
    );
    let proxy = Proxy::start(&config);
    let got = get(proxy.addr("main"), "/").await;
    assert_eq!(got.header("x-upstream"), Some("canary"));
    assert_eq!(stable.hits(), 0);
}

/// A request no route matches once a filter edited it gets its 404 back through the filters'
/// response callbacks, as every local reply does.
#[tokio::test]
async fn a_request_edited_out_of_every_route_gets_a_404_through_the_filters() {
    let stable = Upstream::named("stable").await;
    let config = routed_by_variant(
        &[("stable", Some("stable"))],
        &[("stable", stable.addr)],
        r#"{ request: { set: { x-variant: gone } }, response: { set: { x-decorated: "yes" } } }"#,
    );
    let proxy = Proxy::start(&config);
    let got = send(
        proxy.addr("main"),
        request("GET", "/", &[("x-variant", "stable")]),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(got.header("x-decorated"), Some("yes"));
    assert_eq!(stable.hits(), 0);
}
