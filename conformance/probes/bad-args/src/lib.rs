//! Bad-argument probe (raw ABI v0.2.1 exports, no SDK). On a request it makes calls the host
//! must refuse — unknown enum values, buffers that do not exist in this callback, pointers
//! outside the module's memory — and observes each status (or WASI errno). It also checks that
//! a null pointer with length 0 is accepted as "absent".

use wasmesh_conformance_probe_support::{self as s, buffer, map, raw};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// An address far past the end of the module's linear memory.
const OUT: usize = 0xFFFF_FF00;
const BAD_MAP: u32 = 8;
const BAD_BUFFER: u32 = 9;
const BAD_STREAM: u32 = 9;

fn out<T>() -> *mut T {
    OUT as *mut T
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, _n: u32, _eos: u32) -> u32 {
    let key = "x-conf-in";
    let value = b"v";
    let mut ptr: *mut u8 = std::ptr::null_mut();
    let mut len = 0usize;
    let mut word = 0u32;
    // SAFETY: every call gets either live locals or addresses the host must check and refuse;
    // none of them is dereferenced by this module.
    unsafe {
        let o = |id: &str, status: u32| s::observe_status(id, status);
        let text = "bad-args";
        o(
            "bad.log_level",
            raw::proxy_log(6, text.as_ptr(), text.len()),
        );
        o("bad.log_out_of_memory", raw::proxy_log(2, out(), 64));
        o("bad.log_null_empty", raw::proxy_log(2, std::ptr::null(), 0));

        o(
            "bad.map_get_pairs",
            raw::proxy_get_header_map_pairs(BAD_MAP, &mut ptr, &mut len),
        );
        o(
            "bad.map_get_size",
            raw::proxy_get_header_map_size(BAD_MAP, &mut len),
        );
        let empty = s::pairs(&[]);
        o(
            "bad.map_set_pairs",
            raw::proxy_set_header_map_pairs(BAD_MAP, empty.as_ptr(), empty.len()),
        );
        o(
            "bad.map_get_value",
            raw::proxy_get_header_map_value(BAD_MAP, key.as_ptr(), key.len(), &mut ptr, &mut len),
        );
        o(
            "bad.map_add_value",
            raw::proxy_add_header_map_value(BAD_MAP, key.as_ptr(), key.len(), value.as_ptr(), 1),
        );
        o(
            "bad.map_replace_value",
            raw::proxy_replace_header_map_value(
                BAD_MAP,
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                1,
            ),
        );
        o(
            "bad.map_remove_value",
            raw::proxy_remove_header_map_value(BAD_MAP, key.as_ptr(), key.len()),
        );
        o(
            "bad.map_get_value_out_of_memory",
            raw::proxy_get_header_map_value(
                map::HTTP_REQUEST_HEADERS,
                key.as_ptr(),
                key.len(),
                out(),
                out(),
            ),
        );
        o(
            "bad.map_key_out_of_memory",
            raw::proxy_get_header_map_value(
                map::HTTP_REQUEST_HEADERS,
                out(),
                16,
                &mut ptr,
                &mut len,
            ),
        );

        o(
            "bad.buffer_get",
            raw::proxy_get_buffer_bytes(BAD_BUFFER, 0, 10, &mut ptr, &mut len),
        );
        o(
            "bad.buffer_status",
            raw::proxy_get_buffer_status(BAD_BUFFER, &mut len, &mut word),
        );
        o(
            "bad.buffer_set",
            raw::proxy_set_buffer_bytes(BAD_BUFFER, 0, 0, value.as_ptr(), 1),
        );
        o(
            "bad.buffer_get_unavailable",
            raw::proxy_get_buffer_bytes(buffer::HTTP_CALL_RESPONSE_BODY, 0, 10, &mut ptr, &mut len),
        );
        o(
            "bad.buffer_status_unavailable",
            raw::proxy_get_buffer_status(buffer::GRPC_CALL_MESSAGE, &mut len, &mut word),
        );

        o(
            "bad.continue_stream",
            raw::proxy_continue_stream(BAD_STREAM),
        );
        o("bad.close_stream", raw::proxy_close_stream(BAD_STREAM));

        o(
            "bad.property_path_out_of_memory",
            raw::proxy_get_property(out(), 16, &mut ptr, &mut len),
        );
        let path = "plugin_name";
        o(
            "bad.property_return_out_of_memory",
            raw::proxy_get_property(path.as_ptr(), path.len(), out(), out()),
        );
        o(
            "bad.shared_data_key_out_of_memory",
            raw::proxy_get_shared_data(out(), 8, &mut ptr, &mut len, &mut word),
        );
        o(
            "bad.shared_data_value_out_of_memory",
            raw::proxy_set_shared_data(key.as_ptr(), key.len(), out(), 8, 0),
        );
        o(
            "bad.http_call_upstream_out_of_memory",
            raw::proxy_http_call(
                out(),
                8,
                empty.as_ptr(),
                empty.len(),
                std::ptr::null(),
                0,
                std::ptr::null(),
                0,
                1000,
                &mut word,
            ),
        );
        o(
            "bad.foreign_name_out_of_memory",
            raw::proxy_call_foreign_function(out(), 8, std::ptr::null(), 0, &mut ptr, &mut len),
        );

        let iov: [u32; 2] = [OUT as u32, 8];
        let mut written = 0usize;
        s::observe(
            "bad.fd_write_out_of_memory",
            s::errno_name(raw::fd_write(1, iov.as_ptr(), 1, &mut written)),
        );
        s::observe(
            "bad.clock_out_of_memory",
            s::errno_name(raw::clock_time_get(0, 1, out())),
        );
        s::observe(
            "bad.random_out_of_memory",
            s::errno_name(raw::random_get(out(), 16)),
        );
    }
    s::CONTINUE
}
