//! Filters' gRPC calls and streams (`proxy_grpc_call`, `proxy_grpc_stream`), sent through the
//! running snapshot's clusters as Envoy's gRPC client sends them: the upstream name is a
//! cluster name, and that cluster must speak HTTP/2 (h2c, or h2 over TLS).
//!
//! On the wire: `POST /{service}/{method}` with `content-type: application/grpc`,
//! `te: trailers`, `grpc-timeout` for a unary call's deadline, the filter's metadata as headers
//! (`-bin` values base64-encoded), and messages length-prefixed both ways (a zero compression
//! flag, a 4-byte big-endian length; at most [`MAX_MESSAGE`]). Requests go through the
//! cluster's pool, so its TLS, connection limits and `max_requests` breaker apply, and
//! outcomes feed outlier detection.
//!
//! What comes back is reported to the host as it arrives, in Envoy's order (see
//! `Envoy::Grpc::AsyncStreamImpl`): initial metadata (the response headers; empty ones for a
//! trailers-only response or an HTTP error), each message, trailing metadata (the trailers;
//! empty ones when the call failed below gRPC), then the status:
//!
//! | what happened | gRPC status |
//! |---|---|
//! | trailers, or a trailers-only response | their `grpc-status` (UNKNOWN if absent) |
//! | HTTP status other than 200 without `grpc-status` | by `http_to_grpc` (gRPC's mapping) |
//! | no endpoint, breaker overflow, connect failure, reset before headers | UNAVAILABLE |
//! | the unary call's deadline passed | DEADLINE_EXCEEDED |
//! | a message over [`MAX_MESSAGE`], either way | RESOURCE_EXHAUSTED |
//! | a compressed message (none was negotiated), a reset after the headers | INTERNAL |
//! | the response ended without trailers | UNKNOWN |
//!
//! The status message is `grpc-message`, percent-decoded, or says what failed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};
use wasmesh_host::{GrpcCode, GrpcError, GrpcKind, GrpcOutbound, GrpcReply, GrpcRequest};

use super::pairs::{push_headers, response_pairs};
use crate::body::{BoxError, ProxyBody};
use crate::cluster::Cluster;
use crate::cluster::outlier::Outcome;
use crate::cluster::pool::PooledBody;
use crate::config::UpstreamProtocol;

/// Largest message sent or received (gRPC's usual default receive limit).
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// How a call ended: a gRPC status code and its message.
type Status = (u32, String);

fn status(code: GrpcCode, message: impl Into<String>) -> Status {
    (code.code(), message.into())
}

/// Starts a filter's gRPC call or stream on the cluster it names (see the module docs).
pub fn start(
    snapshot: &arc_swap::ArcSwap<crate::server::Snapshot>,
    request: GrpcRequest,
    reply: GrpcReply,
) -> Result<Box<dyn GrpcOutbound>, GrpcError> {
    let cluster = snapshot
        .load()
        .clusters
        .get(&request.upstream)
        .cloned()
        .ok_or_else(|| GrpcError::UnknownUpstream(request.upstream.clone()))?;
    if cluster.config.protocol != UpstreamProtocol::Http2 {
        return Err(GrpcError::Refused(format!(
            "cluster \"{}\" speaks HTTP/1.1; gRPC needs `protocol: http2`",
            cluster.name
        )));
    }
    let head = Head::new(&cluster, &request)?;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| GrpcError::Refused("no runtime to run the gRPC call on".into()))?;
    let (body, messages, deadline) = match request.kind {
        GrpcKind::Call { message, timeout } => {
            let body = if message.len() > MAX_MESSAGE {
                Err(too_large("sent", message.len()))
            } else {
                Ok(crate::body::full(frame(&message)))
            };
            (body, None, timeout)
        }
        GrpcKind::Stream => {
            let (sender, receiver) = mpsc::unbounded_channel();
            (Ok(MessageBody(receiver).boxed_unsync()), Some(sender), None)
        }
    };
    let (fail, failed) = oneshot::channel::<Status>();
    let task = runtime.spawn(async move {
        let call = async {
            match deadline {
                Some(limit) => tokio::time::timeout(limit, exchange(&cluster, head, body, &reply))
                    .await
                    .unwrap_or_else(|_| {
                        status(
                            GrpcCode::DeadlineExceeded,
                            format!("deadline exceeded after {}ms", limit.as_millis()),
                        )
                    }),
                None => exchange(&cluster, head, body, &reply).await,
            }
        };
        let (code, message) = tokio::select! {
            biased;
            Ok(failure) = failed => failure,
            outcome = call => outcome,
        };
        reply.close(code, &message);
    });
    Ok(Box::new(Outbound {
        messages,
        fail: Some(fail),
        task,
    }))
}

