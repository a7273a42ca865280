//! The client's HTTP layer: one pooled hyper client over rustls (HTTPS) or plain TCP, the
//! choice of scheme per registry, per-request time bounds, and request bodies sent in chunks
//! that report progress.
//!
//! Scheme: HTTPS, except for hosts allowed plain HTTP (the `insecure` list, `*` for all, and
//! loopback hosts, as Docker treats them). Those are tried over plain HTTP first; when the
//! answer shows a TLS server at the other end (an unparseable reply or a dropped connection,
//! or Go's "Client sent an HTTP request to an HTTPS server"), the request is sent again over
//! HTTPS — with full certificate verification — and that host stays on HTTPS for this client.
//! A TLS server is never downgraded to plain HTTP.

use std::collections::HashSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::client::ClientError;
use crate::reference::{is_loopback, split_host_port};

/// Told about a transfer as it goes: bytes done so far, and the total expected.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Request bodies go out in frames of this size, so progress can be reported.
const FRAME: usize = 256 * 1024;

/// A request body held in memory, handed to hyper frame by frame.
pub struct ReqBody {
    data: Bytes,
    sent: u64,
    total: u64,
    progress: Option<Progress>,
}

impl ReqBody {
    pub fn new(data: Bytes, progress: Option<Progress>) -> ReqBody {
        let total = data.len() as u64;
        ReqBody {
            data,
            sent: 0,
            total,
            progress,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.data.len().min(FRAME);
        let part = self.data.split_to(n);
        self.sent += n as u64;
        if let Some(p) = &self.progress {
            p(self.sent, self.total);
        }
        Poll::Ready(Some(Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.len() as u64)
    }
}

/// Where a request goes: a path on a registry (the scheme is chosen per host), or an absolute
/// URL given by a server (an upload location, a redirect, a token realm).
#[derive(Clone, Debug)]
pub enum Target {
    Registry { host: String, path: String },
    Url(Uri),
}

/// A request to send; the body is kept so the request can be sent again (after an auth
/// challenge, or over HTTPS).
#[derive(Clone)]
pub struct Outgoing {
    pub method: Method,
    pub target: Target,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub progress: Option<Progress>,
}

enum ReplyBody {
    Stream(Incoming),
    Buffered(Option<Bytes>),
}

/// A response whose body has not been read yet.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub url: String,
    body: ReplyBody,
    timeout: Duration,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next piece of the body; each read must make progress within the request timeout.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        match &mut self.body {
            ReplyBody::Buffered(b) => Ok(b.take()),
            ReplyBody::Stream(incoming) => loop {
                let frame = tokio::time::timeout(self.timeout, incoming.frame())
                    .await
                    .map_err(|_| ClientError::Timeout {
                        url: self.url.clone(),
                        after: self.timeout,
                    })?;
                match frame {
                    None => return Ok(None),
                    Some(Err(e)) => {
                        return Err(ClientError::Http {
                            url: self.url.clone(),
                            cause: chain(&e),
                        });
                    }
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data()
                            && !data.is_empty()
                        {
                            return Ok(Some(data));
                        }
                    }
                }
            },
        }
    }

    /// The whole body, refused past `limit` bytes.
    pub async fn read(&mut self, limit: usize) -> Result<Bytes, ClientError> {
        let mut out = bytes::BytesMut::new();
        while let Some(c) = self.chunk().await? {
            if out.len() + c.len() > limit {
                return Err(ClientError::Http {
                    url: self.url.clone(),
                    cause: format!("response body exceeds {limit} bytes"),
                });
            }
            out.extend_from_slice(&c);
        }
        Ok(out.freeze())
    }

    /// Up to 500 bytes of the body as text, for error messages (read errors ignored).
    pub async fn snippet(&mut self) -> String {
        let body = self.read(64 * 1024).await.unwrap_or_default();
        String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned()
    }
}

/// An error and its sources, joined: hyper's top-level messages alone say little.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// Whether a plain-HTTP attempt failed the way it does against a TLS server: the server could
/// not make sense of the request and either dropped the connection or answered with bytes
/// that are not HTTP (a TLS alert).
fn looks_like_tls_server(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(inner) = source {
        if let Some(h) = inner.downcast_ref::<hyper::Error>()
            && (h.is_parse() || h.is_incomplete_message())
        {
            return true;
        }
        if let Some(io) = inner.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        source = inner.source();
    }
    false
}

pub struct Transport {
    http: HyperClient<HttpsConnector<HttpConnector>, ReqBody>,
    insecure: Vec<String>,
    timeout: Duration,
    /// Hosts allowed plain HTTP that turned out to speak TLS.
    learned_tls: Mutex<HashSet<String>>,
}

