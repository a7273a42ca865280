//! The built-in demo: small upstream services that describe the request they received, an
//! embedded filter registry holding the stock filters, and the default configuration that puts
//! the proxy in front of them with a filter chain pulled from that registry. `wasmesh demo` runs
//! all of it, so a fresh checkout shows a working proxy with one command — and pushing a new
//! filter to the demo's tag rolls it out live. The bench and tests reuse the upstream, which can
//! also answer a fixed body (so every proxy in a benchmark gets the same response) and serve TLS
//! with client-certificate verification (the upstream of the bench's mTLS scenario).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::body::{self, ProxyBody};
use crate::config::{self, Config};

/// How a demo upstream answers, beyond the default description of each request.
#[derive(Clone, Default)]
pub struct UpstreamOptions {
    /// Answer every request (but `/healthz`) with `200` and this body, `text/plain`, instead of a
    /// description of the request — whose size would depend on the headers a proxy added.
    pub fixed_body: Option<Bytes>,
    /// Serve TLS with this configuration (HTTP/1.1 or HTTP/2 inside, whichever the client speaks).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Starts a demo upstream on `address` (port 0 picks one) and returns where it listens.
///
/// `GET /healthz` answers `ok`; any other request gets a JSON description of itself (service
/// name, method, path, headers, body length), which is what a person trying the proxy wants to see.
pub async fn spawn_upstream(name: &str, address: SocketAddr) -> std::io::Result<SocketAddr> {
    spawn_upstream_with(name, address, UpstreamOptions::default()).await
}

/// [`spawn_upstream`] with a fixed answer and/or TLS. Plain connections may speak HTTP/1.1 or
/// HTTP/2 with prior knowledge (h2c); a TLS handshake that fails (say, no client certificate when
/// one is required) closes that connection only.
pub async fn spawn_upstream_with(
    name: &str,
    address: SocketAddr,
    options: UpstreamOptions,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let name: Arc<str> = name.into();
    let acceptor = options.tls.map(tokio_rustls::TlsAcceptor::from);
    let fixed_body = options.fixed_body;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let name = name.clone();
            let fixed_body = fixed_body.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let name = name.clone();
                    let fixed_body = fixed_body.clone();
                    async move {
                        match fixed_body {
                            Some(body) => respond_fixed(body, req).await,
                            None => respond(name, bound, req).await,
                        }
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                            .await;
                    }
                }
            });
        }
    });
    Ok(bound)
}

