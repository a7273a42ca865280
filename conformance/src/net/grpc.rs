//! A gRPC server on loopback (h2c; hyper's HTTP/2 server with the gRPC framing written out),
//! with the methods the gRPC probe calls on service `conformance.Echo`:
//!
//! - `Unary`: answers `echo:<message>` with status OK;
//! - `Fail`: answers trailers-only with status 7 (PERMISSION_DENIED) and message `denied`;
//! - `Stream`: sends initial metadata `x-server-md: hello`, echoes each message as
//!   `echo:<message>` as it arrives, and when the client closes its side sends trailers
//!   `grpc-status: 0`, `x-server-trailer: bye`.
//!
//! It records each call's path, metadata and messages.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::error::{Context, Result};
use crate::net::client::{Body, empty, streamed};

/// One call the server received.
#[derive(Debug, Clone)]
pub struct SeenCall {
    pub path: String,
    pub headers: HeaderMap,
    pub messages: Vec<Bytes>,
    /// Whether the client ended its side (`end_stream`).
    pub half_closed: bool,
}

type Calls = Arc<Mutex<Vec<Arc<Mutex<SeenCall>>>>>;

pub struct GrpcServer {
    pub addr: SocketAddr,
    calls: Calls,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn framed(message: &[u8]) -> Bytes {
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
        map.insert(*k, HeaderValue::from_static(v));
    }
    map
}

fn grpc_response(body: Body, extra: &[(&'static str, &'static str)]) -> Response<Body> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    for (k, v) in extra {
        response
            .headers_mut()
            .insert(*k, HeaderValue::from_static(v));
    }
    response
}

async fn serve(req: Request<Incoming>, calls: Calls) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let call = Arc::new(Mutex::new(SeenCall {
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        messages: Vec::new(),
        half_closed: false,
    }));
    calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(call.clone());
    let method = parts
        .uri
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    match method.as_str() {
        "Stream" => {
            let (tx, response_body) = streamed();
            tokio::spawn(async move {
                let mut buffer = BytesMut::new();
                while let Some(Ok(frame)) = body.frame().await {
                    if let Ok(data) = frame.into_data() {
                        buffer.extend_from_slice(&data);
                        for message in messages(&mut buffer) {
                            let mut echo = b"echo:".to_vec();
                            echo.extend_from_slice(&message);
                            call.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .messages
                                .push(message);
                            let _ = tx.send(Frame::data(framed(&echo)));
                        }
                    }
                }
                call.lock().unwrap_or_else(|e| e.into_inner()).half_closed = true;
                let _ = tx.send(Frame::trailers(trailers(&[
                    ("grpc-status", "0"),
                    ("x-server-trailer", "bye"),
                ])));
            });
            grpc_response(response_body, &[("x-server-md", "hello")])
        }
        "Fail" => {
            let _ = body.collect().await;
            grpc_response(empty(), &[("grpc-status", "7"), ("grpc-message", "denied")])
        }
        _ => {
            let mut buffer = BytesMut::new();
            if let Ok(collected) = body.collect().await {
                buffer.extend_from_slice(&collected.to_bytes());
            }
            let received = messages(&mut buffer);
            let mut echo = b"echo:".to_vec();
            if let Some(first) = received.first() {
                echo.extend_from_slice(first);
            }
            {
                let mut seen = call.lock().unwrap_or_else(|e| e.into_inner());
                seen.messages = received;
                seen.half_closed = true;
            }
            let (tx, response_body) = streamed();
            let _ = tx.send(Frame::data(framed(&echo)));
            let _ = tx.send(Frame::trailers(trailers(&[("grpc-status", "0")])));
            grpc_response(response_body, &[])
        }
    }
}

impl GrpcServer {
    pub async fn start() -> Result<GrpcServer> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .doing("binding the gRPC server")?;
        let addr = listener.local_addr().doing("the gRPC server's address")?;
        let calls: Calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let calls = recorded.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let calls = calls.clone();
                        async move { Ok::<_, std::convert::Infallible>(serve(req, calls).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(GrpcServer { addr, calls, task })
    }

    /// Every call received so far.
    pub fn calls(&self) -> Vec<SeenCall> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }
}