/// The request line and headers of a call, checked when the filter makes it.
struct Head {
    uri: Uri,
    headers: HeaderMap,
}

impl Head {
    fn new(cluster: &Cluster, request: &GrpcRequest) -> Result<Head, GrpcError> {
        if request.service.is_empty() || request.method.is_empty() {
            return Err(GrpcError::Refused(
                "a gRPC call needs a service and a method name".into(),
            ));
        }
        // Envoy's gRPC client sends the cluster name as `:authority`.
        let authority = match http::uri::Authority::try_from(&*cluster.name) {
            Ok(authority) => authority.to_string(),
            Err(_) => cluster
                .config
                .endpoints
                .first()
                .cloned()
                .unwrap_or_default(),
        };
        let uri = format!(
            "{}://{authority}/{}/{}",
            cluster.scheme, request.service, request.method
        );
        let uri = Uri::try_from(uri).map_err(|_| {
            GrpcError::Refused(format!(
                "\"{}/{}\" is not a usable gRPC service and method",
                request.service, request.method
            ))
        })?;
        let mut headers = HeaderMap::new();
        for (name, value) in &request.initial_metadata {
            if let Some((name, value)) = metadata_header(name, value) {
                headers.append(name, value);
            }
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        if let GrpcKind::Call {
            timeout: Some(limit),
            ..
        } = &request.kind
            && let Ok(value) = HeaderValue::try_from(grpc_timeout(*limit))
        {
            headers.insert(HeaderName::from_static("grpc-timeout"), value);
        }
        Ok(Head { uri, headers })
    }
}

/// One metadata entry as a request header: `-bin` values base64-encoded (as Envoy and gRPC
/// send binary metadata); pseudo headers, the headers gRPC itself sets and HTTP/2's forbidden
/// connection headers are left out, as are names or values that are not valid HTTP.
fn metadata_header(name: &str, value: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    const RESERVED: &[&str] = &[
        "content-type",
        "te",
        "grpc-timeout",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ];
    if name.starts_with(':') || RESERVED.contains(&name) {
        return None;
    }
    let header = HeaderName::from_bytes(name.as_bytes()).ok()?;
    let value = if name.ends_with("-bin") {
        HeaderValue::try_from(base64::engine::general_purpose::STANDARD.encode(value)).ok()?
    } else {
        HeaderValue::from_bytes(value).ok()?
    };
    Some((header, value))
}

/// A deadline as `grpc-timeout` writes it: at most eight digits and a unit.
fn grpc_timeout(limit: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let millis = limit.as_millis().max(1);
    if millis <= MAX {
        return format!("{millis}m");
    }
    let seconds = u128::from(limit.as_secs() + u64::from(limit.subsec_nanos() > 0));
    if seconds <= MAX {
        return format!("{seconds}S");
    }
    format!("{}H", (seconds / 3600).min(MAX))
}

/// A message with its gRPC frame header: no compression, 4-byte big-endian length.
fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.extend_from_slice(&[0]);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed.freeze()
}

fn too_large(direction: &str, len: usize) -> Status {
    status(
        GrpcCode::ResourceExhausted,
        format!("{direction} message larger than max ({len} vs. {MAX_MESSAGE})"),
    )
}

/// Cuts a response body into messages; never holds more than one message and one chunk.
#[derive(Default)]
struct Decoder {
    buffer: BytesMut,
}

impl Decoder {
    fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next whole message, if one has arrived.
    fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        let Some(header) = self.buffer.get(..5) else {
            return Ok(None);
        };
        let flag = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if flag != 0 {
            return Err(status(
                GrpcCode::Internal,
                "compressed message received, but no compression was negotiated",
            ));
        }
        if len > MAX_MESSAGE {
            return Err(too_large("received", len));
        }
        if self.buffer.len() < 5 + len {
            return Ok(None);
        }
        self.buffer.advance(5);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }
}

