//! Test support for the proxy's end-to-end tests: the real `wasmesh` binary started on a
//! generated config, real upstream servers on loopback, real TLS with certificates made by rcgen.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

/// The real binary, running a config; killed when dropped.
pub struct Proxy {
    child: Child,
    pub listeners: HashMap<String, SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    /// Writes `yaml` to a temp file and runs `wasmesh run` on it; returns once it printed every
    /// bound address.
    pub fn start(yaml: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir");
        Proxy::start_in(dir, yaml)
    }

    pub fn start_in(dir: tempfile::TempDir, yaml: &str) -> Proxy {
        let path = dir.path().join("wasmesh.yaml");
        std::fs::write(&path, yaml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmesh"))
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wasmesh");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut listeners = HashMap::new();
        let mut admin = None;
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(180)) {
                Ok(line) => line,
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    panic!("wasmesh did not report ready (exit status: {status:?})");
                }
            };
            if let Some(rest) = line.strip_prefix("wasmesh: listener ") {
                let (name, addr) = rest.split_once(" on ").expect("listener line");
                listeners.insert(name.to_string(), addr.parse().expect("listener addr"));
            } else if let Some(addr) = line.strip_prefix("wasmesh: admin on ") {
                admin = Some(addr.parse().expect("admin addr"));
            } else if line == "wasmesh: ready" {
                break;
            }
        }
        Proxy {
            child,
            listeners,
            admin,
            dir,
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.listeners[listener]
    }

    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{}", self.addr(listener), path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `wasmesh validate` on `yaml`; returns (success, stdout+stderr, path of the config).
pub fn validate(yaml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_wasmesh"))
        .arg("validate")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, path.display().to_string())
}

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: Version,
    /// The authority of the request target: HTTP/2's `:authority` (HTTP/1.1 sends `Host`).
    pub authority: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

pub type Reply = Response<Full<Bytes>>;
type Handler = Arc<dyn Fn(Seen) -> futures_util::future::BoxFuture<'static, Reply> + Send + Sync>;

/// A real upstream HTTP server (HTTP/1.1 and h2c) on loopback.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Answers every request 200 with `x-upstream: NAME` and body NAME.
    pub async fn named(name: &str) -> Upstream {
        let name = name.to_string();
        Upstream::with(move |_| {
            let name = name.clone();
            async move { reply(StatusCode::OK, &name, &name) }
        })
        .await
    }

    pub async fn with<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Reply> + Send + 'static,
    {
        Upstream::serve(None, handler).await
    }

    pub async fn serve<F, Fut>(tls: Option<Arc<rustls::ServerConfig>>, handler: F) -> Upstream
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Reply> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |seen| Box::pin(handler(seen)));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (h, s) = (hits.clone(), seen.clone());
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, hits, seen) = (handler.clone(), h.clone(), s.clone());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (handler, hits, seen) = (handler.clone(), hits.clone(), seen.clone());
                        async move {
                            hits.fetch_add(1, Ordering::SeqCst);
                            let (parts, body) = req.into_parts();
                            let collected = body.collect().await;
                            let (body, trailers) = match collected {
                                Ok(c) => {
                                    let trailers = c.trailers().cloned();
                                    (c.to_bytes(), trailers)
                                }
                                Err(_) => (Bytes::new(), None),
                            };
                            let s = Seen {
                                method: parts.method.to_string(),
                                path: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                version: parts.version,
                                authority: parts.uri.authority().map(|a| a.to_string()),
                                headers: parts.headers,
                                body,
                                trailers,
                            };
                            seen.lock().expect("seen").push(s.clone());
                            Ok::<_, std::convert::Infallible>(handler(s).await)
                        }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
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
        Upstream {
            addr,
            hits,
            seen,
            task,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn last_seen(&self) -> Seen {
        self.seen
            .lock()
            .expect("seen")
            .last()
            .cloned()
            .expect("a request was seen")
    }
}

pub fn reply(status: StatusCode, upstream: &str, body: &str) -> Reply {
    Response::builder()
        .status(status)
        .header("x-upstream", upstream)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("reply")
}

/// A response as the test client received it.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends a request over a fresh HTTP/1.1 or h2c (prior knowledge) connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>, h2: bool) -> Got {
    let tcp = TcpStream::connect(addr).await.expect("connect to proxy");
    send_on(TokioIo::new(tcp), req, h2).await
}

pub async fn send_on<IO>(io: IO, req: Request<Full<Bytes>>, h2: bool) -> Got
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let response = exchange(io, req, h2)
        .await
        .unwrap_or_else(|err| panic!("h2={h2}: no response: {err}"));
    collect(response).await
}

