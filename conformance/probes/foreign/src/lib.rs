//! Foreign-function probe (raw ABI v0.2.1 exports, no SDK). On a request it calls the host's
//! foreign functions — `sha256` (wasmesh's), `declare_property` (Envoy's), one that does not
//! exist — and, with `x-probe-mode: reroute`, sets `x-route: b` and calls `clear_route_cache`
//! (Envoy's way to re-route in ABI 0.2.x), so the request goes where the new header leads.
//! It exports `proxy_on_foreign_function` and observes any call of it.

use wasmesh_conformance_probe_support::{self as s, buffer, map};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, _n: u32, _eos: u32) -> u32 {
    s::observe_result("foreign.sha256", s::call_foreign("sha256", b"abc"));
    s::observe_result(
        "foreign.unknown",
        s::call_foreign("conf-no-such-function", b""),
    );
    s::observe_result(
        "foreign.declare_property",
        s::call_foreign("declare_property", b""),
    );
    if s::request_header("x-probe-mode").as_deref() == Some("reroute") {
        s::replace_value(map::HTTP_REQUEST_HEADERS, "x-route", b"b");
        s::observe_result(
            "foreign.clear_route_cache",
            s::call_foreign("clear_route_cache", b""),
        );
    }
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_foreign_function(_root: u32, function: u32, size: u32) {
    let args = s::get_buffer(buffer::FOREIGN_FUNCTION_ARGUMENTS, 0, size as usize);
    s::observe(
        "foreign.on_foreign_function",
        format!("function={function} size={size}"),
    );
    s::observe_result("foreign.on_foreign_function_args", args);
}
