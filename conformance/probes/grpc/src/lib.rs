//! gRPC probe (raw ABI v0.2.1 exports, no SDK), so every gRPC callback is seen as the host
//! makes it. The request header `x-probe-mode` says what `on_request_headers` does:
//!
//! - `unary`: calls `conformance.Echo/Unary` on cluster `grpc` with message `hello` and
//!   metadata `x-md: 1`, pauses, and resumes the request when the answer arrives;
//! - `unary-fail`: calls `conformance.Echo/Fail`, which the server refuses with status 7;
//! - `stream`: opens `conformance.Echo/Stream`, sends `m1` and `m2` (the last with
//!   `end_stream`), pauses, and resumes when the stream closes;
//! - `cancel`: opens a stream and cancels it at once;
//! - `errors`: calls the host must refuse (unknown cluster, unknown tokens, sending on a unary
//!   call), observing each status.
//!
//! Each call's callbacks are recorded in order (`initial_metadata(n)`, `message:<text>`,
//! `trailing_metadata(n)`, `close(code)`) and observed as `grpc.<mode>_events` when the call
//! ends, with the metadata values and `proxy_get_status` read in the callbacks.

use std::cell::RefCell;
use std::collections::BTreeMap;

use wasmesh_conformance_probe_support::{self as s, buffer, map, raw, stream};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

struct Call {
    mode: String,
    context: u32,
    events: Vec<String>,
}

thread_local! {
    static CALLS: RefCell<BTreeMap<u32, Call>> = const { RefCell::new(BTreeMap::new()) };
}

const CLUSTER: &str = "grpc";
const SERVICE: &str = "conformance.Echo";

fn call(cluster: &str, method: &str, message: &[u8]) -> (u32, u32) {
    let metadata = s::pairs(&[("x-md", b"1")]);
    let mut token = 0u32;
    // SAFETY: every pointer and length describes a live value; the token is a local.
    let status = unsafe {
        raw::proxy_grpc_call(
            cluster.as_ptr(),
            cluster.len(),
            SERVICE.as_ptr(),
            SERVICE.len(),
            method.as_ptr(),
            method.len(),
            metadata.as_ptr(),
            metadata.len(),
            message.as_ptr(),
            message.len(),
            5000,
            &mut token,
        )
    };
    (status, token)
}

fn open_stream(method: &str) -> (u32, u32) {
    let metadata = s::pairs(&[("x-md", b"1")]);
    let mut token = 0u32;
    // SAFETY: every pointer and length describes a live value; the token is a local.
    let status = unsafe {
        raw::proxy_grpc_stream(
            CLUSTER.as_ptr(),
            CLUSTER.len(),
            SERVICE.as_ptr(),
            SERVICE.len(),
            method.as_ptr(),
            method.len(),
            metadata.as_ptr(),
            metadata.len(),
            &mut token,
        )
    };
    (status, token)
}

fn send(token: u32, message: &[u8], end: bool) -> u32 {
    // SAFETY: the pointer and length describe `message`.
    unsafe { raw::proxy_grpc_send(token, message.as_ptr(), message.len(), u32::from(end)) }
}

fn track(token: u32, mode: &str, context: u32) {
    CALLS.with(|c| {
        c.borrow_mut().insert(
            token,
            Call {
                mode: mode.to_string(),
                context,
                events: Vec::new(),
            },
        )
    });
}

fn record(token: u32, event: String) -> Option<String> {
    CALLS.with(|c| {
        c.borrow_mut().get_mut(&token).map(|call| {
            call.events.push(event);
            call.mode.clone()
        })
    })
}

