//! ABI v0.1.0 probe (raw exports, no SDK): declares `proxy_abi_version_0_1_0` and uses what
//! only that version has.
//!
//! - `on_configure` reads its configuration with `proxy_get_configuration` (0.1.0 has no
//!   configuration buffers) and asks for a tick every 20 ms;
//! - the header callbacks take two arguments (no `end_of_stream` in 0.1.0) and observe them;
//! - `x-probe-mode: pause-request` / `pause-response` pause that phase; the next tick switches
//!   to the stream, adds `x-v010-resumed` to the paused headers and resumes with
//!   `proxy_continue_request` / `proxy_continue_response`;
//! - `x-probe-mode: reroute` sets `x-route: b` and calls `proxy_clear_route_cache`.

use std::cell::RefCell;
use std::collections::BTreeMap;

use wasmesh_conformance_probe_support::{self as s, map, raw};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_1_0() {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Request,
    Response,
}

#[derive(Default)]
struct State {
    modes: BTreeMap<u32, String>,
    paused: BTreeMap<u32, Phase>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

fn count(map_type: u32) -> usize {
    s::parse_pairs(&s::get_pairs(map_type).1.unwrap_or_default())
        .map(|p| p.len())
        .unwrap_or(0)
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(_ctx: u32, _size: u32) -> u32 {
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(_ctx: u32, _size: u32) -> u32 {
    let mut ptr: *mut u8 = std::ptr::null_mut();
    let mut len = 0usize;
    // SAFETY: out-pointers are locals; on OK the host allocated `len` bytes through this
    // module's allocator, which this probe then owns.
    let (status, config) = unsafe {
        let status = raw::v0_1_0::proxy_get_configuration(&mut ptr, &mut len);
        let config = if status == 0 && !ptr.is_null() && len > 0 {
            Vec::from_raw_parts(ptr, len, len)
        } else {
            Vec::new()
        };
        (status, config)
    };
    s::observe_result("v010.get_configuration", (status, Some(config)));
    // SAFETY: a plain integer argument.
    unsafe { raw::proxy_set_tick_period_milliseconds(20) };
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(ctx: u32, n: u32) -> u32 {
    s::observe(
        "v010.request_headers_args",
        format!("n={n} pairs={}", count(map::HTTP_REQUEST_HEADERS)),
    );
    let mode = s::request_header("x-probe-mode").unwrap_or_default();
    with(|s| s.modes.insert(ctx, mode.clone()));
    match mode.as_str() {
        "pause-request" => {
            with(|s| s.paused.insert(ctx, Phase::Request));
            s::PAUSE
        }
        "reroute" => {
            s::replace_value(map::HTTP_REQUEST_HEADERS, "x-route", b"b");
            // SAFETY: no arguments.
            let status = unsafe { raw::v0_1_0::proxy_clear_route_cache() };
            s::observe_status("v010.clear_route_cache_status", status);
            s::CONTINUE
        }
        _ => s::CONTINUE,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_headers(ctx: u32, n: u32) -> u32 {
    s::observe(
        "v010.response_headers_args",
        format!("n={n} pairs={}", count(map::HTTP_RESPONSE_HEADERS)),
    );
    if with(|s| s.modes.get(&ctx).map(String::as_str) == Some("pause-response")) {
        with(|s| s.paused.insert(ctx, Phase::Response));
        return s::PAUSE;
    }
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_tick(_root: u32) {
    let paused: Vec<(u32, Phase)> = with(|s| std::mem::take(&mut s.paused).into_iter().collect());
    for (ctx, phase) in paused {
        // SAFETY: plain integer arguments.
        unsafe {
            if raw::proxy_set_effective_context(ctx) != 0 {
                continue;
            }
            match phase {
                Phase::Request => {
                    s::add_value(map::HTTP_REQUEST_HEADERS, "x-v010-resumed", b"request");
                    s::observe_status(
                        "v010.continue_request_status",
                        raw::v0_1_0::proxy_continue_request(),
                    );
                }
                Phase::Response => {
                    s::add_value(map::HTTP_RESPONSE_HEADERS, "x-v010-resumed", b"response");
                    s::observe_status(
                        "v010.continue_response_status",
                        raw::v0_1_0::proxy_continue_response(),
                    );
                }
            }
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_delete(ctx: u32) {
    with(|s| {
        s.modes.remove(&ctx);
        s.paused.remove(&ctx);
    });
}