/// Sends `req` on a new connection; `Err` if no whole response came (the stream was reset).
pub async fn try_send(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
    h2: bool,
) -> Result<StatusCode, hyper::Error> {
    let tcp = TcpStream::connect(addr).await.expect("connect to proxy");
    let response = exchange(TokioIo::new(tcp), req, h2).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

/// A client handshake on `io` (HTTP/1.1 or HTTP/2) and one request.
async fn exchange<IO>(
    io: IO,
    req: Request<Full<Bytes>>,
    h2: bool,
) -> Result<Response<Incoming>, hyper::Error>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        sender.send_request(req).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        sender.send_request(req).await
    }
}

pub async fn collect(response: Response<Incoming>) -> Got {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Got {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// GET `path` with `Host: host` over HTTP/1.1.
pub async fn get(addr: SocketAddr, path: &str) -> Got {
    send(addr, request("GET", path, &[]), false).await
}

pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test.local");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Full::new(Bytes::new())).expect("request")
}

/// The value of one Prometheus `sample` (name with labels, as printed) in `stats`; 0 if absent.
pub fn metric(stats: &str, sample: &str) -> f64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

pub fn get_admin_text(admin: SocketAddr, path: &str) -> String {
    // A blocking helper usable from sync and async tests alike.
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(admin).expect("connect admin");
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).expect("read admin");
    out
}

/// Test PKI: a CA and leaf certificates signed by it, written as PEM files.
pub struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pub dir: std::path::PathBuf,
}

pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Pki {
    pub fn new(dir: &std::path::Path) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wasmesh test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("ca key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("ca cert");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
        Pki {
            ca,
            dir: dir.to_path_buf(),
        }
    }

    pub fn ca_file(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    pub fn ca_der(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A leaf for `dns_names` (server) and/or `uri` (e.g. a SPIFFE ID for a client).
    pub fn leaf(&self, name: &str, dns_names: &[&str], uri: Option<&str>) -> Leaf {
        let mut params = rcgen::CertificateParams::new(
            dns_names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.try_into().expect("uri")));
        }
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("sign leaf");
        let cert_path = self.dir.join(format!("{name}.pem"));
        let key_path = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Leaf {
            cert: cert_path.display().to_string(),
            key: key_path.display().to_string(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client config trusting the test CA, offering `alpn`, optionally with a client cert.
pub fn client_tls(pki: &Pki, alpn: &[&str], client: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).expect("add ca");
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(&leaf.cert)
                .expect("cert file")
                .collect::<Result<Vec<_>, _>>()
                .expect("certs");
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&leaf.key).expect("key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// A TLS server config for an upstream.
pub fn server_tls(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&leaf.cert)
        .expect("cert file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&leaf.key).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server cert");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Opens a TLS connection to `addr` with SNI `name`.
pub async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    connector.connect(server_name, tcp).await
}

/// Polls `check` until it returns true or `limit` passes; for conditions that become true
/// eventually (a health check flips), never for asserting how long something took.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A config with one listener on an ephemeral port in front of one cluster.
pub fn simple_config(cluster_extra: &str, endpoints: &[SocketAddr], route_extra: &str) -> String {
    let eps = endpoints
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
listeners:
  - name: main
    address: "127.0.0.1:0"
    route_config: main
    header_read_timeout: 1s
routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: default
            match: {{ prefix: "/" }}
            cluster: backend
{route_extra}
clusters:
  - name: backend
    endpoints: [{eps}]
{cluster_extra}
admin:
  address: "127.0.0.1:0"
"#
    )
}

/// Sends `method path` with `body` to the admin API; returns (status, body).
pub fn admin_call(admin: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(admin).expect("connect admin");
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).expect("read admin");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A minimal proxy-wasm module (ABI 0.2.1) that adds `x-stamp: VERSION` to every response and
/// does nothing else: two versions differ only in that text, so tests can tell which module
/// (not which configuration) served a response.
pub fn stamp_module(version: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "env" "proxy_add_header_map_value"
    (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 0) "x-stamp")
  (data (i32.const 16) "{version}")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $at))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 0) (i32.const 7) (i32.const 16) (i32.const {len})))
    (i32.const 0)))"#,
        len = version.len()
    );
    wat::parse_str(text).expect("stamp module")
}

/// The embedded registry crate's server on a loopback port, in this process.
pub async fn registry(root: &std::path::Path) -> wasmesh_registry::server::RunningRegistry {
    registry_on(root, "127.0.0.1:0".parse().expect("addr")).await
}

