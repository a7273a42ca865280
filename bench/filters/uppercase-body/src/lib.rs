//! Benchmark filter for `bench/run`'s body-rewriting scenario: the smallest filter that rewrites
//! a response body. It buffers the whole body (`Pause` until the end of the stream), then
//! replaces it with its upper-cased copy. It drops `content-length` first, as any filter that may
//! change a body's length must, so every proxy sends the rewritten body the same way (chunked).
//! The same `.wasm` (wasm32-wasip1) runs in wasmesh and in Envoy (V8).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(UppercaseBody))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct UppercaseBody;

impl Context for UppercaseBody {}

impl HttpContext for UppercaseBody {
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("content-length", None);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_response_body(0, body_size) {
            self.set_http_response_body(0, body_size, &body.to_ascii_uppercase());
        }
        Action::Continue
    }
}
