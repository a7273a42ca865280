//! Local-response probe, written with the published `proxy-wasm` SDK as filter authors do.
//! The request header `x-probe-mode` says where it answers itself:
//!
//! - `headers`: from `on_http_request_headers`, 403 with `x-local: 1` and a body;
//! - `grpc`: from `on_http_request_headers`, a gRPC answer with status PERMISSION_DENIED (7);
//! - `null-args`: from `on_http_request_headers`, 204 through the raw call with every pointer
//!   null and every length 0 (the ABI's "absent"), observing the status;
//! - `body`: from the last `on_http_request_body`, 413;
//! - `response-headers`: from `on_http_response_headers`, 502 in place of the upstream's answer;
//! - `close-stream`: no answer: closes the request stream (`proxy_close_stream(HTTP_REQUEST)`,
//!   which Envoy turns into a stream reset), observing the status, and continues.
//!
//! What the client (or the host's stream) receives is what the suite checks.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, GrpcStatusCode, LogLevel};
use wasmesh_conformance_probe_support as s;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Answer {
            mode: String::new(),
        }))
    }
}

struct Answer {
    mode: String,
}

impl Context for Answer {}

impl HttpContext for Answer {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.mode = self
            .get_http_request_header("x-probe-mode")
            .unwrap_or_default();
        match self.mode.as_str() {
            "headers" => {
                self.send_http_response(403, vec![("x-local", "1")], Some(b"denied-by-probe"));
                Action::Pause
            }
            "grpc" => {
                self.send_grpc_response(
                    GrpcStatusCode::PermissionDenied,
                    Some("nope"),
                    vec![("x-local", b"grpc")],
                );
                Action::Pause
            }
            "null-args" => {
                // SAFETY: null pointers with zero lengths are the ABI's "absent".
                let status = unsafe {
                    s::raw::proxy_send_local_response(
                        204,
                        std::ptr::null(),
                        0,
                        std::ptr::null(),
                        0,
                        std::ptr::null(),
                        0,
                        -1,
                    )
                };
                s::observe_status("local.null_args_status", status);
                Action::Pause
            }
            "close-stream" => {
                // SAFETY: a plain integer argument.
                let status = unsafe { s::raw::proxy_close_stream(s::stream::HTTP_REQUEST) };
                s::observe_status("local.close_stream_status", status);
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, _: usize, end_of_stream: bool) -> Action {
        if self.mode == "body" && end_of_stream {
            self.send_http_response(413, vec![("x-local", "body")], Some(b"too-much"));
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if self.mode == "response-headers" {
            self.send_http_response(
                502,
                vec![("x-local", "response")],
                Some(b"replaced-response"),
            );
            return Action::Pause;
        }
        Action::Continue
    }
}
