//! An HTTP client over one fresh connection per request: HTTP/1.1 or h2c with prior
//! knowledge (optionally over TLS), request bodies given whole or streamed frame by frame
//! (trailers included), and responses collected with their trailers.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::error::{Context, Error, Result};
use crate::net::EXCHANGE_LIMIT;

pub type Body = BoxBody<Bytes, Infallible>;

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// The first value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of trailer `name`, as text.
    pub fn trailer(&self, name: &str) -> Option<String> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body fed frame by frame (data, then optionally trailers) through the returned sender.
pub fn streamed() -> (tokio::sync::mpsc::UnboundedSender<Frame<Bytes>>, Body) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Frame<Bytes>>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|frame| (Ok::<_, Infallible>(frame), rx))
    });
    (tx, StreamBody::new(stream).boxed())
}

/// A request to `path` with `Host: conformance.local` and `headers`.
pub fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Result<Request<Body>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "conformance.local");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(body).doing("building a request")
}

/// Sends `req` over a fresh TCP connection to `addr`.
pub async fn send(addr: SocketAddr, req: Request<Body>, h2: bool) -> Result<Reply> {
    let tcp = TcpStream::connect(addr)
        .await
        .doing(&format!("connecting to {addr}"))?;
    send_on(TokioIo::new(tcp), req, h2).await
}

/// Sends `req` over `io` (plain TCP or TLS).
pub async fn send_on<IO>(io: IO, req: Request<Body>, h2: bool) -> Result<Reply>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let exchange = async move {
        let response = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .doing("HTTP/2 handshake")?;
            tokio::spawn(conn);
            sender.send_request(req).await.doing("HTTP/2 request")?
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .doing("HTTP/1.1 handshake")?;
            tokio::spawn(conn);
            sender.send_request(req).await.doing("HTTP/1.1 request")?
        };
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.doing("reading the response body")?;
        let trailers = collected.trailers().cloned();
        Ok::<_, Error>(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    };
    tokio::time::timeout(EXCHANGE_LIMIT, exchange)
        .await
        .map_err(|_| Error("an HTTP exchange took longer than its limit".into()))?
}

/// GETs `path` on `addr` (HTTP/1.1) and returns the body as text; for admin endpoints.
pub async fn get_text(addr: SocketAddr, path: &str) -> Result<String> {
    let reply = send(addr, request("GET", path, &[], empty())?, false).await?;
    Ok(reply.text())
}