/// Sends the call and reports what comes back; returns the status it ended with.
async fn exchange(
    cluster: &Arc<Cluster>,
    head: Head,
    body: Result<ProxyBody, Status>,
    reply: &GrpcReply,
) -> Status {
    let body = match body {
        Ok(body) => body,
        Err(failure) => return failure,
    };
    let _permit = match cluster.breaker.try_request() {
        Ok(permit) => permit,
        Err(overflow) => {
            return status(
                GrpcCode::Unavailable,
                format!("upstream overflow ({})", overflow.as_str()),
            );
        }
    };
    let Some(upstream) = cluster.pick(&HeaderMap::new()) else {
        return status(GrpcCode::Unavailable, "no healthy upstream");
    };
    let _in_flight = upstream.endpoint.start_request();
    let mut request = Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = head.uri;
    *request.headers_mut() = head.headers;
    let response = match upstream.pool.send(request).await {
        Ok(response) => response,
        Err(err) => {
            cluster.observe(upstream.index, Outcome::GatewayFailure);
            let what = if err.is_connect() {
                "upstream connect error"
            } else {
                "upstream reset before response headers"
            };
            return status(GrpcCode::Unavailable, format!("{what}: {err}"));
        }
    };
    let outcome = if response.status().is_server_error() {
        Outcome::ServerError
    } else {
        Outcome::Success
    };
    cluster.observe(upstream.index, outcome);
    receive(response, reply).await
}

/// Reports the response as it arrives (see the module docs for the order).
async fn receive(response: http::Response<PooledBody>, reply: &GrpcReply) -> Status {
    let (parts, mut body) = response.into_parts();
    let trailers_only =
        http_body::Body::is_end_stream(&body) || parts.headers.contains_key("grpc-status");
    if parts.status != StatusCode::OK {
        reply.initial_metadata(Vec::new());
        if trailers_only && let Some(code) = grpc_status(&parts.headers) {
            reply.trailing_metadata(response_pairs(parts.status, &parts.headers));
            return (code, grpc_message(&parts.headers));
        }
        reply.trailing_metadata(Vec::new());
        return (
            http_to_grpc(parts.status),
            format!("the upstream answered HTTP {}", parts.status),
        );
    }
    if trailers_only {
        reply.initial_metadata(Vec::new());
        reply.trailing_metadata(response_pairs(parts.status, &parts.headers));
        return trailer_status(&parts.headers);
    }
    reply.initial_metadata(response_pairs(parts.status, &parts.headers));
    let mut decoder = Decoder::default();
    let failed = |reply: &GrpcReply, failure: Status| {
        reply.trailing_metadata(Vec::new());
        failure
    };
    loop {
        let frame = match body.frame().await {
            None => {
                return failed(
                    reply,
                    status(
                        GrpcCode::Unknown,
                        "the upstream ended the response without a gRPC status",
                    ),
                );
            }
            Some(Err(err)) => {
                return failed(
                    reply,
                    status(GrpcCode::Internal, format!("upstream reset: {err}")),
                );
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                decoder.push(&data);
                loop {
                    match decoder.next_message() {
                        Ok(Some(message)) => reply.message(message.to_vec()),
                        Ok(None) => break,
                        Err(failure) => return failed(reply, failure),
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let mut pairs = Vec::with_capacity(trailers.len());
                    push_headers(&mut pairs, &trailers);
                    reply.trailing_metadata(pairs);
                    return trailer_status(&trailers);
                }
            }
        }
    }
}

/// The status trailers (or a trailers-only response's headers) carry; UNKNOWN without one.
fn trailer_status(headers: &HeaderMap) -> Status {
    (
        grpc_status(headers).unwrap_or(GrpcCode::Unknown.code()),
        grpc_message(headers),
    )
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(GrpcCode::Unknown.code()),
    )
}

