//! gRPC callouts from a Wasm filter through the real proxy: the gRPC probe filter (written with
//! the published `proxy-wasm` SDK) authorizes requests with unary calls and echoes through a
//! stream, against a real gRPC server on loopback — hyper's HTTP/2 server with the gRPC framing
//! written out below — reached through the proxy's own clusters.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::TcpListener;

/// One call the gRPC server received.
#[derive(Debug, Clone)]
struct SeenCall {
    path: String,
    scheme: String,
    authority: String,
    headers: HeaderMap,
    messages: Vec<Bytes>,
}

/// A gRPC server (h2c, or h2 over TLS) with two methods:
///
/// - `wasmesh.test.Auth/Check`, unary, by the `x-user` metadata: `alice` is allowed (the
///   answer is `allowed:alice:<request message>`), `bob` is denied with a trailers-only
///   PERMISSION_DENIED, `slow` is answered only after 30 s, `huge` gets a 5 MiB message, `http`
///   a plain HTTP 503;
/// - `wasmesh.test.Echo/Chat`, bidirectional: initial metadata `x-echo-initial: hello`, each
///   message echoed back as `echo:<message>` as soon as it arrives, and when the client closes
///   its side, trailers `grpc-status: 0` and `x-echo-trailer: bye`.
struct GrpcServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenCall>>>,
    /// Calls whose stream was reset before the server answered them.
    resets: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type GrpcBody = BoxBody<Bytes, Infallible>;

fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.extend_from_slice(&[0]);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed.freeze()
}

/// Takes the whole messages at the front of `buffer`.
fn messages(buffer: &mut BytesMut) -> Vec<Bytes> {
    let mut out = Vec::new();
    while buffer.len() >= 5 {
        let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
        if buffer.len() < 5 + len {
            break;
        }
        buffer.advance(5);
        out.push(buffer.split_to(len).freeze());
    }
    out
}

fn trailers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.insert(*k, http::HeaderValue::from_static(v));
    }
    map
}

/// A response whose body is whatever frames are sent on the returned channel.
fn streamed(
    headers: &[(&'static str, &'static str)],
) -> (
    tokio::sync::mpsc::UnboundedSender<Frame<Bytes>>,
    Response<GrpcBody>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Frame<Bytes>>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|frame| (Ok::<_, Infallible>(frame), rx))
    });
    let mut builder = Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = builder
        .body(StreamBody::new(stream).boxed())
        .expect("response");
    (tx, response)
}

fn empty(status: u16, headers: &[(&'static str, &'static str)]) -> Response<GrpcBody> {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder
        .body(http_body_util::Empty::new().boxed())
        .expect("response")
}

/// Counts a call as reset unless it was answered.
struct Answered {
    resets: Arc<AtomicUsize>,
    done: bool,
}