pub async fn registry_on(
    root: &std::path::Path,
    listen: SocketAddr,
) -> wasmesh_registry::server::RunningRegistry {
    wasmesh_registry::server::serve(wasmesh_registry::server::RegistryConfig {
        root: root.to_path_buf(),
        listen,
        push_token: None,
        pull_token: None,
    })
    .await
    .expect("registry")
}

/// Pushes `wasm` to `reference` (`oci://HOST/REPO:TAG`); returns the manifest digest.
pub async fn push(reference: &str, wasm: &[u8]) -> String {
    wasmesh_registry::client::push(reference, wasm, &Default::default(), None)
        .await
        .expect("push")
        .to_string()
}

impl Proxy {
    /// Like [`Proxy::start`], with `extra` arguments after `run --config FILE` (for example
    /// `["--concurrency", "2"]`).
    pub fn start_with_args(yaml: &str, extra: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wasmesh.yaml");
        std::fs::write(&path, yaml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmesh"))
            .arg("run")
            .arg("--config")
            .arg(&path)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wasmesh");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut listeners = HashMap::new();
        let mut admin = None;
        loop {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(180)) else {
                let status = child.try_wait().ok().flatten();
                panic!("wasmesh did not report ready (exit status: {status:?})");
            };
            if let Some(rest) = line.strip_prefix("wasmesh: listener ") {
                let (name, addr) = rest.split_once(" on ").expect("listener line");
                listeners.insert(name.to_string(), addr.parse().expect("listener addr"));
            } else if let Some(addr) = line.strip_prefix("wasmesh: admin on ") {
                admin = Some(addr.parse().expect("admin addr"));
            } else if line == "wasmesh: ready" {
                break;
            }
        }
        Proxy {
            child,
            listeners,
            admin,
            dir,
        }
    }
}

/// A test peer's streamed body (data, then maybe trailers).
pub type TestBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

/// A body of `data` followed by `trailers` (none if empty).
pub fn body_with_trailers(
    data: &'static [u8],
    trailers: &[(&'static str, &'static str)],
) -> TestBody {
    use http_body_util::BodyExt;
    let mut frames = vec![Ok(http_body::Frame::data(bytes::Bytes::from_static(data)))];
    if !trailers.is_empty() {
        let mut map = http::HeaderMap::new();
        for (k, v) in trailers {
            map.insert(*k, http::HeaderValue::from_static(v));
        }
        frames.push(Ok(http_body::Frame::trailers(map)));
    }
    http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// Sends `body` over h2c with `headers`; returns (status, response headers, body, trailers).
pub async fn h2c_exchange(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
    body: TestBody,
) -> (
    StatusCode,
    http::HeaderMap,
    bytes::Bytes,
    Option<http::HeaderMap>,
) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2");
    tokio::spawn(conn);
    let mut builder = http::Request::post(format!("http://t:{}/up", addr.port()));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = sender
        .send_request(builder.body(body).expect("request"))
        .await
        .expect("response");
    let (parts, incoming) = response.into_parts();
    let collected = incoming.collect().await.expect("response body");
    let trailers = collected.trailers().cloned();
    (parts.status, parts.headers, collected.to_bytes(), trailers)
}

/// An upstream that accepts `Upgrade: echo` and echoes bytes afterwards.
pub async fn echo_upgrade_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |mut req: Request<hyper::body::Incoming>| async move {
                        let on_upgrade = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(upgraded) = on_upgrade.await {
                                let mut io = hyper_util::rt::TokioIo::new(upgraded);
                                let mut buf = [0u8; 1024];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        });
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(StatusCode::SWITCHING_PROTOCOLS)
                                .header("connection", "upgrade")
                                .header("upgrade", "echo")
                                .body(Full::new(Bytes::new()))
                                .expect("101"),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    up_addr
}

/// Asks the proxy at `addr` to upgrade a connection to `echo`; returns the tunnel after
/// checking the 101, or the error that closed the connection first.
pub async fn upgrade(addr: SocketAddr) -> std::io::Result<TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await?;
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    Ok(tcp)
}

/// Sends `message` through `tunnel` and reads its echo.
pub async fn echoed(tunnel: &mut TcpStream, message: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tunnel.write_all(message).await.expect("write tunnel");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1024];
    while got.len() < message.len() {
        let n = tokio::time::timeout(Duration::from_secs(10), tunnel.read(&mut buf))
            .await
            .expect("echo in time")
            .expect("read echo");
        assert!(n > 0, "tunnel closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got, message);
}
