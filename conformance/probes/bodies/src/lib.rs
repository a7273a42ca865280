//! Body probe (raw ABI v0.2.1 exports, no SDK).
//!
//! Request: it pauses every body callback before the end (asking the host to buffer), so at
//! the end it sees the whole body; it reads it whole and in a slice, then edits it at offsets
//! (replace the first 5 bytes, prepend, append), which the upstream receives. The first body
//! callback's arguments are observed too, so the suite can feed the body in two chunks.
//! Response: it buffers the same way and replaces the whole body, which the client receives.

use std::cell::Cell;

use wasmesh_conformance_probe_support::{self as s, buffer};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

thread_local! {
    static FIRST_REQUEST_CALL: Cell<bool> = const { Cell::new(true) };
}

fn body_text(ty: u32) -> String {
    match s::get_buffer(ty, 0, usize::MAX >> 1) {
        (0, Some(b)) => s::show(&b),
        (status, _) => s::status_name(status),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, _n: u32, eos: u32) -> u32 {
    FIRST_REQUEST_CALL.with(|f| f.set(true));
    s::observe("bodies.request_headers_eos", eos);
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_body(_ctx: u32, size: u32, eos: u32) -> u32 {
    if FIRST_REQUEST_CALL.with(|f| f.replace(false)) {
        s::observe(
            "bodies.request_first_call",
            format!("size={size} eos={eos}"),
        );
    }
    if eos == 0 {
        return s::PAUSE;
    }
    const B: u32 = buffer::HTTP_REQUEST_BODY;
    s::observe("bodies.request_final_size", size);
    let (status, len) = s::buffer_status(B);
    s::observe(
        "bodies.request_buffer_status",
        format!("{} {len}", s::status_name(status)),
    );
    s::observe("bodies.request_body", body_text(B));
    s::observe_result("bodies.request_slice", s::get_buffer(B, 6, 5));
    let replaced = s::set_buffer(B, 0, 5, b"HELLO");
    let prepended = s::set_buffer(B, 0, 0, b"<<");
    let end = s::buffer_status(B).1;
    let appended = s::set_buffer(B, end, 0, b">>");
    s::observe(
        "bodies.request_edit_status",
        format!(
            "{} {} {}",
            s::status_name(replaced),
            s::status_name(prepended),
            s::status_name(appended)
        ),
    );
    s::observe("bodies.request_edited", body_text(B));
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_headers(_ctx: u32, _n: u32, eos: u32) -> u32 {
    s::observe("bodies.response_headers_eos", eos);
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_body(_ctx: u32, size: u32, eos: u32) -> u32 {
    s::observe("bodies.response_call", format!("size={size} eos={eos}"));
    if eos == 0 {
        return s::PAUSE;
    }
    const B: u32 = buffer::HTTP_RESPONSE_BODY;
    s::observe("bodies.response_final_size", size);
    s::observe("bodies.response_body", body_text(B));
    let status = s::set_buffer(B, 0, size as usize, b"replaced-body");
    s::observe_status("bodies.response_replace_status", status);
    s::observe("bodies.response_replaced", body_text(B));
    s::CONTINUE
}