/// The fixed answer: the request body is read (so the connection can be reused) and dropped.
async fn respond_fixed(
    body: Bytes,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    if req.uri().path() == "/healthz" {
        return Ok(Response::new(body::full("ok\n")));
    }
    if req.into_body().collect().await.is_err() {
        let mut r = Response::new(body::full("bad body\n"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(r);
    }
    let mut response = Response::new(body::full(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    Ok(response)
}

async fn respond(
    name: Arc<str>,
    instance: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    if req.uri().path() == "/healthz" {
        return Ok(Response::new(body::full("ok\n")));
    }
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let version = format!("{:?}", req.version());
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let body_len = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => {
            let mut r = Response::new(body::full("bad body\n"));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(r);
        }
    };
    let description = serde_json::json!({
        "service": &*name,
        "instance": instance.to_string(),
        "method": method,
        "path": path,
        "version": version,
        "headers": headers,
        "body_bytes": body_len,
    });
    let mut response = Response::new(body::full(
        serde_json::to_vec_pretty(&description).unwrap_or_default(),
    ));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        "x-demo-instance",
        header::HeaderValue::from_str(&instance.to_string())
            .unwrap_or(header::HeaderValue::from_static("?")),
    );
    Ok(response)
}

/// The demo's configuration: one listener, one route table, one round-robin cluster over the
/// demo upstreams with active health checks and outlier detection, and — when there is a
/// filter (`source`: `oci://…` from the embedded registry, or `file://…`) — the stock `headers`
/// filter on the listener's chain, following its tag when it comes from a registry.
pub fn config(
    listen: &str,
    admin: &str,
    upstreams: &[SocketAddr],
    source: Option<&str>,
) -> Result<Config, config::ConfigErrors> {
    let (listener_chain, chains) = match source {
        Some(source) => {
            let follow = if source.starts_with("oci://") {
                "\n        follow: true\n        poll_interval: 2s"
            } else {
                ""
            };
            (
                "    filter_chain: demo\n".to_string(),
                format!(
                    r#"
filter_chains:
  - name: demo
    plugins:
      - name: headers
        source: "{source}"{follow}
        failure_policy: fail_open
        config:
          request: {{ set: {{ x-wasmesh-filter: headers }} }}
          response: {{ set: {{ x-wasmesh-demo: "hello from a wasm filter" }} }}
"#
                ),
            )
        }
        None => (String::new(), String::new()),
    };
    let yaml = format!(
        r#"
listeners:
  - name: demo
    address: "{listen}"
    route_config: demo
{listener_chain}routes:
  - name: demo
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: default
            match: {{ prefix: "/" }}
            cluster: demo
            timeout: 5s
            retry_policy:
              retry_on: [connect-failure, gateway-error]
              num_retries: 2
clusters:
  - name: demo
    endpoints: [{endpoints}]
    lb_policy: round_robin
    health_check:
      path: /healthz
      interval: 2s
    outlier_detection:
      consecutive_5xx: 3
admin:
  address: "{admin}"
{chains}"#,
        endpoints = upstreams
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // `--listen`/`--admin` come from the command line, so they are checked like any file.
    config::load_str(&yaml, "<demo>")
}

/// The stock filters `./setup.sh` built in this checkout: (name, path), e.g.
/// `("headers", …/wasmesh_filter_headers.wasm)`.
pub fn built_filters() -> Vec<(String, std::path::PathBuf)> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip1/release");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut filters: Vec<(String, std::path::PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let name = file
                .strip_prefix("wasmesh_filter_")?
                .strip_suffix(".wasm")?
                .replace('_', "-");
            let path = e.path();
            Some((name, std::path::absolute(&path).unwrap_or(path)))
        })
        .collect();
    filters.sort();
    filters
}

/// Starts the demo's registry on `listen` (a loopback address: it takes pushes without a
/// token) over `root`, and publishes every built stock filter as `filters/NAME:latest`.
/// Returns the registry and the references it published.
pub async fn spawn_registry(
    listen: SocketAddr,
    root: std::path::PathBuf,
) -> anyhow::Result<(wasmesh_registry::server::RunningRegistry, Vec<String>)> {
    use anyhow::Context;
    let registry = wasmesh_registry::server::serve(wasmesh_registry::server::RegistryConfig {
        root: root.clone(),
        listen,
        push_token: None,
        pull_token: None,
    })
    .await
    .with_context(|| {
        format!(
            "starting the demo registry on {listen} over {}",
            root.display()
        )
    })?;
    let host = registry.local_addr();
    let mut published = Vec::new();
    for (name, path) in built_filters() {
        let wasm = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let reference = format!("oci://{host}/filters/{name}:latest");
        let mut annotations = std::collections::BTreeMap::new();
        annotations.insert(
            "org.opencontainers.image.title".to_string(),
            format!("{name}.wasm"),
        );
        wasmesh_registry::client::push(&reference, &wasm, &annotations, None)
            .await
            .with_context(|| format!("publishing {name} to the demo registry"))?;
        published.push(reference);
    }
    Ok((registry, published))
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_config_is_valid() {
        let upstreams = ["127.0.0.1:1".parse().expect("addr")];
        let yaml_config =
            super::config("127.0.0.1:8080", "127.0.0.1:9901", &upstreams, None).expect("valid");
        assert_eq!(yaml_config.listeners.len(), 1);
        assert_eq!(
            yaml_config.clusters[0].endpoints,
            vec!["127.0.0.1:1".to_string()]
        );
    }
}