impl Transport {
    pub fn new(tls: rustls::ClientConfig, insecure: Vec<String>, timeout: Duration) -> Transport {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Transport {
            http,
            insecure: insecure
                .into_iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            timeout,
            learned_tls: Mutex::new(HashSet::new()),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether `authority` (`host[:port]`) may be reached over plain HTTP.
    pub fn plain_allowed(&self, authority: &str) -> bool {
        if is_loopback(authority) {
            return true;
        }
        let authority = authority.to_ascii_lowercase();
        let (host, _) = split_host_port(&authority);
        self.insecure.iter().any(|e| {
            e == "*" || *e == authority || {
                let (eh, ep) = split_host_port(e);
                ep.is_none() && eh == host
            }
        })
    }

    fn uses_tls(&self, host: &str) -> bool {
        !self.plain_allowed(host)
            || self
                .learned_tls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(host)
    }

    /// Sends a request and returns the response head; the body is read from the [`Reply`].
    pub async fn send(&self, out: &Outgoing) -> Result<Reply, ClientError> {
        let (host, path) = match &out.target {
            Target::Url(uri) => return self.send_uri(out, uri.clone()).await,
            Target::Registry { host, path } => (host, path),
        };
        let url = |scheme: &str| -> Result<Uri, ClientError> {
            format!("{scheme}://{host}{path}")
                .parse()
                .map_err(|e: http::uri::InvalidUri| ClientError::Http {
                    url: format!("{scheme}://{host}{path}"),
                    cause: e.to_string(),
                })
        };
        if self.uses_tls(host) {
            return self.send_uri(out, url("https")?).await;
        }
        let plain = self.send_uri_raw(out, url("http")?).await;
        let tls_server = match &plain {
            Err(RawError::Send(e, _)) => looks_like_tls_server(e.as_ref()),
            Ok(reply) => is_tls_port_answer(reply),
            Err(_) => false,
        };
        if !tls_server {
            return plain.map_err(|e| e.into_client_error());
        }
        // When HTTPS fails too, the plain attempt's error is the one that explains.
        let reply = match self.send_uri(out, url("https")?).await {
            Ok(reply) => reply,
            Err(ClientError::Http { cause, .. })
                if !cause.contains("certificate") && !cause.contains("Certificate") =>
            {
                return plain.map_err(|e| e.into_client_error());
            }
            Err(e) => return Err(e),
        };
        tracing::debug!(%host, "registry speaks TLS; using HTTPS from now on");
        self.learned_tls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.clone());
        Ok(reply)
    }

    async fn send_uri(&self, out: &Outgoing, uri: Uri) -> Result<Reply, ClientError> {
        self.send_uri_raw(out, uri)
            .await
            .map_err(|e| e.into_client_error())
    }

    async fn send_uri_raw(&self, out: &Outgoing, uri: Uri) -> Result<Reply, RawError> {
        let url = uri.to_string();
        let mut req = Request::builder()
            .method(out.method.clone())
            .uri(uri)
            .body(ReqBody::new(out.body.clone(), out.progress.clone()))
            .map_err(|e| RawError::Other(url.clone(), e.to_string()))?;
        *req.headers_mut() = out.headers.clone();
        // The response head comes after the whole request body: allow one more second per
        // MiB of it, so a large upload on a slow link is not cut off.
        let bound = self.timeout + Duration::from_secs(out.body.len() as u64 >> 20);
        let resp = match tokio::time::timeout(bound, self.http.request(req)).await {
            Err(_) => return Err(RawError::Timeout(url, bound)),
            Ok(Err(e)) => return Err(RawError::Send(Box::new(e), url)),
            Ok(Ok(resp)) => resp,
        };
        let (parts, body) = resp.into_parts();
        let mut reply = Reply {
            status: parts.status,
            headers: parts.headers,
            url,
            body: ReplyBody::Stream(body),
            timeout: self.timeout,
        };
        if reply.status == StatusCode::BAD_REQUEST {
            // Small by nature; buffered so the TLS-port answer can be recognised.
            let body = reply.read(64 * 1024).await.unwrap_or_default();
            reply.body = ReplyBody::Buffered(Some(body));
        }
        Ok(reply)
    }
}

/// Go's servers answer a plain request on a TLS port with a 400 saying so.
fn is_tls_port_answer(reply: &Reply) -> bool {
    reply.status == StatusCode::BAD_REQUEST
        && matches!(&reply.body, ReplyBody::Buffered(Some(b))
            if contains(b, b"HTTP request to an HTTPS server"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

enum RawError {
    Send(Box<hyper_util::client::legacy::Error>, String),
    Timeout(String, Duration),
    Other(String, String),
}

impl RawError {
    fn into_client_error(self) -> ClientError {
        match self {
            RawError::Send(e, url) => ClientError::Http {
                url,
                cause: chain(e.as_ref()),
            },
            RawError::Timeout(url, after) => ClientError::Timeout { url, after },
            RawError::Other(url, cause) => ClientError::Http { url, cause },
        }
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("body_len", &self.body.len())
            .finish()
    }
}
