//! A plain OCI distribution client speaking the wire protocol directly (HTTP/1.1, plain or
//! over TLS with the Mozilla roots), so every status and header a registry answers is seen.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest as _, Sha256, Sha512};

use crate::error::{Context, Error, Result};

/// What a registry answered.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// `"<status> <body>"`, for failure messages.
    pub fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(200).collect();
        format!("{} {}", self.status, body.trim())
    }
}

pub struct Client {
    http: Hyper<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `scheme://host[:port]`, no trailing slash.
    base: String,
    authorization: Option<String>,
}

/// The limit on one exchange with a registry.
const LIMIT: Duration = Duration::from_secs(60);

impl Client {
    /// A client for the registry at `base` (`http://127.0.0.1:5000`, `https://registry.example`);
    /// with `credentials` (`user`, `password`) every request carries HTTP Basic auth.
    pub fn new(base: &str, credentials: Option<(String, String)>) -> Result<Client> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .doing("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let authorization = credentials.map(|(user, password)| {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        });
        Ok(Client {
            http: Hyper::builder(TokioExecutor::new()).build(https),
            base: base.trim_end_matches('/').to_string(),
            authorization,
        })
    }

    /// A full URL for a path (`/v2/…`), or for a `Location` the registry gave (absolute, or
    /// relative to the registry).
    pub fn url(&self, path_or_location: &str) -> String {
        if path_or_location.starts_with("http://") || path_or_location.starts_with("https://") {
            path_or_location.to_string()
        } else if path_or_location.starts_with('/') {
            format!("{}{path_or_location}", self.base)
        } else {
            format!("{}/{path_or_location}", self.base)
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Resp> {
        let url = self.url(path);
        let mut builder = Request::builder().method(method.clone()).uri(&url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        if let Some(auth) = &self.authorization {
            builder = builder.header("authorization", auth);
        }
        let request = builder
            .body(Full::new(Bytes::copy_from_slice(body)))
            .doing(&format!("building {method} {url}"))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .doing(&format!("{method} {url}"))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .doing(&format!("reading the answer to {method} {url}"))?
                .to_bytes();
            Ok::<_, Error>(Resp {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(LIMIT, exchange)
            .await
            .map_err(|_| Error(format!("{method} {url} took longer than {LIMIT:?}")))?
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Resp> {
        self.send(Method::GET, path, headers, b"").await
    }

    pub async fn head(&self, path: &str, headers: &[(&str, &str)]) -> Result<Resp> {
        self.send(Method::HEAD, path, headers, b"").await
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// `sha512:<hex>` of `data`.
pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex(&Sha512::digest(data)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `location` with query parameter `key=value` added.
pub fn with_query(location: &str, key: &str, value: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{key}={value}")
}
