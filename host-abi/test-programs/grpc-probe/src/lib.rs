//! A gRPC probe filter written against the published `proxy-wasm` SDK, the way an Envoy filter
//! author would write gRPC callouts. Request headers choose what it does:
//!
//! - `x-grpc-call: CLUSTER` authorizes the request by a unary call to
//!   `wasmesh.test.Auth/Check` on CLUSTER: the request's `:path` is the message, the metadata
//!   `x-user` (the request's `x-user`) and `x-trace-bin` (bytes `00 01`), the timeout
//!   `x-grpc-timeout-ms` (default 1000). The request pauses; on status OK it resumes with the
//!   answer in `x-auth`; on UNAVAILABLE or DEADLINE_EXCEEDED it is answered 503 (the auth
//!   service is down: fail closed), on any other status 403; both carry the status and its
//!   message in `x-grpc-status` and `x-grpc-message`. A call the host refuses is answered
//!   500 with the refusal in `x-grpc-dispatch` (`ParseFailure`, `InternalFailure`).
//! - `x-grpc-cancel: CLUSTER` makes the same call without pausing, and cancels it when the
//!   response headers come (`x-grpc-cancelled: TOKEN` on the response).
//! - `x-grpc-stream: CLUSTER` opens a stream to `wasmesh.test.Echo/Chat` with metadata
//!   `x-user`, sends the comma-separated messages of `x-grpc-send`, and pauses. How it closes
//!   its side: `x-grpc-half-close: end` (the last message carries end_stream; the default),
//!   `close` (`close_grpc_stream` after the last message) or `none`. What comes back is
//!   collected, and when the stream closes the request resumes with `x-echo-messages` (the
//!   messages, comma-separated), `x-echo-initial` and `x-echo-trailer` (the metadata entries
//!   of those names), `x-grpc-status` and `x-grpc-message`. A stream the filter has not closed
//!   is closed when the response headers come, long after its remote end closed: that must
//!   succeed (Envoy keeps the stream until then, and the SDK unwraps the result); the response
//!   then carries `x-grpc-closed: TOKEN`.
//!
//! Every gRPC callback is logged (`grpc <callback> token=… …`), so tests can check which ran
//! and in what order.

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(GrpcProbeRoot) });
}}

struct GrpcProbeRoot;

impl Context for GrpcProbeRoot {}

impl RootContext for GrpcProbeRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(GrpcProbe::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Default)]
struct GrpcProbe {
    /// The call to cancel when the response headers come (`x-grpc-cancel`).
    to_cancel: Option<u32>,
    /// What the stream brought back.
    messages: Vec<String>,
    initial: Option<String>,
    trailer: Option<String>,
    /// The stream's local side is closed (`close_grpc_stream` was called).
    closed: bool,
    /// A stream whose remote end closed and whose local side is still to close.
    to_close: Option<u32>,
}

fn log(message: &str) {
    let _ = proxy_wasm::hostcalls::log(LogLevel::Info, message);
}

fn text(bytes: Option<Vec<u8>>) -> String {
    bytes
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

impl GrpcProbe {
    fn check(&self, cluster: &str) -> Result<u32, proxy_wasm::types::Status> {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let user = self.get_http_request_header("x-user").unwrap_or_default();
        let timeout_ms = self
            .get_http_request_header("x-grpc-timeout-ms")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1000);
        self.dispatch_grpc_call(
            cluster,
            "wasmesh.test.Auth",
            "Check",
            vec![("x-user", user.as_bytes()), ("x-trace-bin", &[0, 1])],
            Some(path.as_bytes()),
            Duration::from_millis(timeout_ms),
        )
    }

    fn open_stream(&mut self, cluster: &str) -> Action {
        let user = self.get_http_request_header("x-user").unwrap_or_default();
        let token = match self.open_grpc_stream(
            cluster,
            "wasmesh.test.Echo",
            "Chat",
            vec![("x-user", user.as_bytes())],
        ) {
            Ok(token) => token,
            Err(status) => {
                let refusal = format!("{status:?}");
                self.send_http_response(
                    500,
                    vec![("x-grpc-dispatch", &refusal)],
                    Some(b"open failed"),
                );
                return Action::Pause;
            }
        };
        let sends = self
            .get_http_request_header("x-grpc-send")
            .unwrap_or_default();
        let messages: Vec<&str> = sends.split(',').filter(|m| !m.is_empty()).collect();
        let mode = self
            .get_http_request_header("x-grpc-half-close")
            .unwrap_or_else(|| "end".into());
        for (i, message) in messages.iter().enumerate() {
            let last = i + 1 == messages.len();
            self.send_grpc_stream_message(token, Some(message.as_bytes()), last && mode == "end");
        }
        if mode == "close" {
            self.close_grpc_stream(token);
            self.closed = true;
        }
        Action::Pause
    }
}

