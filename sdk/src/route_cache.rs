//! Asking the host to choose the request's route again, after the filter changed what route
//! matching looks at (a header the route table matches on, the path).
//!
//! ```no_run
//! use wasmesh_sdk::{headers, route_cache};
//!
//! headers::request().set("x-route-variant", "canary");
//! route_cache::clear();
//! ```
//!
//! The proxy-wasm ABI 0.2 has no host function for it. ABI 0.1.0 had
//! `env.proxy_clear_route_cache`, but Envoy links that import only for modules that declare
//! 0.1.0, so a 0.2 module importing it does not load there. What Envoy offers a 0.2 module is
//! the foreign function `clear_route_cache` (`proxy_call_foreign_function`), and wasmesh
//! answers the same name, so [`clear`] works unchanged on both. Envoy and wasmesh also clear
//! the route cache by themselves whenever a Wasm filter changes the request headers (add,
//! replace, remove or set them all); calling [`clear`] anyway costs little and says what the
//! filter means on hosts that do not.

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    // Declared here rather than called through `proxy_wasm::hostcalls::call_foreign_function`,
    // which panics (traps the filter) on statuses it does not expect, such as UNIMPLEMENTED
    // from a host without foreign functions.
    fn proxy_call_foreign_function(
        name_data: *const u8,
        name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
}

/// The foreign function's name, in Envoy and wasmesh alike.
const CLEAR_ROUTE_CACHE: &str = "clear_route_cache";

/// Asks the host to match the current request's route again before it is forwarded; call it
/// from a request callback after editing the request. Answers whether the host knew the
/// function (`false` on a host without it; the request is then routed as first matched).
pub fn clear() -> bool {
    let mut results: *mut u8 = std::ptr::null_mut();
    let mut results_size: usize = 0;
    // SAFETY: the name is live for the call, there are no arguments, and the two out-pointers
    // point at the locals above, which the host writes.
    let status = unsafe {
        proxy_call_foreign_function(
            CLEAR_ROUTE_CACHE.as_ptr(),
            CLEAR_ROUTE_CACHE.len(),
            std::ptr::null(),
            0,
            &mut results,
            &mut results_size,
        )
    };
    if status == 0 && !results.is_null() {
        // The function answers nothing, but a host may still hand back a buffer, which it
        // allocated with `proxy_on_memory_allocate` (the SDK's global allocator): free it.
        // SAFETY: allocated by the SDK's allocator as `results_size` bytes, now ours.
        drop(unsafe { Vec::from_raw_parts(results, results_size, results_size) });
    }
    status == 0
}