/// `grpc-message`, percent-decoded as the gRPC protocol encodes it.
fn grpc_message(headers: &HeaderMap) -> String {
    let Some(raw) = headers.get("grpc-message").map(HeaderValue::as_bytes) else {
        return String::new();
    };
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The gRPC status for an HTTP answer that has none (gRPC's "HTTP to gRPC status code
/// mapping", as Envoy applies it): 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
/// 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, anything else UNKNOWN.
fn http_to_grpc(status: StatusCode) -> u32 {
    let code = match status.as_u16() {
        400 => GrpcCode::Internal,
        401 => GrpcCode::Unauthenticated,
        403 => GrpcCode::PermissionDenied,
        404 => GrpcCode::Unimplemented,
        429 | 502 | 503 | 504 => GrpcCode::Unavailable,
        _ => GrpcCode::Unknown,
    };
    code.code()
}

/// A stream's request body: the messages the filter sends, framed, until its side closes.
struct MessageBody(mpsc::UnboundedReceiver<Bytes>);

impl http_body::Body for MessageBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|message| message.map(|m| Ok(Frame::data(m))))
    }
}

/// The host's handle on one call: the stream's message channel, a way to fail the call, and
/// the task running it (stopped when the handle is dropped).
struct Outbound {
    messages: Option<mpsc::UnboundedSender<Bytes>>,
    fail: Option<oneshot::Sender<Status>>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcOutbound for Outbound {
    fn send(&mut self, message: Vec<u8>, end_stream: bool) {
        if message.len() > MAX_MESSAGE {
            // gRPC clients fail the call rather than send it.
            if let Some(fail) = self.fail.take() {
                let _ = fail.send(too_large("sent", message.len()));
            }
            self.messages = None;
            return;
        }
        if let Some(messages) = &self.messages {
            // A closed channel means the call already ended; its status is on its way.
            let _ = messages.send(frame(&message));
        }
        if end_stream {
            self.messages = None;
        }
    }

    fn close(&mut self) {
        // Ends the request body: the stream's END_STREAM.
        self.messages = None;
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        // Cancelled, or ended: either way nothing more is wanted from the upstream (dropping
        // the exchange resets its HTTP/2 stream).
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_are_cut_at_message_boundaries() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&frame(b"hello"));
        wire.extend_from_slice(&frame(b""));
        wire.extend_from_slice(&frame(b"world"));
        let mut decoder = Decoder::default();
        let mut got = Vec::new();
        // Fed a byte at a time, as a slow upstream might.
        for byte in wire.iter() {
            decoder.push(&[*byte]);
            while let Some(m) = decoder.next_message().expect("valid") {
                got.push(m);
            }
        }
        assert_eq!(got, vec![&b"hello"[..], &b""[..], &b"world"[..]]);
        assert_eq!(&frame(b"ab")[..], &[0, 0, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn oversized_and_compressed_messages_are_refused_early() {
        let mut decoder = Decoder::default();
        decoder.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            decoder.next_message().map_err(|s| s.0),
            Err(GrpcCode::ResourceExhausted.code())
        );
        let mut decoder = Decoder::default();
        decoder.push(&[1, 0, 0, 0, 1, b'x']);
        assert_eq!(
            decoder.next_message().map_err(|s| s.0),
            Err(GrpcCode::Internal.code())
        );
    }

    #[test]
    fn statuses_and_messages_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(trailer_status(&h), (2, String::new()));
        h.insert("grpc-status", HeaderValue::from_static("7"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("denied: caf%C3%A9 100%"),
        );
        assert_eq!(trailer_status(&h), (7, "denied: café 100%".to_string()));
        h.insert("grpc-status", HeaderValue::from_static("x"));
        assert_eq!(grpc_status(&h), Some(2));
        for (http, grpc) in [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (503, 14),
            (500, 2),
        ] {
            assert_eq!(
                http_to_grpc(StatusCode::from_u16(http).expect("status")),
                grpc
            );
        }
    }

    #[test]
    fn deadlines_and_metadata_on_the_wire() {
        assert_eq!(grpc_timeout(Duration::from_millis(250)), "250m");
        assert_eq!(grpc_timeout(Duration::from_micros(10)), "1m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
        let (name, value) = metadata_header("x-trace-bin", &[0, 1]).expect("binary");
        assert_eq!(
            (name.as_str(), value.to_str().ok()),
            ("x-trace-bin", Some("AAE="))
        );
        assert!(metadata_header(":authority", b"x").is_none());
        assert!(metadata_header("content-type", b"text/plain").is_none());
        assert!(metadata_header("bad name", b"x").is_none());
        assert!(metadata_header("x-user", b"alice").is_some());
    }
}
