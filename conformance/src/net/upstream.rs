//! An upstream HTTP server on loopback (HTTP/1.1 and h2c) that records every request it
//! receives — method, path, headers, body, trailers — and answers as its handler says.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::error::{Context, Result};
use crate::net::client::{Body, streamed};

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Seen {
    /// Every value of header `name`, as text (lossy), joined with `,`.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Header `name`'s raw bytes (first value), as the probes show bytes.
    pub fn header_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.headers.get(name).map(|v| v.as_bytes().to_vec())
    }

    pub fn trailer(&self, name: &str) -> String {
        self.trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    }
}

/// How the upstream answers.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sent after the body (h2, or HTTP/1.1 chunked to a client that accepts them).
    pub trailers: Vec<(String, String)>,
}

impl Answer {
    /// 200 with `x-upstream: <name>` and `body`.
    pub fn ok(name: &str, body: &str) -> Answer {
        Answer {
            status: 200,
            headers: vec![("x-upstream".into(), name.into())],
            body: body.as_bytes().to_vec(),
            trailers: Vec::new(),
        }
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn to_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            map.append(k, v);
        }
    }
    map
}

async fn serve_one(
    req: Request<Incoming>,
    handler: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let (body, trailers) = match body.collect().await {
        Ok(c) => {
            let trailers = c.trailers().cloned();
            (c.to_bytes(), trailers)
        }
        Err(_) => (Bytes::new(), None),
    };
    let request = Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
        trailers,
    };
    let answer = handler(&request);
    seen.lock().unwrap_or_else(|e| e.into_inner()).push(request);
    let (tx, body) = streamed();
    let _ = tx.send(Frame::data(Bytes::from(answer.body.clone())));
    if !answer.trailers.is_empty() {
        let _ = tx.send(Frame::trailers(to_map(&answer.trailers)));
    }
    drop(tx);
    let mut response = Response::new(body);
    *response.status_mut() = http::StatusCode::from_u16(answer.status)
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    *response.headers_mut() = to_map(&answer.headers);
    response
}

impl Upstream {
    /// Starts serving on a free loopback port.
    pub async fn start(
        handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
    ) -> Result<Upstream> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .doing("binding an upstream")?;
        let addr = listener.local_addr().doing("the upstream's address")?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, seen) = (handler.clone(), recorded.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (handler, seen) = (handler.clone(), seen.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(serve_one(req, handler, seen).await)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(Upstream { addr, seen, task })
    }

    /// Answers every request `200 <name>` with `x-upstream: <name>`.
    pub async fn named(name: &'static str) -> Result<Upstream> {
        Upstream::start(move |_| Answer::ok(name, name)).await
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Result<Seen> {
        self.seen().pop().doing("the request the upstream received")
    }

    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