impl Context for GrpcProbe {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        log(&format!(
            "grpc call_response token={token_id} status={status_code} size={response_size}"
        ));
        if status_code == 0 {
            let answer = text(self.get_grpc_call_response_body(0, response_size));
            self.set_http_request_header("x-auth", Some(&answer));
            self.resume_http_request();
            return;
        }
        let (code, message) = self.get_grpc_status();
        let message = message.unwrap_or_default();
        let (status, body): (u32, &[u8]) = match code {
            4 | 14 => (503, b"auth unavailable"),
            _ => (403, b"denied"),
        };
        self.send_http_response(
            status,
            vec![
                ("x-grpc-status", &code.to_string()),
                ("x-grpc-message", &message),
            ],
            Some(body),
        );
    }

    fn on_grpc_stream_initial_metadata(&mut self, token_id: u32, num_elements: u32) {
        log(&format!(
            "grpc stream_initial_metadata token={token_id} n={num_elements}"
        ));
        self.initial = self
            .get_grpc_stream_initial_metadata_value("x-echo-initial")
            .map(|v| String::from_utf8_lossy(&v).into_owned());
    }

    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        let message = text(self.get_grpc_stream_message(0, message_size));
        log(&format!(
            "grpc stream_message token={token_id} message={message}"
        ));
        self.messages.push(message);
    }

    fn on_grpc_stream_trailing_metadata(&mut self, token_id: u32, num_elements: u32) {
        log(&format!(
            "grpc stream_trailing_metadata token={token_id} n={num_elements}"
        ));
        self.trailer = self
            .get_grpc_stream_trailing_metadata_value("x-echo-trailer")
            .map(|v| String::from_utf8_lossy(&v).into_owned());
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        let (code, message) = self.get_grpc_status();
        let message = message.unwrap_or_default();
        log(&format!(
            "grpc stream_close token={token_id} status={status_code} message={message}"
        ));
        if !self.closed {
            self.to_close = Some(token_id);
        }
        let echoed = self.messages.join(",");
        self.set_http_request_header("x-echo-messages", Some(&echoed));
        if let Some(initial) = self.initial.clone() {
            self.set_http_request_header("x-echo-initial", Some(&initial));
        }
        if let Some(trailer) = self.trailer.clone() {
            self.set_http_request_header("x-echo-trailer", Some(&trailer));
        }
        self.set_http_request_header("x-grpc-status", Some(&code.to_string()));
        self.set_http_request_header("x-grpc-message", Some(&message));
        self.resume_http_request();
    }
}

impl HttpContext for GrpcProbe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(cluster) = self.get_http_request_header("x-grpc-call") {
            return match self.check(&cluster) {
                Ok(_) => Action::Pause,
                Err(status) => {
                    let refusal = format!("{status:?}");
                    self.send_http_response(
                        500,
                        vec![("x-grpc-dispatch", &refusal)],
                        Some(b"dispatch failed"),
                    );
                    Action::Pause
                }
            };
        }
        if let Some(cluster) = self.get_http_request_header("x-grpc-cancel") {
            self.to_cancel = self.check(&cluster).ok();
            return Action::Continue;
        }
        if let Some(cluster) = self.get_http_request_header("x-grpc-stream") {
            return self.open_stream(&cluster);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(token) = self.to_cancel.take() {
            self.cancel_grpc_call(token);
            self.set_http_response_header("x-grpc-cancelled", Some(&token.to_string()));
        }
        if let Some(token) = self.to_close.take() {
            // Envoy keeps a remote-closed stream until the filter closes it; this must not trap.
            self.close_grpc_stream(token);
            self.closed = true;
            self.set_http_response_header("x-grpc-closed", Some(&token.to_string()));
        }
        Action::Continue
    }
}
