//! Trailers probe (raw ABI v0.2.1 exports, no SDK).
//!
//! With `x-probe-mode: trailers` the request and response carry trailers (`x-req-trailer: t1`,
//! `x-resp-trailer: r1`): it reads them, adds a request trailer and replaces the response one.
//! With `x-probe-mode: add-trailers` neither has any: it adds one to each from the last body
//! callback (`end_of_stream` true), which the spec allows.

use std::cell::RefCell;
use std::collections::BTreeMap;

use wasmesh_conformance_probe_support::{self as s, map};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

thread_local! {
    static ADDS: RefCell<BTreeMap<u32, bool>> = const { RefCell::new(BTreeMap::new()) };
}

fn adds(ctx: u32) -> bool {
    ADDS.with(|m| m.borrow().get(&ctx).copied().unwrap_or(false))
}

fn count(map_type: u32) -> usize {
    s::parse_pairs(&s::get_pairs(map_type).1.unwrap_or_default())
        .map(|p| p.len())
        .unwrap_or(0)
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(ctx: u32, _n: u32, _eos: u32) -> u32 {
    let add = s::request_header("x-probe-mode").as_deref() == Some("add-trailers");
    ADDS.with(|m| m.borrow_mut().insert(ctx, add));
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_body(ctx: u32, _size: u32, eos: u32) -> u32 {
    if eos != 0 && adds(ctx) {
        s::observe_status(
            "trailers.request_add_in_body_status",
            s::add_value(map::HTTP_REQUEST_TRAILERS, "x-late-trailer", b"late"),
        );
    }
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_trailers(_ctx: u32, n: u32) -> u32 {
    const T: u32 = map::HTTP_REQUEST_TRAILERS;
    s::observe(
        "trailers.request_num",
        format!("arg={n} pairs={}", count(T)),
    );
    s::observe_result("trailers.request_value", s::get_value(T, "x-req-trailer"));
    s::observe_status(
        "trailers.request_add_status",
        s::add_value(T, "x-added-trailer", b"a"),
    );
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_body(ctx: u32, _size: u32, eos: u32) -> u32 {
    if eos != 0 && adds(ctx) {
        s::observe_status(
            "trailers.response_add_in_body_status",
            s::add_value(map::HTTP_RESPONSE_TRAILERS, "x-late-resp-trailer", b"late"),
        );
    }
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_trailers(_ctx: u32, n: u32) -> u32 {
    const T: u32 = map::HTTP_RESPONSE_TRAILERS;
    s::observe(
        "trailers.response_num",
        format!("arg={n} pairs={}", count(T)),
    );
    s::observe_result("trailers.response_value", s::get_value(T, "x-resp-trailer"));
    s::observe_status(
        "trailers.response_replace_status",
        s::replace_value(T, "x-resp-trailer", b"r2"),
    );
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_delete(ctx: u32) {
    ADDS.with(|m| m.borrow_mut().remove(&ctx));
}