/// Ends a call: observes its events and resumes the request that waits for it.
fn finish(token: u32) {
    let Some(call) = CALLS.with(|c| c.borrow_mut().remove(&token)) else {
        return;
    };
    s::observe(&format!("grpc.{}_events", call.mode), call.events.join(","));
    // SAFETY: plain integer arguments.
    unsafe {
        if raw::proxy_set_effective_context(call.context) == 0 {
            raw::proxy_continue_stream(stream::HTTP_REQUEST);
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(ctx: u32, _n: u32, _eos: u32) -> u32 {
    let mode = s::request_header("x-probe-mode").unwrap_or_default();
    match mode.as_str() {
        "unary" | "unary-fail" => {
            let method = if mode == "unary" { "Unary" } else { "Fail" };
            let (status, token) = call(CLUSTER, method, b"hello");
            s::observe_status(&format!("grpc.{mode}_call_status"), status);
            if status != 0 {
                return s::CONTINUE;
            }
            track(token, &mode, ctx);
            s::PAUSE
        }
        "stream" => {
            let (status, token) = open_stream("Stream");
            s::observe_status("grpc.stream_open_status", status);
            if status != 0 {
                return s::CONTINUE;
            }
            track(token, &mode, ctx);
            let first = send(token, b"m1", false);
            let second = send(token, b"m2", true);
            s::observe(
                "grpc.stream_send_status",
                format!("{} {}", s::status_name(first), s::status_name(second)),
            );
            s::PAUSE
        }
        "cancel" => {
            let (status, token) = open_stream("Stream");
            s::observe_status("grpc.cancel_open_status", status);
            // SAFETY: plain integer argument.
            s::observe_status("grpc.cancel_status", unsafe {
                raw::proxy_grpc_cancel(token)
            });
            s::observe_status("grpc.send_after_cancel", send(token, b"late", false));
            s::CONTINUE
        }
        "errors" => {
            s::observe_status(
                "grpc.unknown_cluster_status",
                call("no-such-cluster", "Unary", b"x").0,
            );
            const UNKNOWN: u32 = 0x7fff_fff0;
            s::observe_status("grpc.send_unknown_token", send(UNKNOWN, b"x", false));
            // SAFETY: plain integer arguments.
            unsafe {
                s::observe_status("grpc.cancel_unknown_token", raw::proxy_grpc_cancel(UNKNOWN));
                s::observe_status("grpc.close_unknown_token", raw::proxy_grpc_close(UNKNOWN));
            }
            let (status, token) = call(CLUSTER, "Unary", b"x");
            if status == 0 {
                s::observe_status("grpc.send_on_unary_call", send(token, b"x", false));
                // SAFETY: plain integer argument.
                s::observe_status("grpc.close_unary_call", unsafe {
                    raw::proxy_grpc_close(token)
                });
            } else {
                s::observe_status("grpc.send_on_unary_call", status);
            }
            s::CONTINUE
        }
        _ => s::CONTINUE,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_grpc_receive_initial_metadata(_root: u32, token: u32, n: u32) {
    let value = s::value_text(map::GRPC_CALL_INITIAL_METADATA, "x-server-md").unwrap_or_default();
    if let Some(mode) = record(token, format!("initial_metadata({n})")) {
        s::observe(&format!("grpc.{mode}_initial_metadata"), value);
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_grpc_receive(_root: u32, token: u32, size: u32) {
    let message = match s::get_buffer(buffer::GRPC_CALL_MESSAGE, 0, size as usize) {
        (0, Some(m)) => s::show(&m),
        (status, _) => s::status_name(status),
    };
    let Some(mode) = record(token, format!("message:{message}")) else {
        return;
    };
    // A unary call ends with its message.
    if mode == "unary" {
        finish(token);
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_grpc_receive_trailing_metadata(_root: u32, token: u32, n: u32) {
    let value =
        s::value_text(map::GRPC_CALL_TRAILING_METADATA, "x-server-trailer").unwrap_or_default();
    if let Some(mode) = record(token, format!("trailing_metadata({n})")) {
        s::observe(&format!("grpc.{mode}_trailing_metadata"), value);
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_grpc_close(_root: u32, token: u32, code: u32) {
    let (status, status_code, message) = s::get_status();
    let Some(mode) = record(token, format!("close({code})")) else {
        return;
    };
    s::observe(
        &format!("grpc.{mode}_get_status"),
        format!(
            "{} code={status_code} message={}",
            s::status_name(status),
            s::show(&message)
        ),
    );
    if mode == "stream" {
        // The remote end closed; close this side too, as a filter does to release it (hosts
        // differ on whether the stream is still known by then, so the status is not checked).
        // SAFETY: plain integer argument.
        unsafe { raw::proxy_grpc_close(token) };
    }
    finish(token);
}