impl Drop for Answered {
    fn drop(&mut self) {
        if !self.done {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn auth(call: SeenCall, resets: Arc<AtomicUsize>) -> Response<GrpcBody> {
    let user = call
        .headers
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let message = call.messages.first().cloned().unwrap_or_default();
    match user.as_str() {
        "alice" => {
            let (tx, response) = streamed(&[]);
            let answer = format!("allowed:alice:{}", String::from_utf8_lossy(&message));
            let _ = tx.send(Frame::data(frame(answer.as_bytes())));
            let _ = tx.send(Frame::trailers(trailers(&[("grpc-status", "0")])));
            response
        }
        "bob" => empty(
            200,
            &[
                ("content-type", "application/grpc"),
                ("grpc-status", "7"),
                ("grpc-message", "no entry for bob: caf%C3%A9"),
            ],
        ),
        "slow" => {
            let mut answered = Answered {
                resets,
                done: false,
            };
            tokio::time::sleep(Duration::from_secs(30)).await;
            answered.done = true;
            empty(
                200,
                &[("content-type", "application/grpc"), ("grpc-status", "0")],
            )
        }
        "huge" => {
            let (tx, response) = streamed(&[]);
            let _ = tx.send(Frame::data(frame(&vec![b'x'; 5 * 1024 * 1024])));
            let _ = tx.send(Frame::trailers(trailers(&[("grpc-status", "0")])));
            response
        }
        "http" => empty(503, &[("content-type", "text/plain")]),
        _ => empty(
            200,
            &[("content-type", "application/grpc"), ("grpc-status", "16")],
        ),
    }
}

impl GrpcServer {
    async fn start() -> GrpcServer {
        GrpcServer::serve(None).await
    }

    async fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> GrpcServer {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gRPC server");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let resets = Arc::new(AtomicUsize::new(0));
        let (s, r) = (seen.clone(), resets.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, resets) = (s.clone(), r.clone());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (seen, resets) = (seen.clone(), resets.clone());
                        async move { Ok::<_, Infallible>(serve(req, seen, resets).await) }
                    });
                    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        GrpcServer {
            addr,
            seen,
            resets,
            task,
        }
    }

    fn calls(&self) -> Vec<SeenCall> {
        self.seen.lock().expect("seen").clone()
    }
}

async fn serve(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<SeenCall>>>,
    resets: Arc<AtomicUsize>,
) -> Response<GrpcBody> {
    let (parts, mut body) = req.into_parts();
    let mut call = SeenCall {
        path: parts.uri.path().to_string(),
        scheme: parts.uri.scheme_str().unwrap_or_default().to_string(),
        authority: parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        messages: Vec::new(),
    };
    if call.path == "/wasmesh.test.Echo/Chat" {
        // Echo each message as it arrives: the response streams while the request does.
        let (tx, response) = streamed(&[("x-echo-initial", "hello")]);
        tokio::spawn(async move {
            let mut buffer = BytesMut::new();
            while let Some(Ok(chunk)) = body.frame().await {
                if let Ok(data) = chunk.into_data() {
                    buffer.extend_from_slice(&data);
                    for message in messages(&mut buffer) {
                        let mut echo = b"echo:".to_vec();
                        echo.extend_from_slice(&message);
                        let _ = tx.send(Frame::data(frame(&echo)));
                        call.messages.push(message);
                    }
                }
            }
            seen.lock().expect("seen").push(call);
            let _ = tx.send(Frame::trailers(trailers(&[
                ("grpc-status", "0"),
                ("x-echo-trailer", "bye"),
            ])));
        });
        return response;
    }
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    call.messages = messages(&mut BytesMut::from(&body[..]));
    seen.lock().expect("seen").push(call.clone());
    if call.path != "/wasmesh.test.Auth/Check" {
        return empty(
            200,
            &[("content-type", "application/grpc"), ("grpc-status", "12")],
        );
    }
    auth(call, resets).await
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

fn config(upstream: SocketAddr, grpc: SocketAddr, down: SocketAddr) -> String {
    let clusters = format!(
        r#"  - name: auth
    endpoints: ["{grpc}"]
    protocol: http2
  - name: auth-h1
    endpoints: ["{grpc}"]
  - name: auth-down
    endpoints: ["{down}"]
    protocol: http2
    connect_timeout: 1s
"#
    );
    let base = simple_config(&clusters, &[upstream], "            filter_chain: grpc\n");
    format!(
        r#"{base}
filter_chains:
  - name: grpc
    plugins:
      - name: grpc-probe
        source: "file://{wasm}"
        failure_policy: fail_closed
"#,
        wasm = wasmesh_test_programs::GRPC_PROBE_WASM,
    )
}

/// Request headers, the HTTP status the filter answers, the gRPC status it saw.
type Case = (
    &'static [(&'static str, &'static str)],
    StatusCode,
    &'static str,
);

async fn call(proxy: &Proxy, headers: &[(&str, &str)]) -> Got {
    send(proxy.addr("main"), request("GET", "/app", headers), false).await
}

#[tokio::test]
async fn a_filter_authorizes_requests_with_a_unary_grpc_call() {
    let upstream = Upstream::named("main").await;
    let grpc = GrpcServer::start().await;
    let proxy = Proxy::start(&config(upstream.addr, grpc.addr, closed_port().await));

    let got = call(&proxy, &[("x-grpc-call", "auth"), ("x-user", "alice")]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "main");
    assert_eq!(
        upstream.last_seen().headers["x-auth"],
        "allowed:alice:/app",
        "the answer reached the filter, which resumed the request with it"
    );
    let seen = grpc.calls();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let c = &seen[0];
    assert_eq!(c.path, "/wasmesh.test.Auth/Check");
    assert_eq!(
        c.authority, "auth",
        "Envoy's gRPC client sends the cluster name"
    );
    assert_eq!(c.headers["content-type"], "application/grpc");
    assert_eq!(c.headers["te"], "trailers");
    assert_eq!(c.headers["grpc-timeout"], "1000m");
    assert_eq!(c.headers["x-user"], "alice");
    assert_eq!(
        c.headers["x-trace-bin"], "AAE=",
        "binary metadata goes base64"
    );
    assert_eq!(c.messages, vec![Bytes::from_static(b"/app")]);

    let got = call(&proxy, &[("x-grpc-call", "auth"), ("x-user", "bob")]).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN, "{}", got.text());
    assert_eq!(got.header("x-grpc-status"), Some("7"));
    assert_eq!(
        got.headers.get("x-grpc-message").map(|v| v.as_bytes()),
        Some("no entry for bob: café".as_bytes()),
        "grpc-message arrives percent-decoded"
    );
    assert_eq!(
        upstream.hits(),
        1,
        "a denied request never reaches the upstream"
    );
}

#[tokio::test]
async fn grpc_failures_reach_the_filter_with_envoys_statuses() {
    let upstream = Upstream::named("main").await;
    let grpc = GrpcServer::start().await;
    let proxy = Proxy::start(&config(upstream.addr, grpc.addr, closed_port().await));

    // The slow call comes last, on the connection the others opened, so it is on the wire
    // well before its deadline.
    let cases: [Case; 4] = [
        (
            &[("x-grpc-call", "auth-down")],
            StatusCode::SERVICE_UNAVAILABLE,
            "14",
        ),
        (
            &[("x-grpc-call", "auth"), ("x-user", "huge")],
            StatusCode::FORBIDDEN,
            "8",
        ),
        (
            &[("x-grpc-call", "auth"), ("x-user", "http")],
            StatusCode::SERVICE_UNAVAILABLE,
            "14",
        ),
        (
            &[
                ("x-grpc-call", "auth"),
                ("x-user", "slow"),
                ("x-grpc-timeout-ms", "500"),
            ],
            StatusCode::SERVICE_UNAVAILABLE,
            "4",
        ),
    ];
    for (headers, want, grpc_status) in cases {
        let got = call(&proxy, headers).await;
        assert_eq!(got.status, want, "{headers:?}: {}", got.text());
        assert_eq!(
            got.header("x-grpc-status"),
            Some(grpc_status),
            "{headers:?}"
        );
    }
    // The deadline reset the slow call on the wire.
    assert!(
        eventually(Duration::from_secs(10), async || grpc
            .resets
            .load(Ordering::SeqCst)
            == 1)
        .await,
        "the server never saw the timed-out call end"
    );

    // Refused when made: a cluster that does not speak HTTP/2, and one that does not exist.
    for (cluster, refusal) in [("auth-h1", "InternalFailure"), ("nowhere", "ParseFailure")] {
        let got = call(&proxy, &[("x-grpc-call", cluster)]).await;
        assert_eq!(got.status, StatusCode::INTERNAL_SERVER_ERROR, "{cluster}");
        assert_eq!(got.header("x-grpc-dispatch"), Some(refusal), "{cluster}");
    }
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn a_cancelled_call_is_reset_on_the_wire() {
    let grpc = GrpcServer::start().await;
    // The upstream answers (and so the filter cancels) only once the call reached the server.
    let seen = grpc.seen.clone();
    let upstream = Upstream::with(move |_| {
        let seen = seen.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let arrived = loop {
                if !seen.lock().expect("seen").is_empty() {
                    break true;
                }
                if tokio::time::Instant::now() >= deadline {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let status = if arrived {
                StatusCode::OK
            } else {
                StatusCode::GATEWAY_TIMEOUT
            };
            reply(status, "main", "main")
        }
    })
    .await;
    let proxy = Proxy::start(&config(upstream.addr, grpc.addr, closed_port().await));
    let got = call(&proxy, &[("x-grpc-cancel", "auth"), ("x-user", "slow")]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert!(got.header("x-grpc-cancelled").is_some());
    assert!(
        eventually(Duration::from_secs(10), async || grpc
            .resets
            .load(Ordering::SeqCst)
            == 1)
        .await,
        "the server never saw the cancelled call end"
    );
}

#[tokio::test]
async fn a_filter_streams_messages_to_a_grpc_server_and_back() {
    let upstream = Upstream::named("main").await;
    let grpc = GrpcServer::start().await;
    let proxy = Proxy::start(&config(upstream.addr, grpc.addr, closed_port().await));
    for half_close in ["end", "close"] {
        let got = call(
            &proxy,
            &[
                ("x-grpc-stream", "auth"),
                ("x-user", "carol"),
                ("x-grpc-send", "a,b,c"),
                ("x-grpc-half-close", half_close),
            ],
        )
        .await;
        assert_eq!(got.status, StatusCode::OK, "{half_close}: {}", got.text());
        let seen = upstream.last_seen();
        assert_eq!(
            seen.headers["x-echo-messages"], "echo:a,echo:b,echo:c",
            "{half_close}"
        );
        assert_eq!(seen.headers["x-echo-initial"], "hello", "{half_close}");
        assert_eq!(seen.headers["x-echo-trailer"], "bye", "{half_close}");
        assert_eq!(seen.headers["x-grpc-status"], "0", "{half_close}");
        let calls = grpc.calls();
        let echo = calls.last().expect("the server saw the stream");
        assert_eq!(echo.path, "/wasmesh.test.Echo/Chat");
        assert_eq!(echo.headers["x-user"], "carol");
        assert!(
            !echo.headers.contains_key("grpc-timeout"),
            "streams have no deadline"
        );
        assert_eq!(
            echo.messages,
            vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"b"),
                Bytes::from_static(b"c")
            ]
        );
    }
}

#[tokio::test]
async fn a_unary_call_goes_over_h2_with_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let leaf = pki.leaf("grpc", &["grpc.internal"], None);
    let grpc = GrpcServer::serve(Some(server_tls(&leaf))).await;
    let upstream = Upstream::named("main").await;
    let clusters = format!(
        r#"  - name: auth
    endpoints: ["{grpc}"]
    protocol: http2
    tls: {{ sni: grpc.internal, ca_file: "{ca}" }}
"#,
        grpc = grpc.addr,
        ca = pki.ca_file(),
    );
    let base = simple_config(
        &clusters,
        &[upstream.addr],
        "            filter_chain: grpc\n",
    );
    let yaml = format!(
        r#"{base}
filter_chains:
  - name: grpc
    plugins:
      - name: grpc-probe
        source: "file://{wasm}"
"#,
        wasm = wasmesh_test_programs::GRPC_PROBE_WASM,
    );
    let proxy = Proxy::start(&yaml);
    let got = call(&proxy, &[("x-grpc-call", "auth"), ("x-user", "alice")]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(upstream.last_seen().headers["x-auth"], "allowed:alice:/app");
    let seen = grpc.calls();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].scheme, "https");
    assert_eq!(seen[0].path, "/wasmesh.test.Auth/Check");
}
