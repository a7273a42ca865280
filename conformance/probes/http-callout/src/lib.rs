//! HTTP callout probe, written with the published `proxy-wasm` SDK as filter authors do. The
//! request header `x-probe-mode` says what it does from `on_http_request_headers`:
//!
//! - `ok`: POSTs `ping` to cluster `callout` (`/callout?x=1`, `x-callout-req: 1`), pauses, and
//!   in `on_http_call_response` observes the answer — header count, `:status`, a header, the
//!   body, trailer count and a trailer (maps `HTTP_CALL_RESPONSE_HEADERS`/`_TRAILERS`, buffer
//!   `HTTP_CALL_RESPONSE_BODY`) — then adds `x-callout-status` to the paused request and
//!   resumes it;
//! - `deny`: the same call, then answers the paused request itself (403);
//! - `dead`: calls cluster `callout-dead` (nothing listens) and observes the failed answer;
//! - `timeout`: calls cluster `callout-hang` (never answers) with a 300 ms timeout;
//! - `unknown-cluster`, `missing-path`: raw calls the host must refuse, observing the status;
//! - `pause-response`: calls `callout` from `on_http_response_headers`, pauses the response,
//!   and adds `x-callout-resumed: yes` to it before resuming it.

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
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
        Some(Box::new(Caller {
            mode: String::new(),
        }))
    }
}

struct Caller {
    mode: String,
}

/// A raw `proxy_http_call` with `headers`, observing only its status.
fn raw_call(id: &str, upstream: &str, headers: &[(&str, &[u8])]) {
    let headers = s::pairs(headers);
    let mut token = 0u32;
    // SAFETY: every pointer and length describes a live local; the token is a local.
    let status = unsafe {
        s::raw::proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            headers.as_ptr(),
            headers.len(),
            std::ptr::null(),
            0,
            std::ptr::null(),
            0,
            1000,
            &mut token,
        )
    };
    s::observe_status(id, status);
}

impl Context for Caller {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        if self.mode == "pause-response" {
            self.set_http_response_header("x-callout-resumed", Some("yes"));
            self.resume_http_response();
            return;
        }
        if self.mode == "dead" || self.mode == "timeout" {
            s::observe(&format!("callout.{}_num_headers", self.mode), num_headers);
            self.resume_http_request();
            return;
        }
        let pairs = self.get_http_call_response_headers_bytes();
        s::observe(
            "callout.response_num_headers",
            format!("arg={num_headers} pairs={}", pairs.len()),
        );
        s::observe(
            "callout.response_status",
            self.get_http_call_response_header(":status")
                .unwrap_or_default(),
        );
        s::observe(
            "callout.response_header",
            self.get_http_call_response_header("x-callout-resp")
                .unwrap_or_default(),
        );
        s::observe("callout.response_body_size", body_size);
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        s::observe_bytes("callout.response_body", &body);
        s::observe("callout.response_num_trailers", num_trailers);
        s::observe(
            "callout.response_trailer",
            self.get_http_call_response_trailer("x-callout-trailer")
                .unwrap_or_default(),
        );
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_default();
        if self.mode == "deny" {
            self.send_http_response(
                403,
                vec![("x-local", "callout")],
                Some(b"denied-after-callout"),
            );
            return;
        }
        self.set_http_request_header("x-callout-status", Some(&status));
        self.resume_http_request();
    }
}

impl HttpContext for Caller {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.mode = self
            .get_http_request_header("x-probe-mode")
            .unwrap_or_default();
        let (cluster, timeout) = match self.mode.as_str() {
            "ok" | "deny" => ("callout", Duration::from_secs(5)),
            "dead" => ("callout-dead", Duration::from_secs(5)),
            "timeout" => ("callout-hang", Duration::from_millis(300)),
            "unknown-cluster" => {
                raw_call(
                    "callout.unknown_cluster_status",
                    "no-such-cluster",
                    &[(":method", b"GET"), (":path", b"/"), (":authority", b"x")],
                );
                return Action::Continue;
            }
            "missing-path" => {
                raw_call(
                    "callout.missing_path_status",
                    "callout",
                    &[(":method", b"GET"), (":authority", b"x")],
                );
                return Action::Continue;
            }
            _ => return Action::Continue,
        };
        self.call(cluster, timeout)
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if self.mode == "pause-response" {
            return self.call("callout", Duration::from_secs(5));
        }
        Action::Continue
    }
}

impl Caller {
    /// Dispatches the callout and pauses, or continues if the host refused it.
    fn call(&self, cluster: &str, timeout: Duration) -> Action {
        match self.dispatch_http_call(
            cluster,
            vec![
                (":method", "POST"),
                (":path", "/callout?x=1"),
                (":authority", "callout.local"),
                ("x-callout-req", "1"),
            ],
            Some(b"ping"),
            vec![],
            timeout,
        ) {
            Ok(_) => {
                s::observe(&format!("callout.{}_dispatch", self.mode), "OK");
                Action::Pause
            }
            Err(status) => {
                s::observe(
                    &format!("callout.{}_dispatch", self.mode),
                    format!("{status:?}"),
                );
                Action::Continue
            }
        }
    }
}
