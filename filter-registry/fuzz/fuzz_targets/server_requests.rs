//! The registry's HTTP handlers (uploads, manifests, blobs with ranges, tags, referrers, the
//! token service), fed fuzzed requests over a real loopback connection. Every request gets an
//! answer (a panicking handler would drop the connection instead), and no answer is a 500:
//! on a healthy disk the registry has no internal errors, only refusals.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    method: u8,
    repo: u8,
    path: String,
    query: Option<String>,
    headers: Vec<(u8, String)>,
    body: Vec<u8>,
}

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
const REPOS: &[&str] = &[
    "/v2/fuzz/m/",
    "/v2/fuzz/m/blobs/uploads/",
    "/v2/fuzz/m/manifests/",
    "/v2/fuzz/m/blobs/",
    "/v2/",
    "/token",
    "/v2/fuzz/m/tags/list",
    "/v2/fuzz/m/referrers/",
];
const HEADERS: &[&str] = &[
    "range",
    "content-range",
    "content-type",
    "authorization",
    "accept",
    "digest",
];

struct Registry {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    _running: wasmesh_registry::server::RunningRegistry,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let running = runtime
            .block_on(wasmesh_registry::server::serve(
                wasmesh_registry::server::RegistryConfig {
                    root: dir.path().join("store"),
                    listen: "127.0.0.1:0".parse().expect("addr"),
                    push_token: None,
                    pull_token: None,
                },
            ))
            .expect("registry");
        Registry {
            addr: running.local_addr(),
            runtime,
            _dir: dir,
            _running: running,
        }
    })
}

fuzz_target!(|input: Input| {
    let registry = registry();
    let mut uri = format!("{}{}", REPOS[input.repo as usize % REPOS.len()], input.path);
    if let Some(query) = &input.query {
        uri.push('?');
        uri.push_str(query);
    }
    let mut request = http::Request::builder()
        .method(METHODS[input.method as usize % METHODS.len()])
        .uri(uri.as_str())
        .header("host", "registry.fuzz");
    for (name, value) in &input.headers {
        request = request.header(HEADERS[*name as usize % HEADERS.len()], value.as_str());
    }
    // Only requests that are valid HTTP reach the registry; the rest are the client's errors.
    let Ok(request) = request.body(Full::new(Bytes::from(input.body))) else {
        return;
    };
    let status = registry.runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(registry.addr)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let response = sender
            .send_request(request)
            .await
            .unwrap_or_else(|e| panic!("{uri}: no answer ({e})"));
        let status = response.status();
        let _ = response.into_body().collect().await;
        status
    });
    assert_ne!(status.as_u16(), 500, "{uri}: an internal error");
});
